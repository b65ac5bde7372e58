//! The macros of `pipeline-runtime`: `pipeline!` and `#[main]`. Use them through
//! `pipeline_runtime::pipeline!` and `#[pipeline_runtime::main]`; the guide's macro chapter
//! (`docs/src/macro.md`) describes the grammar.
//!
//! The macro works in three phases, one module each, all on `proc_macro2` tokens so that
//! they can be tested outside a compiler invocation:
//!
//! * `parse`: tokens → stages, modifiers, positional arguments and options (`syntax`);
//! * `validate`: names, places, modifiers, arguments, options and literal values checked → a
//!   checked pipeline (`checked`);
//! * `expand`: the checked pipeline → calls of the `pipeline_runtime` builder, each stage
//!   that takes a function through a guard function whose diagnostics name the stage and the
//!   types involved.
//!
//! The phases hold what is the same for every stage kind. Each kind (`source`, `pipe`,
//! `aggregate`, ..) has one file in `stages/`: its descriptor (`descriptor::KindDescriptor`:
//! name, place, modifiers and the forms they select, positional arguments, options), its own
//! checks and its expansion. The generic checks run in `validate` from the descriptors in
//! the one list of kinds (`stages::KINDS`), which `parse` is handed as its vocabulary.
//!
//! Dependencies point one way: `syntax`, `expr` and `checked` at the bottom; then
//! `option_values` and `descriptor`; `parse` (which names no kind); the kinds; the list of
//! kinds; `validate`, which drives them and parses the chains inside a structure for them.
//!
//! No input makes the macro panic: every mistake is a `compile_error!` at the offending
//! tokens, emitted together with the best expansion the input allows.

mod checked;
mod descriptor;
mod expand;
mod expr;
mod main_attr;
mod option_values;
mod parse;
mod stages;
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
/// The stages, each expanded to the builder method of the same name:
///
/// * `source(items)`, first (`source(try items)`, `source(continuous items)`,
///   `source(async stream)`, ..), or `merge(source(a) -> .., source(b), policy = ..)`;
/// * `pipe(f)`, its shape chosen by the modifiers `async`, `try`, `opt`, `flat` and `process`
///   (`pipe(async try f)` calls `.async_try_pipe(f)`);
/// * `aggregate(n)`: batches of `n` items; `aggregate_with(aggregator)`: any `Aggregator`;
///   `aggregate_by(key, n)`: batches of `n` items that share `key(&item)`, a bucket that
///   never fills flushed at the end of the epoch (all three take `drop_last`, `name`,
///   `buffer`); `disaggregate()`: the items of each batch;
/// * `process_region(f, executor = pool)`: the stages of a registered region fn, in worker
///   processes; `remote_region(f, workers = w)`: the same on remote workers, local lanes
///   first (the runtime's feature `remote`);
/// * `route(router, { pattern => stages, .. })`: each item down the branch its key matches;
/// * `sink(..)`, last, with the pipeline-wide options (`num_threads`, `max_failures`, ..).
///
/// The guide's chapter on the macro (`docs/src/macro.md`) gives the full grammar, with examples
/// that compile.
#[proc_macro]
pub fn pipeline(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    pipeline_tokens(input.into()).into()
}

/// The whole macro: parse, validate, expand. Never panics; errors come out as
/// `compile_error!`s next to the best expansion the input allows.
fn pipeline_tokens(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let parsed = parse::parse(input, stages::KINDS);
    let (pipeline, errors) = validate::validate(parsed);
    expand::expand(&pipeline, &errors)
}

/// Makes `main` call `pipeline_runtime::process::init()` first, as programs with process
/// stages or subprocesses must (a worker is this executable run again). With an async
/// runtime, write it above the runtime's attribute:
///
/// ```text
/// #[pipeline_runtime::main]
/// #[tokio::main]
/// async fn main() { /* ... */ }
/// ```
///
/// The call then comes before the runtime starts. See `pipeline_runtime::main`.
#[proc_macro_attribute]
pub fn main(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    main_attr::main(attr.into(), item.into()).into()
}
