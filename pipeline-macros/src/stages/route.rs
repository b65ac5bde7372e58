//! `route(router, { pattern => chain, .. })`: a stage that sends each item to the branch whose
//! pattern matches what `router(&item)` returns, and joins the branches again;
//! `route(batched router, { .. })` routes each element of each batch.
//!
//! The patterns are those of a `match` on the router's value (an enum's variants, literals,
//! `_`), so rustc checks that every value has a branch. Each branch is a chain of stages that
//! starts from the routed items (`pipe(decode) -> pipe(fix)`). Each branch after the first
//! goes through a guard whose error names the branch and the route when it produces another
//! type than the first.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;

use super::structure::{ident, same_type_trait, split_arm, written};
use crate::checked::{CheckedChain, CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{CheckedArgs, Checks, Form, KindDescriptor, Modifier, Place, Positional};
use crate::expand::{expand_chain, rt, stage_var};
use crate::syntax::Piece;

pub(crate) static ROUTE: KindDescriptor = KindDescriptor {
    name: "route",
    place: Place::Between,
    modifiers: &[Modifier {
        word: "batched",
        hint: " (`batched` applies to `route`)",
    }],
    // The builder methods: `route(router)`, or with `batched`, `route_batched(router)`.
    forms: &[
        Form::plain("route"),
        Form {
            modifiers: &["batched"],
            method: "route_batched",
            alias: false,
            bound: None,
        },
    ],
    positional: Positional::Pieces,
    options: &[],
    plan,
};

const USAGE: &str = "`route(router, { pattern => pipe(f), .. })`";

fn plan(checked: CheckedArgs<'_>, checks: &mut dyn Checks) -> Option<CheckedStage> {
    let CheckedArgs {
        stage,
        number,
        form,
        ..
    } = checked;
    if !stage.has_parens {
        checks.error(
            stage.args_span,
            format!("`route` needs a router and its branches: {USAGE}"),
        );
        return None;
    }
    let label = format!("the route at stage {number}");
    let mut router = None;
    let mut branches: Vec<RouteBranch> = Vec::new();
    let mut saw_braces = false;
    for piece in &stage.pieces {
        if let Some(group) = piece.braces() {
            if saw_braces {
                checks.error(
                    piece.span,
                    "`route` takes one `{ .. }` of branches".to_owned(),
                );
                continue;
            }
            saw_braces = true;
            let arms = Piece::split(group.stream());
            for arm in &arms {
                if let Some(branch) = check_branch(arm, &label, checks) {
                    branches.push(branch);
                }
            }
            if arms.is_empty() {
                checks.error(group.span(), format!("{label} has no branches: {USAGE}"));
            }
            continue;
        }
        if router.is_some() || saw_braces {
            checks.error(
                piece.span,
                format!("unexpected argument: `route` takes a router, then its branches: {USAGE}"),
            );
            continue;
        }
        match syn::parse2::<syn::Expr>(piece.stream()) {
            Ok(expr) => router = Some(expr),
            Err(e) => checks.push(e),
        }
    }
    if !saw_braces {
        checks.error(
            stage.args_span,
            format!("`route` needs its branches: {USAGE}"),
        );
    }
    let router = router.or_else(|| {
        // A broken argument (say, a modifier with nothing after it) is reported already.
        if !stage.broken {
            checks.error(stage.args_span, format!("`route` needs a router: {USAGE}"));
        }
        None
    })?;
    if branches.is_empty() {
        return None;
    }
    Some(CheckedStage {
        label: format!("stage {number} `route`"),
        stage: Box::new(CheckedRoute {
            method: form.method,
            router,
            branches,
            batched: form.has("batched"),
            label,
            span: stage.name.span(),
        }),
    })
}

struct RouteBranch {
    pattern: syn::Pat,
    /// `branch `Kind::Png` of the route at stage 3`
    label: String,
    name: String,
    span: Span,
    chain: CheckedChain,
}

/// Checks one `pattern => chain` arm.
fn check_branch(arm: &Piece, route: &str, checks: &mut dyn Checks) -> Option<RouteBranch> {
    let Some((pattern, chain)) = split_arm(&arm.tokens) else {
        checks.error(
            arm.span,
            format!("a branch of {route} is `pattern => stages`, e.g. `Kind::Png => pipe(decode)`"),
        );
        return None;
    };
    let pattern = match syn::Pat::parse_multi.parse2(pattern.clone()) {
        Ok(p) => p,
        Err(e) => {
            checks.push(e);
            return None;
        }
    };
    let name = written(&quote!(#pattern));
    let label = format!("branch `{name}` of {route}");
    let chain = checks.chain(chain, false, &label, arm.span)?;
    Some(RouteBranch {
        pattern,
        label,
        name,
        span: arm.span,
        chain,
    })
}

/// A checked `route`.
struct CheckedRoute {
    method: &'static str,
    router: syn::Expr,
    /// Whether it routes each element of each batch.
    batched: bool,
    branches: Vec<RouteBranch>,
    label: String,
    span: Span,
}

impl ExpandStage for CheckedRoute {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let router = &self.router;
        let arms = self.branches.iter().enumerate().map(|(i, b)| {
            let pattern = &b.pattern;
            quote_spanned!(b.span=> #pattern => #i,)
        });
        let method = ident(self.method, self.span);
        let from = format!("the router of {}", self.label);
        let _ = cx;
        let first_label = &self.branches[0].label;
        let branches_var = ident("__pipeline_branches", Span::mixed_site());
        let router_fn = ident("__pipeline_router", Span::mixed_site());
        let item = ident("__pipeline_item", Span::mixed_site());
        let mut expr = quote!(#stage.#method(move |#item| match #router_fn(#item) { #(#arms)* }));
        for (i, b) in self.branches.iter().enumerate() {
            let body = expand_chain(&from, &b.chain.stages);
            let name = &b.name;
            let build = quote! { |#stage| { #body #stage } };
            if i == 0 {
                expr = quote_spanned!(b.span=> #expr.branch(#name, #build));
                continue;
            }
            let tr = ident(&format!("__PipelineBranch{i}"), b.span);
            let guard = ident(&format!("__pipeline_branch_{i}"), b.span);
            let check = same_type_trait(
                &tr,
                &format!(
                    "{} produces `{{Self}}`, but {first_label} produces `{{A}}`",
                    b.label
                ),
                "this branch produces `{Self}`, not `{A}`",
            );
            let (branches_ty, input_ty, out_u, out_v) = if self.batched {
                (
                    quote!(#rt::BatchedBranches<T, U>),
                    quote!(::std::vec::Vec<T>),
                    quote!(::std::vec::Vec<U>),
                    quote!(::std::vec::Vec<V>),
                )
            } else {
                (quote!(#rt::Branches<T, U>), quote!(T), quote!(U), quote!(V))
            };
            let call = quote_spanned!(b.span=> #guard(#branches_var, #name, #build));
            expr = quote! {
                {
                    let #branches_var = #expr;
                    #check
                    fn #guard<T, U, V, B>(branches: #branches_ty, name: &str, build: B) -> #branches_ty
                    where
                        T: ::core::marker::Send + 'static,
                        U: ::core::marker::Send + 'static,
                        V: ::core::marker::Send + 'static,
                        #out_v: #tr<#out_u>,
                        B: ::core::ops::FnOnce(#rt::StageBuilder<#input_ty>) -> #rt::StageBuilder<#out_v>,
                    {
                        branches.branch(name, move |b| <#out_v as #tr<#out_u>>::__cast(build(b)))
                    }
                    #call
                }
            };
        }
        quote! {
            let #stage = {
                let #router_fn = #router;
                #expr.join()
            };
        }
    }
}
