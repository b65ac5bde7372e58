//! The `pipeline!` macro of `pipeline-runtime`. Use it through `pipeline_runtime::pipeline!`;
//! the guide's macro chapter (`docs/src/macro.md`) describes the grammar.
//!
//! The macro works in three phases, one module each, all on `proc_macro2` tokens so that
//! they can be tested outside a compiler invocation:
//!
//! * `parse`: tokens → stages, modifiers, positional arguments and options;
//! * `validate`: names, places, options and literal values checked → a plan;
//! * `expand`: the plan → calls of the `pipeline_runtime` builder, each `pipe` stage through
//!   a guard function whose diagnostics name the stage and the types involved.
//!
//! No input makes the macro panic: every mistake is a `compile_error!` at the offending
//! tokens, emitted together with the best expansion the input allows.

mod expand;
mod expr;
mod parse;
mod syntax;
mod validate;

#[cfg(test)]
mod proptests;

/// Builds a pipeline from a `->` chain of stages; evaluates to
/// `Result<pipeline_runtime::Pipeline<T>, pipeline_runtime::BuildError>`.
///
/// ```text
/// pipeline! {
///     source(paths)
///     -> pipe(read, concurrency = 8)
///     -> pipe(async fetch, concurrency = 64)
///     -> aggregate(32, drop_last = true)
///     -> sink(buffer = 4, num_threads = 8)
/// }
/// ```
///
/// See the crate documentation of `pipeline_runtime` for the full grammar and examples that
/// compile.
#[proc_macro]
pub fn pipeline(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand::pipeline(input.into()).into()
}
