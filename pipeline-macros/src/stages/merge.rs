//! `merge(input, input, .., policy = .., on_end = .., name = ..)`: a first stage that merges
//! several inputs, each a chain that starts with a source (`source(a) -> pipe(f)`), into one
//! stream.
//!
//! `policy` is `as_available` (the default), `round_robin`, `weighted([w, ..], seed = s)`
//! (optionally `rank = r`), `custom(chooser)`, or any `MergePolicy` expression; `on_end` is
//! `stop`, `continue` or `restart`, or any `OnEnd`. Each input after the first goes through a
//! guard whose error names the input and the merge when it produces another type.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Expr;

use super::structure::{ident, same_type_trait, written};
use crate::checked::{CheckedChain, CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::{expand_chain, rt, stage_var};
use crate::option_values::{OptionSpec, OptionValues, ValueType};

pub(crate) static MERGE: KindDescriptor = KindDescriptor {
    name: "merge",
    place: Place::First,
    modifiers: &[],
    // The builder method, called on `PipelineBuilder::new()` with the inputs.
    forms: &[Form::plain("merge")],
    positional: Positional::Pieces,
    options: OPTIONS,
    plan,
};

/// The options, in the order their setters are called: `policy` and `on_end` have words of
/// their own, which the kind reads (see [`policy_tokens`] and [`on_end_tokens`]).
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("policy", ValueType::Expr, "round_robin", None),
    OptionSpec::new("on_end", ValueType::Expr, "stop", None),
    OptionSpec::new("name", ValueType::Expr, "\"mix\"", Some("name")),
];

fn plan(checked: CheckedArgs<'_>, checks: &mut dyn Checks) -> Option<CheckedStage> {
    let CheckedArgs {
        stage,
        number,
        form,
        options,
        ..
    } = checked;
    if !stage.has_parens {
        checks.error(
            stage.args_span,
            "`merge` needs its inputs: `merge(source(a), source(b) -> pipe(f))`".to_owned(),
        );
        return None;
    }
    let mut inputs = Vec::new();
    for piece in &stage.pieces {
        let within = format!("input {} of the merge", inputs.len() + 1);
        let Some(chain) = checks.chain(piece.stream(), true, &within, piece.span) else {
            continue;
        };
        inputs.push(MergeInput {
            label: format!("{within} (`{}`)", written(&piece.stream())),
            span: piece.span,
            last: piece.last_span(),
            chain,
        });
    }
    if inputs.is_empty() {
        checks.error(
            stage.args_span,
            "`merge` needs at least one input: `merge(source(a), source(b))`".to_owned(),
        );
        return None;
    }
    let policy = options
        .get("policy")
        .map(|given| policy_tokens(given.span, &given.value, inputs.len(), checks));
    let on_end = options
        .get("on_end")
        .map(|given| on_end_tokens(given.span, &given.value));
    Some(CheckedStage {
        label: format!("stage {number} `merge`"),
        stage: Box::new(CheckedMerge {
            method: form.method,
            inputs,
            policy,
            on_end,
            options,
            span: stage.name.span(),
        }),
    })
}

/// One checked input.
struct MergeInput {
    label: String,
    span: Span,
    /// Span of the input's last token.
    last: Span,
    chain: CheckedChain,
}

/// `MergePolicy::..(..)` for the policy as written.
fn policy_tokens(span: Span, expr: &Expr, inputs: usize, checks: &mut dyn Checks) -> TokenStream {
    let rt = rt();
    let word = |e: &Expr| match e {
        Expr::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            Some(p.path.segments[0].ident.to_string())
        }
        _ => None,
    };
    match expr {
        Expr::Path(_) => match word(expr).as_deref() {
            Some("as_available") => quote_spanned!(span=> #rt::MergePolicy::as_available()),
            Some("round_robin") => quote_spanned!(span=> #rt::MergePolicy::round_robin()),
            _ => quote!(#expr),
        },
        Expr::Call(call) if word(&call.func).as_deref() == Some("weighted") => {
            let mut weights = None;
            let mut seed = None;
            let mut rank = None;
            for arg in &call.args {
                match arg {
                    Expr::Assign(a) if word(&a.left).as_deref() == Some("seed") => {
                        seed = Some(a.right.clone());
                    }
                    Expr::Assign(a) if word(&a.left).as_deref() == Some("rank") => {
                        rank = Some(a.right.clone());
                    }
                    Expr::Assign(a) => checks.push(syn::Error::new_spanned(
                        &a.left,
                        "`weighted` takes the weights, `seed = ..` and `rank = ..`",
                    )),
                    other if weights.is_none() => weights = Some(other.clone()),
                    other => checks.push(syn::Error::new_spanned(
                        other,
                        "`weighted` takes one list of weights: `weighted([0.7, 0.3], seed = 7)`",
                    )),
                }
            }
            let Some(weights) = weights else {
                checks.push(syn::Error::new_spanned(
                    call,
                    "`weighted` needs the weights, one per input: `weighted([0.7, 0.3], seed = 7)`",
                ));
                return quote!(#rt::MergePolicy::as_available());
            };
            if let Expr::Array(list) = &weights {
                if list.elems.len() != inputs {
                    checks.push(syn::Error::new_spanned(
                        &weights,
                        format!(
                            "{} weights for {inputs} inputs: give one weight per input of the merge",
                            list.elems.len()
                        ),
                    ));
                }
                for w in &list.elems {
                    if let Expr::Unary(_) = w {
                        checks.push(syn::Error::new_spanned(w, "a weight must be positive"));
                    }
                }
            }
            let seed = match seed {
                Some(seed) => quote!(#seed),
                None => {
                    checks.push(syn::Error::new_spanned(
                        call,
                        "`weighted` needs a seed, so that the mix is the same on every run: \
                         `weighted([0.7, 0.3], seed = 7)`",
                    ));
                    quote!(0)
                }
            };
            let rank = rank.map(|r| quote!(.rank(#r)));
            quote_spanned!(span=> #rt::MergePolicy::weighted(#weights, #seed) #rank)
        }
        Expr::Call(call) if word(&call.func).as_deref() == Some("custom") => {
            let args = &call.args;
            quote_spanned!(span=> #rt::MergePolicy::custom(#args))
        }
        other => quote!(#other),
    }
}

/// `OnEnd::..` for the rule as written.
fn on_end_tokens(span: Span, expr: &Expr) -> TokenStream {
    let rt = rt();
    match expr {
        Expr::Continue(_) => quote_spanned!(span=> #rt::OnEnd::Continue),
        Expr::Path(p) if p.path.is_ident("stop") => quote_spanned!(span=> #rt::OnEnd::Stop),
        Expr::Path(p) if p.path.is_ident("restart") => {
            quote_spanned!(span=> #rt::OnEnd::Restart)
        }
        other => quote!(#other),
    }
}

/// A checked `merge`.
struct CheckedMerge {
    method: &'static str,
    inputs: Vec<MergeInput>,
    policy: Option<TokenStream>,
    on_end: Option<TokenStream>,
    /// The options with setters (`name`).
    options: OptionValues,
    /// Span of the stage name.
    span: Span,
}

impl ExpandStage for CheckedMerge {
    fn expand(&self, _cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let mut inputs = Vec::new();
        let first_label = &self.inputs[0].label;
        for (i, input) in self.inputs.iter().enumerate() {
            let source = input.chain.source.iter();
            let body = expand_chain("", source.chain(&input.chain.stages));
            // A missing source (an error says so) stands in, so the stages are still checked.
            let stand_in = input
                .chain
                .source
                .is_none()
                .then(|| quote!(let #stage = #rt::missing_source();));
            let var = ident(&format!("__pipeline_input_{i}"), Span::mixed_site());
            let built = quote! { let #var = { #stand_in #body #stage }; };
            if i == 0 {
                inputs.push((var.clone(), built));
                continue;
            }
            let first = ident("__pipeline_input_0", Span::mixed_site());
            let tr = ident(&format!("__PipelineMergeInput{i}"), input.span);
            let guard = ident(&format!("__pipeline_merge_input_{i}"), input.span);
            let check = same_type_trait(
                &tr,
                &format!(
                    "{} produces `{{Self}}`, but {first_label} produces `{{A}}`",
                    input.label
                ),
                "this input produces `{Self}`, not `{A}`",
            );
            // The input as the guard's argument, spanned over the input's tokens, so that the
            // error points at the input.
            let mut arg =
                proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, quote!(#var));
            arg.set_span(input.last);
            let path = quote_spanned! {input.span=> ::pipeline_runtime::__private::stage_input };
            let call = quote_spanned! {input.span=> #guard(&#first, #path #arg) };
            let built = quote! {
                #built
                #check
                fn #guard<T, X: #tr<T>>(
                    _first: &#rt::StageBuilder<T>,
                    input: #rt::StageBuilder<X>,
                ) -> #rt::StageBuilder<T> {
                    <X as #tr<T>>::__cast(input)
                }
                let #var = #call;
            };
            inputs.push((var, built));
        }
        let (vars, builds): (Vec<_>, Vec<_>) = inputs.into_iter().unzip();
        let method = ident(self.method, self.span);
        let policy = self.policy.as_ref().map(|p| quote!(.policy(#p)));
        let on_end = self.on_end.as_ref().map(|e| quote!(.on_end(#e)));
        let setters = self.options.setters();
        quote! {
            let #stage = {
                #(#builds)*
                #rt::PipelineBuilder::new().#method([#(#vars),*]) #policy #on_end #setters
            };
        }
    }
}
