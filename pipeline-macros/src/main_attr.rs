//! `#[pipeline_runtime::main]`: makes `main` enter worker mode first
//! (`pipeline_runtime::process::init()`), before anything else runs, a runtime included.
//!
//! * A plain `fn main` gets the call as its first statement.
//! * An `async fn main` still carrying its runtime attribute (`#[tokio::main]` written below
//!   this one) becomes a plain `fn main` that makes the call, then runs the async body as an
//!   inner function that keeps the runtime attribute: the call comes before the runtime is
//!   built.
//! * Written below `#[tokio::main]`, it sees the plain `fn main` that tokio made and
//!   prepends the call there, also before the runtime is built.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Ident, ItemFn};

pub(crate) fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Vec::new();
    if !attr.is_empty() {
        errors.push(syn::Error::new_spanned(
            &attr,
            "`#[pipeline_runtime::main]` takes no arguments",
        ));
    }
    let mut f: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "`#[pipeline_runtime::main]` goes on a function (`fn main`)",
            )
            .into_compile_error();
            return quote!(#e #item);
        }
    };
    let init = quote!(::pipeline_runtime::__private::process_init(););
    let errors = errors.into_iter().map(syn::Error::into_compile_error);
    if f.sig.asyncness.is_none() {
        let init: syn::Stmt = syn::parse_quote!(#init);
        f.block.stmts.insert(0, init);
        return quote!(#(#errors)* #f);
    }
    if f.attrs.is_empty() {
        let e = syn::Error::new_spanned(
            f.sig.asyncness,
            "an `async fn main` needs a runtime: write `#[tokio::main]` below \
             `#[pipeline_runtime::main]`",
        )
        .into_compile_error();
        return quote!(#(#errors)* #e #f);
    }
    // The async body moves into an inner function that keeps the runtime attribute; the
    // outer `main` calls `init()`, then it.
    let inner = Ident::new("__pipeline_runtime_main", Span::mixed_site());
    let runtime_attrs = std::mem::take(&mut f.attrs);
    let vis = &f.vis;
    let mut outer_sig = f.sig.clone();
    outer_sig.asyncness = None;
    let mut inner_sig = f.sig.clone();
    inner_sig.ident = inner.clone();
    let block = &f.block;
    quote! {
        #(#errors)*
        #vis #outer_sig {
            #init
            #(#runtime_attrs)*
            #inner_sig #block
            #inner()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: TokenStream, item: TokenStream) -> String {
        main(attr, item).to_string()
    }

    #[test]
    fn a_plain_main_calls_init_first() {
        let out = expand(
            quote!(),
            quote!(
                fn main() {
                    run();
                }
            ),
        );
        let init = out.find("process_init").expect(&out);
        assert!(init < out.find("run ()").unwrap(), "{out}");
    }

    #[test]
    fn an_async_main_calls_init_before_its_runtime_starts() {
        let out = expand(
            quote!(),
            quote!(
                #[tokio::main]
                async fn main() -> Result<(), E> {
                    run().await
                }
            ),
        );
        let init = out.find("process_init").expect(&out);
        let runtime = out.find("tokio :: main").expect(&out);
        assert!(init < runtime, "{out}");
        assert!(out.starts_with("fn main () -> Result < () , E >"), "{out}");
    }

    #[test]
    fn mistakes_are_errors() {
        let no_runtime = expand(
            quote!(),
            quote!(
                async fn main() {}
            ),
        );
        assert!(no_runtime.contains("needs a runtime"), "{no_runtime}");
        let args = expand(
            quote!(threads = 2),
            quote!(
                fn main() {}
            ),
        );
        assert!(args.contains("takes no arguments"), "{args}");
        let not_fn = expand(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert!(not_fn.contains("goes on a function"), "{not_fn}");
    }
}
