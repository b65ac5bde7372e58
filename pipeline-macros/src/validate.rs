//! Phase 2: the syntax tree → a checked plan of builder calls.
//!
//! Everything that can be known without types is checked here: stage names, modifiers, the
//! place of `source` and `sink`, option names, duplicates, missing values, and literal values
//! (`concurrency = 0`, `aggregate(0)`, a failure rate outside `(0, 1]`). Type checks are left to
//! rustc, through the guards that `expand` emits.
//!
//! Every mistake becomes a `syn::Error` at the offending tokens, and the plan is still built
//! as well as it can be (an unknown option is left out, a misspelled stage is read as the
//! stage it most likely means), so that one mistake gives one error.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, Lit, UnOp};

use crate::expr::{describe, int_literal, is_float_literal, strip};
use crate::parse::{AGGREGATE_OPTIONS, PIPE_OPTIONS, SINK_OPTIONS};
use crate::syntax::{Parsed, Stage, StageOption};

/// What the source stage iterates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// `source(items)`: any `IntoIterator`, one pass.
    Iter,
    /// `source(try items)`: an iterator of `Result`s.
    Try,
    /// `source(continuous items)`: iterated again for every epoch.
    Continuous,
    /// `source(stream s)`: an async `Stream`.
    Stream,
}

/// The shape of a `pipe` stage's function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `pipe(f)`: `Fn(T) -> U`.
    Map,
    /// `pipe(try f)`: `Fn(T) -> Result<U, E>`.
    Try,
    /// `pipe(opt f)`: `Fn(T) -> Option<U>`.
    Opt,
    /// `pipe(flat f)`: `Fn(T) -> impl IntoIterator<Item = U>`.
    Flat,
    /// `pipe(try flat f)`: `Fn(T) -> impl IntoIterator<Item = Result<U, E>>`.
    TryFlat,
    /// `pipe(async f)`: `Fn(T) -> impl Future<Output = U>`.
    Async,
    /// `pipe(try async f)`: `Fn(T) -> impl Future<Output = Result<U, E>>`.
    TryAsync,
    /// `pipe(opt async f)`: `Fn(T) -> impl Future<Output = Option<U>>`.
    OptAsync,
    /// `pipe(stream f)`: `Fn(T) -> impl Stream<Item = U>`.
    Stream,
    /// `pipe(process f)`: a named `fn(T) -> U` run in worker processes.
    Process,
}

impl Shape {
    pub(crate) fn is_async(self) -> bool {
        matches!(
            self,
            Shape::Async | Shape::TryAsync | Shape::OptAsync | Shape::Stream
        )
    }

    pub(crate) fn is_many(self) -> bool {
        matches!(self, Shape::Flat | Shape::TryFlat | Shape::Stream)
    }

    /// The builder method this shape maps to.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Shape::Map => "pipe",
            Shape::Try => "try_pipe",
            Shape::Opt => "pipe_opt",
            Shape::Flat => "pipe_iter",
            Shape::TryFlat => "try_pipe_iter",
            Shape::Async => "pipe_async",
            Shape::TryAsync => "try_pipe_async",
            Shape::OptAsync => "pipe_opt_async",
            Shape::Stream => "pipe_stream",
            Shape::Process => "process_pipe",
        }
    }

    /// How the shape is written with modifiers.
    fn modifiers(self) -> &'static str {
        match self {
            Shape::Map => "",
            Shape::Try => "try ",
            Shape::Opt => "opt ",
            Shape::Flat => "flat ",
            Shape::TryFlat => "try flat ",
            Shape::Async => "async ",
            Shape::TryAsync => "try async ",
            Shape::OptAsync => "opt async ",
            Shape::Stream => "stream ",
            Shape::Process => "process ",
        }
    }
}

/// An option's value, with the span of its name (generated calls are spanned there).
#[derive(Clone)]
pub(crate) struct Opt {
    pub(crate) span: Span,
    pub(crate) value: Expr,
}

/// `order = ..`.
#[derive(Clone)]
pub(crate) enum OrderValue {
    Input(Span),
    Completion(Span),
    Expr(Opt),
}

/// `max_failures = ..`.
#[derive(Clone)]
pub(crate) enum Budget {
    /// An integer literal: at most this many failures.
    Count(Span, syn::LitInt),
    /// A float literal: a failure rate.
    Rate(Span, syn::LitFloat),
    /// Any other expression: a `MaxFailures`.
    Expr(Opt),
}

/// Options of a `pipe` stage.
#[derive(Clone, Default)]
pub(crate) struct PipeOptions {
    pub(crate) concurrency: Option<Opt>,
    pub(crate) name: Option<Opt>,
    pub(crate) order: Option<OrderValue>,
    pub(crate) max_failures: Option<Budget>,
    pub(crate) executor: Option<Opt>,
    pub(crate) buffer: Option<Opt>,
}

/// Options of an `aggregate` stage.
#[derive(Clone, Default)]
pub(crate) struct AggregateOptions {
    pub(crate) drop_last: Option<Opt>,
    pub(crate) name: Option<Opt>,
    pub(crate) buffer: Option<Opt>,
}

/// Options of the sink, i.e. of the whole pipeline.
#[derive(Clone, Default)]
pub(crate) struct SinkOptions {
    pub(crate) buffer: Option<Opt>,
    pub(crate) num_threads: Option<Opt>,
    pub(crate) max_failures: Option<Budget>,
    pub(crate) queue_capacity: Option<Opt>,
    pub(crate) stop_timeout: Option<Opt>,
    pub(crate) stats: Option<Opt>,
    pub(crate) report_interval: Option<Opt>,
}

/// The source stage.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) kind: SourceKind,
    pub(crate) items: Expr,
    pub(crate) span: Span,
}

/// One stage between the source and the sink.
#[derive(Clone)]
pub(crate) enum Step {
    Pipe {
        shape: Shape,
        func: Expr,
        options: Box<PipeOptions>,
        /// Span of the stage name (`pipe`).
        span: Span,
        /// Span of the stage's `( .. )`.
        args_span: Span,
    },
    Aggregate {
        size: Expr,
        options: AggregateOptions,
        span: Span,
    },
    AggregateWith {
        aggregator: Expr,
        options: AggregateOptions,
        span: Span,
    },
    Disaggregate {
        span: Span,
        args_span: Span,
    },
}

/// A step with the words that name it in error messages, e.g. "stage 3 `pipe(decode)`".
#[derive(Clone)]
pub(crate) struct LabeledStep {
    pub(crate) step: Step,
    pub(crate) label: String,
}

/// The checked pipeline, as complete as the input allows.
#[derive(Clone)]
pub(crate) struct Plan {
    /// `None` when the input has no usable source (an error says so).
    pub(crate) source: Option<Source>,
    pub(crate) steps: Vec<LabeledStep>,
    /// `None` when the input has no sink (an error says so; defaults are used).
    pub(crate) sink: Option<(Span, SinkOptions)>,
}

/// Every stage name, with what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source(Option<&'static str>),
    Pipe(&'static [&'static str]),
    Aggregate,
    AggregateWith,
    Disaggregate,
    Sink,
}

const KINDS: &[(&str, Kind)] = &[
    ("source", Kind::Source(None)),
    ("try_source", Kind::Source(Some("try"))),
    ("continuous_source", Kind::Source(Some("continuous"))),
    ("source_stream", Kind::Source(Some("stream"))),
    ("pipe", Kind::Pipe(&[])),
    ("try_pipe", Kind::Pipe(&["try"])),
    ("pipe_opt", Kind::Pipe(&["opt"])),
    ("pipe_iter", Kind::Pipe(&["flat"])),
    ("try_pipe_iter", Kind::Pipe(&["try", "flat"])),
    ("pipe_async", Kind::Pipe(&["async"])),
    ("try_pipe_async", Kind::Pipe(&["try", "async"])),
    ("pipe_opt_async", Kind::Pipe(&["opt", "async"])),
    ("pipe_stream", Kind::Pipe(&["stream"])),
    ("aggregate", Kind::Aggregate),
    ("aggregate_with", Kind::AggregateWith),
    ("disaggregate", Kind::Disaggregate),
    ("sink", Kind::Sink),
];

/// Checks the parsed input; returns the plan and every error found (the parser's first).
pub(crate) fn validate(parsed: Parsed) -> (Plan, Vec<syn::Error>) {
    let mut v = Validator {
        errors: parsed.errors,
    };
    let plan = v.pipeline(&parsed.stages);
    (plan, v.errors)
}

struct Validator {
    errors: Vec<syn::Error>,
}

impl Validator {
    fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    fn pipeline(&mut self, stages: &[Stage]) -> Plan {
        let mut plan = Plan {
            source: None,
            steps: Vec::new(),
            sink: None,
        };
        if stages.is_empty() {
            if self.errors.is_empty() {
                self.error(
                    Span::call_site(),
                    "empty pipeline: write `pipeline! { source(items) -> pipe(f) -> sink() }`",
                );
            }
            return plan;
        }
        let mut after_sink = false;
        for (index, stage) in stages.iter().enumerate() {
            let Some(kind) = self.kind(stage) else {
                continue;
            };
            let number = index + 1;
            if index == 0 && !matches!(kind, Kind::Source(_)) {
                self.error(
                    stage.kind.span(),
                    format!(
                        "missing source: a pipeline starts with `source(items)`, found `{}`",
                        stage.kind
                    ),
                );
            }
            if after_sink {
                self.error(
                    stage.kind.span(),
                    format!(
                        "`{}` after the sink: `sink(..)` is the last stage of a pipeline",
                        stage.kind
                    ),
                );
            }
            match kind {
                Kind::Source(base) => {
                    if index > 0 {
                        self.error(
                            stage.kind.span(),
                            "`source` must be the first stage: a pipeline has one source, at its start",
                        );
                    } else if let Some(source) = self.source(stage, base) {
                        plan.source = Some(source);
                    }
                }
                Kind::Sink => {
                    if after_sink {
                        continue;
                    }
                    after_sink = true;
                    plan.sink = Some((stage.kind.span(), self.sink(stage)));
                }
                kind => {
                    if let Some(step) = self.step(stage, kind, number) {
                        plan.steps.push(step);
                    }
                }
            }
        }
        if !after_sink {
            let last = &stages[stages.len() - 1];
            self.error(
                last.kind.span(),
                "missing sink: a pipeline ends with `sink(..)`, e.g. `-> sink(buffer = 4)`",
            );
        }
        plan
    }

    /// Resolves the stage name; an unknown one is reported, and read as the closest known
    /// name when there is one.
    fn kind(&mut self, stage: &Stage) -> Option<Kind> {
        let word = stage.kind.to_string();
        if let Some((_, kind)) = KINDS.iter().find(|(name, _)| *name == word) {
            return Some(*kind);
        }
        let names: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
        match suggest(&word, &names) {
            Some(best) => {
                self.error(
                    stage.kind.span(),
                    format!("unknown stage `{word}`; did you mean `{best}`?"),
                );
                KINDS
                    .iter()
                    .find(|(name, _)| *name == best)
                    .map(|(_, kind)| *kind)
            }
            None => {
                self.error(
                    stage.kind.span(),
                    format!(
                        "unknown stage `{word}`; the stages are `source`, `pipe`, `aggregate`, \
                         `aggregate_with`, `disaggregate` and `sink`"
                    ),
                );
                None
            }
        }
    }

    /// The modifiers written on a stage, plus those its name implies; duplicates and words
    /// outside `allowed` are reported.
    fn modifiers(
        &mut self,
        stage: &Stage,
        base: &[&'static str],
        allowed: &[&str],
    ) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = base.iter().map(|s| (*s).to_owned()).collect();
        for m in &stage.modifiers {
            let word = m.to_string();
            if !allowed.contains(&word.as_str()) {
                let hint = match word.as_str() {
                    "continuous" => " (`continuous` applies to `source`)",
                    "opt" | "flat" => " (it applies to `pipe`)",
                    _ => "",
                };
                self.error(
                    m.span(),
                    format!("`{}` does not take the modifier `{word}`{hint}", stage.kind),
                );
            } else if !set.insert(word.clone()) {
                self.error(m.span(), format!("the modifier `{word}` is given twice"));
            }
        }
        set
    }

    /// Exactly one positional argument; `what` describes it for the error.
    fn one_positional(&mut self, stage: &Stage, what: &str) -> Option<Expr> {
        for extra in stage.positional.iter().skip(1) {
            self.error(
                extra.span(),
                format!(
                    "unexpected argument: `{}` takes {what}, then options",
                    stage.kind
                ),
            );
        }
        match stage.positional.first() {
            Some(expr) => Some(expr.clone()),
            None => {
                if !stage.broken {
                    self.error(
                        stage.args_span,
                        format!(
                            "`{}` needs {what}: `{}({})`",
                            stage.kind,
                            stage.kind,
                            example(what)
                        ),
                    );
                }
                None
            }
        }
    }

    fn no_positional(&mut self, stage: &Stage, hint: &str) {
        for extra in &stage.positional {
            self.error(
                extra.span(),
                format!("unexpected argument: `{}` takes {hint}", stage.kind),
            );
        }
    }

    fn source(&mut self, stage: &Stage, base: Option<&'static str>) -> Option<Source> {
        let base: Vec<&'static str> = base.into_iter().collect();
        let mods = self.modifiers(stage, &base, &["try", "continuous", "stream"]);
        let kind = match mods
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => SourceKind::Iter,
            ["try"] => SourceKind::Try,
            ["continuous"] => SourceKind::Continuous,
            ["stream"] => SourceKind::Stream,
            _ => {
                self.error(
                    stage.kind.span(),
                    "a source is one of `source(items)`, `source(try items)`, \
                     `source(continuous items)` and `source(stream s)`",
                );
                SourceKind::Iter
            }
        };
        for o in &stage.options {
            self.error(
                o.name.span(),
                format!("`source` takes no options, found `{}`", o.name),
            );
        }
        let items = self.one_positional(stage, "the items")?;
        Some(Source {
            kind,
            items,
            span: stage.kind.span(),
        })
    }

    fn step(&mut self, stage: &Stage, kind: Kind, number: usize) -> Option<LabeledStep> {
        let span = stage.kind.span();
        match kind {
            Kind::Pipe(base) => {
                let mods = self.modifiers(
                    stage,
                    base,
                    &["async", "try", "opt", "flat", "stream", "process"],
                );
                let shape = self.shape(stage, &mods);
                let opts = self.options(stage, PIPE_OPTIONS);
                let mut options = PipeOptions::default();
                for (name, o) in opts {
                    let opt = Opt {
                        span: name.span(),
                        value: o,
                    };
                    match name.to_string().as_str() {
                        "concurrency" => {
                            if self.at_least_one(&name, &opt.value) {
                                options.concurrency = Some(opt);
                            }
                        }
                        "name" => options.name = Some(opt),
                        "order" => options.order = Some(order(opt)),
                        "max_failures" => options.max_failures = self.budget(&name, opt),
                        "executor" => {
                            if shape.is_async() {
                                self.error(
                                    name.span(),
                                    format!(
                                        "`executor` does not apply to an async stage: \
                                         `pipe({}..)` runs on the pipeline's async runtime, \
                                         and executors run synchronous stages",
                                        shape.modifiers()
                                    ),
                                );
                            } else {
                                options.executor = Some(opt);
                            }
                        }
                        _ => {
                            if self.at_least_one(&name, &opt.value) {
                                options.buffer = Some(opt);
                            }
                        }
                    }
                }
                if shape.is_many() {
                    if let (Some(OrderValue::Input(order_span)), Some(c)) =
                        (&options.order, &options.concurrency)
                    {
                        if matches!(int_literal(&c.value), Some((false, n)) if n > 1) {
                            self.error(
                                *order_span,
                                "`order = input` is not supported on a one-to-many stage \
                                 (`flat`, `stream`) with concurrency above 1: use \
                                 `order = completion` or `concurrency = 1`",
                            );
                            options.order = None;
                        }
                    }
                }
                let func = self.one_positional(stage, "a function")?;
                if shape == Shape::Process {
                    self.process_stage(stage, &func, &options);
                }
                let label = match &options.name {
                    Some(Opt {
                        value:
                            Expr::Lit(syn::ExprLit {
                                lit: Lit::Str(s), ..
                            }),
                        ..
                    }) => format!("stage {number} `{}`", s.value()),
                    _ => format!(
                        "stage {number} `pipe({}{})`",
                        shape.modifiers(),
                        describe(&func)
                    ),
                };
                Some(LabeledStep {
                    step: Step::Pipe {
                        shape,
                        func,
                        options: Box::new(options),
                        span,
                        args_span: stage.args_span,
                    },
                    label,
                })
            }
            Kind::Aggregate | Kind::AggregateWith => {
                self.modifiers(stage, &[], &[]);
                let options = self.aggregate_options(stage);
                if kind == Kind::Aggregate {
                    let size = self.one_positional(stage, "the batch size")?;
                    let mut size = size;
                    if let Some((negative, n)) = int_literal(&size) {
                        if negative || n == 0 {
                            self.errors.push(syn::Error::new_spanned(
                                &size,
                                "the batch size must be at least 1",
                            ));
                            // Best effort: go on with a valid size.
                            size = syn::parse_quote_spanned!(size.span()=> 1);
                        }
                    }
                    let label = format!("stage {number} `aggregate({})`", describe(&size));
                    Some(LabeledStep {
                        step: Step::Aggregate {
                            size,
                            options,
                            span,
                        },
                        label,
                    })
                } else {
                    let aggregator = self.one_positional(stage, "an aggregator")?;
                    Some(LabeledStep {
                        label: format!(
                            "stage {number} `aggregate_with({})`",
                            describe(&aggregator)
                        ),
                        step: Step::AggregateWith {
                            aggregator,
                            options,
                            span,
                        },
                    })
                }
            }
            Kind::Disaggregate => {
                self.modifiers(stage, &[], &[]);
                self.no_positional(stage, "no arguments: `disaggregate()`");
                self.options(stage, &[]);
                Some(LabeledStep {
                    step: Step::Disaggregate {
                        span,
                        args_span: stage.args_span,
                    },
                    label: format!("stage {number} `disaggregate()`"),
                })
            }
            Kind::Source(_) | Kind::Sink => None,
        }
    }

    /// A process stage runs a named `fn` (found by name in the worker) on a `ProcessPool`.
    fn process_stage(&mut self, stage: &Stage, func: &Expr, options: &PipeOptions) {
        if !matches!(func, Expr::Path(_)) {
            self.errors.push(syn::Error::new_spanned(
                func,
                "a `process` stage runs in worker processes, and a closure (or any expression \
                 other than a function's name) cannot cross a process boundary: write the \
                 stage as a named `fn`, register it with `pipeline_runtime::process_fn!(name)`, \
                 and write `pipe(process name, executor = pool)`",
            ));
        }
        if options.executor.is_none() {
            self.error(
                stage.kind.span(),
                "a `process` stage needs the worker processes to run on: add \
                 `executor = pool`, where `pool` is a `ProcessPool`",
            );
        }
    }

    fn shape(&mut self, stage: &Stage, mods: &BTreeSet<String>) -> Shape {
        let written: Vec<String> = stage.modifiers.iter().map(ToString::to_string).collect();
        let words: Vec<&str> = mods.iter().map(String::as_str).collect();
        // BTreeSet order: async < flat < opt < stream < try.
        match words.as_slice() {
            [] => Shape::Map,
            ["try"] => Shape::Try,
            ["opt"] => Shape::Opt,
            ["flat"] => Shape::Flat,
            ["flat", "try"] => Shape::TryFlat,
            ["async"] => Shape::Async,
            ["async", "try"] => Shape::TryAsync,
            ["async", "opt"] => Shape::OptAsync,
            ["stream"] => Shape::Stream,
            ["process"] => Shape::Process,
            _ => {
                let span = stage
                    .modifiers
                    .first()
                    .map(syn::Ident::span)
                    .unwrap_or_else(|| stage.kind.span());
                self.error(
                    span,
                    format!(
                        "`{}` is not a stage shape; the shapes are `pipe(f)`, `pipe(try f)`, \
                         `pipe(opt f)`, `pipe(flat f)`, `pipe(try flat f)`, `pipe(async f)`, \
                         `pipe(try async f)`, `pipe(opt async f)`, `pipe(stream f)` and \
                         `pipe(process f)`",
                        if written.is_empty() {
                            words.join(" ")
                        } else {
                            written.join(" ")
                        }
                    ),
                );
                if mods.contains("async") {
                    Shape::Async
                } else {
                    Shape::Map
                }
            }
        }
    }

    /// Checks option names (unknown, duplicate, missing value) and returns the usable ones.
    fn options(&mut self, stage: &Stage, allowed: &[&str]) -> Vec<(syn::Ident, Expr)> {
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for StageOption { name, value } in &stage.options {
            let word = name.to_string();
            if !allowed.contains(&word.as_str()) {
                self.unknown_option(stage, name, allowed);
                continue;
            }
            if seen.contains(&word) {
                self.error(name.span(), format!("duplicate option `{word}`"));
                continue;
            }
            seen.push(word.clone());
            match value {
                Some(value) => out.push((name.clone(), value.clone())),
                None => self.error(
                    name.span(),
                    format!(
                        "missing value for `{word}`: write `{word} = {}`",
                        option_example(&word)
                    ),
                ),
            }
        }
        out
    }

    fn unknown_option(&mut self, stage: &Stage, name: &syn::Ident, allowed: &[&str]) {
        let word = name.to_string();
        let kind = stage.kind.to_string();
        if allowed.is_empty() {
            self.error(
                name.span(),
                format!("`{kind}` takes no options, found `{word}`"),
            );
            return;
        }
        if let Some(best) = suggest(&word, allowed) {
            self.error(
                name.span(),
                format!("unknown option `{word}` of `{kind}`; did you mean `{best}`?"),
            );
            return;
        }
        let elsewhere = [
            ("pipe", PIPE_OPTIONS),
            ("aggregate", AGGREGATE_OPTIONS),
            ("sink", SINK_OPTIONS),
        ]
        .iter()
        .find(|(_, opts)| opts.contains(&word.as_str()))
        .map(|(k, _)| *k);
        let list = allowed
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match elsewhere {
            Some(owner) => self.error(
                name.span(),
                format!(
                    "`{word}` is an option of `{owner}`, not of `{kind}`; `{kind}` takes {list}"
                ),
            ),
            None => self.error(
                name.span(),
                format!("unknown option `{word}` of `{kind}`; `{kind}` takes {list}"),
            ),
        }
    }

    fn aggregate_options(&mut self, stage: &Stage) -> AggregateOptions {
        let mut options = AggregateOptions::default();
        for (name, value) in self.options(stage, AGGREGATE_OPTIONS) {
            let opt = Opt {
                span: name.span(),
                value,
            };
            match name.to_string().as_str() {
                "drop_last" => options.drop_last = Some(opt),
                "name" => options.name = Some(opt),
                _ => {
                    if self.at_least_one(&name, &opt.value) {
                        options.buffer = Some(opt);
                    }
                }
            }
        }
        options
    }

    fn sink(&mut self, stage: &Stage) -> SinkOptions {
        self.modifiers(stage, &[], &[]);
        self.no_positional(stage, "options only, e.g. `sink(buffer = 4)`");
        let mut options = SinkOptions::default();
        for (name, value) in self.options(stage, SINK_OPTIONS) {
            let opt = Opt {
                span: name.span(),
                value,
            };
            match name.to_string().as_str() {
                "buffer" => {
                    if self.at_least_one(&name, &opt.value) {
                        options.buffer = Some(opt);
                    }
                }
                "num_threads" => {
                    if self.at_least_one(&name, &opt.value) {
                        options.num_threads = Some(opt);
                    }
                }
                "queue_capacity" => {
                    if self.at_least_one(&name, &opt.value) {
                        options.queue_capacity = Some(opt);
                    }
                }
                "max_failures" => options.max_failures = self.budget(&name, opt),
                "stats" => options.stats = Some(opt),
                "report_interval" => options.report_interval = Some(opt),
                _ => options.stop_timeout = Some(opt),
            }
        }
        options
    }

    /// Reports a literal below 1; returns whether the value can be used.
    fn at_least_one(&mut self, name: &syn::Ident, value: &Expr) -> bool {
        match int_literal(value) {
            Some((negative, n)) if negative || n == 0 => {
                self.errors.push(syn::Error::new_spanned(
                    value,
                    format!("`{name}` must be at least 1"),
                ));
                false
            }
            _ => true,
        }
    }

    fn budget(&mut self, name: &syn::Ident, opt: Opt) -> Option<Budget> {
        match strip(&opt.value) {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Int(lit), ..
            }) => Some(Budget::Count(opt.span, lit.clone())),
            Expr::Lit(syn::ExprLit {
                lit: Lit::Float(lit),
                ..
            }) => match lit.base10_parse::<f64>() {
                Ok(rate) if rate > 0.0 && rate <= 1.0 => Some(Budget::Rate(opt.span, lit.clone())),
                _ => {
                    self.error(
                        lit.span(),
                        format!("`{name}` as a rate must be in (0, 1], found `{lit}`"),
                    );
                    None
                }
            },
            Expr::Unary(syn::ExprUnary {
                op: UnOp::Neg(_), ..
            }) if int_literal(&opt.value).is_some() || is_float_literal(&opt.value) => {
                self.errors.push(syn::Error::new_spanned(
                    &opt.value,
                    format!(
                        "`{name}` cannot be negative: give a count (`{name} = 0` allows no \
                         failure) or a rate in (0, 1]"
                    ),
                ));
                None
            }
            _ => Some(Budget::Expr(opt)),
        }
    }
}

fn order(opt: Opt) -> OrderValue {
    if let Expr::Path(p) = strip(&opt.value) {
        if p.qself.is_none() && p.path.segments.len() == 1 && p.path.leading_colon.is_none() {
            let ident = &p.path.segments[0].ident;
            if ident == "input" {
                return OrderValue::Input(ident.span());
            }
            if ident == "completion" {
                return OrderValue::Completion(ident.span());
            }
        }
    }
    OrderValue::Expr(opt)
}

fn example(what: &str) -> &'static str {
    match what {
        "the items" => "0..100",
        "a function" => "f",
        "the batch size" => "32",
        _ => "..",
    }
}

fn option_example(option: &str) -> &'static str {
    match option {
        "name" => "\"decode\"",
        "order" => "input",
        "max_failures" => "10",
        "executor" => "pool",
        "drop_last" => "true",
        "stop_timeout" | "report_interval" => "Duration::from_secs(1)",
        "stats" => "false",
        _ => "4",
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use quote::quote;

    fn check(tokens: proc_macro2::TokenStream) -> (Plan, Vec<String>) {
        let (plan, errors) = validate(parse(tokens));
        (plan, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_valid_pipeline_has_no_errors() {
        let (plan, errors) = check(quote! {
            source(0..10)
            -> pipe(f, concurrency = 2, order = input, max_failures = 3, buffer = 4, name = "f")
            -> pipe(try async g) -> aggregate(3, drop_last = true) -> disaggregate()
            -> sink(buffer = 2, num_threads = 2, max_failures = 0.5)
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.steps.len(), 4);
        assert!(matches!(
            plan.steps[1].step,
            Step::Pipe {
                shape: Shape::TryAsync,
                ..
            }
        ));
        assert_eq!(plan.steps[0].label, "stage 2 `f`");
        assert_eq!(plan.steps[1].label, "stage 3 `pipe(try async g)`");
    }

    #[test]
    fn builder_names_are_aliases() {
        let (plan, errors) = check(quote! {
            try_source(v) -> try_pipe_iter(f) -> pipe_opt_async(g) -> sink()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.source.unwrap().kind, SourceKind::Try);
        assert!(matches!(
            plan.steps[0].step,
            Step::Pipe {
                shape: Shape::TryFlat,
                ..
            }
        ));
        assert!(matches!(
            plan.steps[1].step,
            Step::Pipe {
                shape: Shape::OptAsync,
                ..
            }
        ));
    }

    #[test]
    fn typos_get_suggestions() {
        let (plan, errors) = check(quote! { source(x) -> pipee(f, concurency = 2) -> sink() });
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("did you mean `pipe`"));
        assert!(errors[1].contains("did you mean `concurrency`"));
        // Best effort: the stage is still there.
        assert_eq!(plan.steps.len(), 1);
    }

    #[test]
    fn structure_errors() {
        let cases: &[(proc_macro2::TokenStream, &str)] = &[
            (quote! {}, "empty pipeline"),
            (quote! { pipe(f) -> sink() }, "missing source"),
            (quote! { source(x) -> pipe(f) }, "missing sink"),
            (quote! { source(x) -> sink() -> pipe(f) }, "after the sink"),
            (
                quote! { source(x) -> source(y) -> sink() },
                "must be the first stage",
            ),
            (quote! { source(x) -> aggregate(0) -> sink() }, "at least 1"),
            (
                quote! { source(x) -> pipe(f, concurrency = -2) -> sink() },
                "at least 1",
            ),
            (
                quote! { source(x) -> pipe(async f, executor = p) -> sink() },
                "async",
            ),
            (
                quote! { source(x) -> pipe(f, buffer = 1, buffer = 2) -> sink() },
                "duplicate",
            ),
            (
                quote! { source(x) -> pipe(f, name =) -> sink() },
                "missing value",
            ),
            (
                quote! { source(x) -> pipe(opt flat f) -> sink() },
                "not a stage shape",
            ),
            (quote! { source(x) -> sink(max_failures = 1.5) }, "(0, 1]"),
            (
                quote! { source(x) -> pipe(flat f, order = input, concurrency = 4) -> sink() },
                "one-to-many",
            ),
            (
                quote! { source(x) -> pipe(f, drop_last = true) -> sink() },
                "option of `aggregate`",
            ),
        ];
        for (tokens, expected) in cases {
            let (_, errors) = check(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}: {errors:?}");
            assert!(errors[0].contains(expected), "{tokens}: {errors:?}");
        }
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("pipe", "pipe"), 0);
        assert_eq!(edit_distance("pip", "pipe"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("agregate", &["aggregate", "sink"]),
            Some("aggregate")
        );
        assert_eq!(suggest("zzz", &["aggregate", "sink"]), None);
    }
}
