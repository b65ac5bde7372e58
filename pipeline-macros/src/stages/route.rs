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

use super::kind::{Checks, Modifier, Place, Positional, StageKind, SubChain};
use super::structure::{ident, same_type_trait, split_arm, split_commas, written};
use crate::expand::{expand_chain, rt, stage_var};
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

pub(super) const NAME: &str = "route";

pub(crate) struct Route;

impl StageKind for Route {
    fn name(&self) -> &'static str {
        NAME
    }

    fn place(&self) -> Place {
        Place::Between
    }

    fn modifiers(&self) -> &'static [Modifier] {
        const MODIFIERS: &[Modifier] = &[Modifier {
            word: "batched",
            hint: " (`batched` applies to `route`)",
        }];
        MODIFIERS
    }

    fn positional(&self) -> Positional {
        Positional::One {
            what: "a router and its branches",
            example: "kind_of, { Kind::A => pipe(f), Kind::B => pipe(g) }",
        }
    }

    fn plan(
        &self,
        stage: &Stage,
        _implied: &[&'static str],
        number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        let usage = "`route(router, { pattern => pipe(f), .. })`";
        let Some(raw) = stage.raw.clone() else {
            checks.error(
                stage.args_span,
                format!("`route` needs a router and its branches: {usage}"),
            );
            return None;
        };
        let pieces = split_commas(raw);
        let label = format!("the route at stage {number}");
        let mut router = None;
        let mut batched = false;
        let mut branches: Vec<Branch> = Vec::new();
        let mut saw_braces = false;
        for piece in &pieces {
            if let Some(group) = piece.braces() {
                if saw_braces {
                    checks.error(
                        piece.span,
                        "`route` takes one `{ .. }` of branches".to_owned(),
                    );
                    continue;
                }
                saw_braces = true;
                let arms = split_commas(group.stream());
                for arm in &arms {
                    if let Some(branch) = plan_branch(arm, &label, checks) {
                        branches.push(branch);
                    }
                }
                if arms.is_empty() {
                    checks.error(group.span(), format!("{label} has no branches: {usage}"));
                }
                continue;
            }
            if router.is_some() || saw_braces {
                checks.error(
                    piece.span,
                    format!(
                        "unexpected argument: `route` takes a router, then its branches: {usage}"
                    ),
                );
                continue;
            }
            let mut tokens = piece.tokens.clone();
            if let [proc_macro2::TokenTree::Ident(word), _, ..] = tokens.as_slice() {
                if word == "batched" {
                    batched = true;
                    tokens.remove(0);
                }
            }
            match syn::parse2::<syn::Expr>(tokens.into_iter().collect()) {
                Ok(expr) => router = Some(expr),
                Err(e) => checks.push(e),
            }
        }
        if !saw_braces {
            checks.error(
                stage.args_span,
                format!("`route` needs its branches: {usage}"),
            );
        }
        let router = router.or_else(|| {
            checks.error(stage.args_span, format!("`route` needs a router: {usage}"));
            None
        })?;
        if branches.is_empty() {
            return None;
        }
        Some(Step {
            label: format!("stage {number} `route`"),
            stage: Box::new(RouteStep {
                router,
                batched,
                branches,
                label,
                span: stage.kind.span(),
            }),
        })
    }
}

struct Branch {
    pattern: syn::Pat,
    /// `branch `Kind::Png` of the route at stage 3`
    label: String,
    name: String,
    span: Span,
    chain: SubChain,
}

/// Checks one `pattern => chain` arm.
fn plan_branch(
    arm: &super::structure::Piece,
    route: &str,
    checks: &mut dyn Checks,
) -> Option<Branch> {
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
    let parsed = crate::parse::parse(chain);
    let errors = !parsed.errors.is_empty();
    parsed.errors.into_iter().for_each(|e| checks.push(e));
    let chain = checks.chain(&parsed.stages, false, &label, arm.span);
    if errors && chain.steps.is_empty() {
        return None;
    }
    Some(Branch {
        pattern,
        label,
        name,
        span: arm.span,
        chain,
    })
}

struct RouteStep {
    router: syn::Expr,
    batched: bool,
    branches: Vec<Branch>,
    label: String,
    span: Span,
}

impl Planned for RouteStep {
    fn expand(&self, cx: &Context<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let router = &self.router;
        let arms = self.branches.iter().enumerate().map(|(i, b)| {
            let pattern = &b.pattern;
            quote_spanned!(b.span=> #pattern => #i,)
        });
        let method = ident(
            if self.batched {
                "route_batched"
            } else {
                "route"
            },
            self.span,
        );
        let from = format!("the router of {}", self.label);
        let _ = cx;
        let first_label = &self.branches[0].label;
        let branches_var = ident("__pipeline_branches", Span::mixed_site());
        let router_fn = ident("__pipeline_router", Span::mixed_site());
        let item = ident("__pipeline_item", Span::mixed_site());
        let mut expr = quote!(#stage.#method(move |#item| match #router_fn(#item) { #(#arms)* }));
        for (i, b) in self.branches.iter().enumerate() {
            let body = expand_chain(&from, &b.chain.steps);
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
