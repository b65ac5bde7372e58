//! Property tests: no input makes parse → validate → expand panic; every outcome is a checked
//! pipeline (valid input) or at least one spanned error (invalid input), and the expansion is
//! always well-formed tokens.

use std::str::FromStr;

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use proptest::prelude::*;

use crate::parse::parse;
use crate::stages::KINDS;
use crate::validate::validate;

/// Fragments besides the vocabulary of the stage kinds: a typo, words that mean something in
/// some place, and noise, so that random sequences hit the interesting paths (stage names,
/// modifiers, options, arrows, literals) often.
const OTHER_FRAGMENTS: &[&str] = &[
    "pipee",
    "move",
    "input",
    "completion",
    "->",
    "-",
    ">",
    "=",
    "==",
    "=>",
    ",",
    ";",
    ":",
    "::",
    "|",
    "||",
    "&",
    "*",
    ".",
    "..",
    "0",
    "1",
    "-1",
    "32",
    "0.5",
    "1.5",
    "\"decode\"",
    "'a'",
    "x",
    "f",
    "self",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "|x|",
    "|x: u32|",
    "Vec::<u8>::new",
    "#",
    "!",
    "?",
    "@",
    "$",
    // The structures' own words and punctuation.
    "weighted",
    "round_robin",
    "as_available",
    "custom",
    "seed",
    "rank",
    "stop",
    "restart",
    "continue",
    "Kind::Png",
    "_",
    "true",
    "{ Kind::Jpeg => pipe(f), _ => pipe(g) -> pipe(h) }",
    "source(a) -> pipe(f)",
    "[0.7, 0.3]",
];

/// Every stage name, modifier and option name from the registry (so that a new stage kind is
/// fuzzed too), then [`OTHER_FRAGMENTS`].
fn fragments() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let mut add = |word: &'static str| {
        if !out.contains(&word) {
            out.push(word);
        }
    };
    for (name, ..) in KINDS.names() {
        add(name);
    }
    for kind in KINDS.iter() {
        kind.modifiers.iter().for_each(|m| add(m.word));
        kind.options.iter().for_each(|o| add(o.name));
    }
    OTHER_FRAGMENTS.iter().for_each(|f| add(f));
    out
}

fn fragment() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(fragments())
}

/// Random fragment sequences; unbalanced delimiters do not lex and are skipped.
fn random_tokens() -> impl Strategy<Value = TokenStream> {
    proptest::collection::vec(fragment(), 0..40).prop_filter_map("does not lex", |parts| {
        TokenStream::from_str(&parts.join(" ")).ok()
    })
}

/// Valid pipelines, from which mutations start.
const VALID: &[&str] = &[
    "source(0..10) -> pipe(f, concurrency = 4) -> sink()",
    "source(paths) -> pipe(read, concurrency = 32) -> pipe(async fetch, concurrency = 64) \
     -> pipe(decode, executor = pool, name = \"decode\") -> aggregate(32, drop_last = true) \
     -> pipe(to_device, executor = gpu) -> sink(buffer = 4)",
    "source(try items) -> pipe(try flat |x: u32| vec![Ok(x)], order = input) \
     -> aggregate_with(Sums::new(), name = \"sums\") -> disaggregate() \
     -> sink(num_threads = 2, max_failures = 0.5, stop_timeout = Duration::from_secs(1))",
    "source(continuous v) -> pipe(opt async g) -> pipe(async flat s) -> sink",
    "source(paths) -> pipe(read) -> process_region(decode_region, executor = pool, buffer = 4) \
     -> process_region(more::stages, name = \"more\", executor = pools[1]) -> pipe(to_gpu) \
     -> sink()",
    "merge(source(a) -> pipe(f), source(b), policy = weighted([0.7, 0.3], seed = 7), \
     on_end = continue, name = \"mix\") -> pipe(g) -> sink()",
    "merge(source(a), merge(source(b), source(c)) -> pipe(f), policy = round_robin, \
     on_end = stop) -> sink(buffer = 2)",
    "source(x) -> route(kind_of, { Kind::Jpeg => pipe(decode_jpeg, concurrency = 4), \
     Kind::Png => pipe(decode_png) -> pipe(fix), _ => route(k, { 0 => pipe(a), _ => pipe(b) }) }) \
     -> sink()",
    "source(x) -> aggregate(8) -> route(batched |e: &u32| *e > 3, { true => pipe(f), \
     false => pipe(g) -> pipe(h) }) -> disaggregate() -> sink()",
];

/// A mutation of a token list: delete, duplicate, swap, or replace a token, or wrap a range
/// in a group, recursively into groups.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Replace(usize, &'static str),
    Wrap(usize, usize, u8),
    Descend(usize, Box<Mutation>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let leaf = prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), fragment()).prop_map(|(a, f)| Mutation::Replace(a, f)),
        (any::<usize>(), any::<usize>(), 0u8..3).prop_map(|(a, b, d)| Mutation::Wrap(a, b, d)),
    ];
    leaf.prop_recursive(3, 8, 1, |inner| {
        (any::<usize>(), inner).prop_map(|(i, m)| Mutation::Descend(i, Box::new(m)))
    })
}

fn apply(tokens: TokenStream, m: &Mutation) -> TokenStream {
    let mut tts: Vec<TokenTree> = tokens.into_iter().collect();
    if tts.is_empty() {
        return TokenStream::new();
    }
    let n = tts.len();
    match m {
        Mutation::Delete(i) => {
            tts.remove(i % n);
        }
        Mutation::Duplicate(i) => {
            let tt = tts[i % n].clone();
            tts.insert(i % n, tt);
        }
        Mutation::Swap(a, b) => tts.swap(a % n, b % n),
        Mutation::Replace(i, f) => {
            if let Ok(ts) = TokenStream::from_str(f) {
                let i = i % n;
                tts.splice(i..=i, ts);
            }
        }
        Mutation::Wrap(a, b, d) => {
            let (lo, hi) = ((a % n).min(b % n), (a % n).max(b % n));
            let inner: TokenStream = tts[lo..=hi].iter().cloned().collect();
            let delim = match d {
                0 => Delimiter::Parenthesis,
                1 => Delimiter::Bracket,
                _ => Delimiter::Brace,
            };
            tts.splice(lo..=hi, [TokenTree::Group(Group::new(delim, inner))]);
        }
        Mutation::Descend(i, inner) => {
            let i = i % n;
            if let TokenTree::Group(g) = &tts[i] {
                let mut new = Group::new(g.delimiter(), apply(g.stream(), inner));
                new.set_span(g.span());
                tts[i] = TokenTree::Group(new);
            }
        }
    }
    tts.into_iter().collect()
}

fn mutated_tokens() -> impl Strategy<Value = TokenStream> {
    (
        proptest::sample::select(VALID),
        proptest::collection::vec(mutation(), 1..5),
    )
        .prop_map(|(source, mutations)| {
            let mut tokens = TokenStream::from_str(source).expect("valid pipelines lex");
            for m in &mutations {
                tokens = apply(tokens, m);
            }
            tokens
        })
}

/// The property: no panic; errors carry a message; with no error there is a source and a
/// sink; the expansion re-lexes (it is made of well-formed tokens).
fn check(tokens: TokenStream) -> Result<(), TestCaseError> {
    let text = tokens.to_string();
    let (pipeline, errors) = validate(parse(tokens.clone(), KINDS));
    for e in &errors {
        prop_assert!(!e.to_string().is_empty(), "empty message for {text}");
    }
    if errors.is_empty() {
        prop_assert!(pipeline.source.is_some(), "no error but no source: {text}");
        prop_assert!(pipeline.sink.is_some(), "no error but no sink: {text}");
    }
    let out = crate::expand::expand(&pipeline, &errors);
    prop_assert!(
        TokenStream::from_str(&out.to_string()).is_ok(),
        "expansion does not lex for {text}"
    );
    prop_assert_eq!(
        out.to_string().matches("compile_error").count(),
        errors.len(),
        "one compile_error per error for {}",
        text
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_tokens_never_panic(tokens in random_tokens()) {
        check(tokens)?;
    }

    #[test]
    fn mutated_pipelines_never_panic(tokens in mutated_tokens()) {
        check(tokens)?;
    }
}

/// A `process_region` stage between two `pipe`s: its function (a path, or something that
/// is not one) and a subset of its options, in any order.
fn region_stage() -> impl Strategy<Value = (String, bool, bool)> {
    let func = prop_oneof![
        Just(("decode_region", true)),
        Just(("regions::decode", true)),
        Just(("|s| s.aggregate(2)", false)),
        Just(("make_region()", false)),
    ];
    let options =
        proptest::sample::subsequence(vec!["executor = pool", "name = \"r\"", "buffer = 2"], 0..=3)
            .prop_shuffle();
    (func, options).prop_map(|((func, is_path), options)| {
        let has_executor = options.contains(&"executor = pool");
        let args = std::iter::once(func)
            .chain(options)
            .collect::<Vec<_>>()
            .join(", ");
        (
            format!("source(x) -> pipe(f) -> process_region({args}) -> pipe(g) -> sink()"),
            is_path,
            has_executor,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// A region is accepted exactly when it names a fn and has an executor; each mistake is
    /// one error, and the expansion checks the region's boundary types either way.
    #[test]
    fn region_stages_are_checked((text, is_path, has_executor) in region_stage()) {
        let tokens = TokenStream::from_str(&text).unwrap();
        check(tokens.clone())?;
        let (pipeline, errors) = validate(parse(tokens, KINDS));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        prop_assert_eq!(
            messages.iter().filter(|m| m.contains("find it by name")).count(),
            usize::from(!is_path),
            "{}: {:?}", text, messages
        );
        prop_assert_eq!(
            messages.iter().filter(|m| m.contains("add `executor = pool`")).count(),
            usize::from(!has_executor),
            "{}: {:?}", text, messages
        );
        prop_assert_eq!(errors.len(), usize::from(!is_path) + usize::from(!has_executor));
        let out = crate::expand::expand(&pipeline, &errors).to_string();
        prop_assert!(out.contains("__PipelineRegionInput"), "{}", out);
        prop_assert!(out.contains(". process_region (f)"), "{}", out);
    }
}

#[test]
fn the_valid_seeds_are_valid() {
    for source in VALID {
        let (_, errors) = validate(parse(TokenStream::from_str(source).unwrap(), KINDS));
        assert!(errors.is_empty(), "{source}: {errors:?}");
    }
}
