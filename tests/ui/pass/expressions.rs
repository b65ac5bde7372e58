//! Stage arguments are ordinary Rust expressions: method calls that return functions,
//! function-valued variables, blocks, generic functions, paths with turbofish, and
//! functions whose names are modifier words (`flat`, `opt`, `stream`).

use pipeline_runtime::pipeline;

struct Scaler {
    factor: u32,
}

impl Scaler {
    fn stage(&self) -> impl Fn(u32) -> u32 + Send + Sync + 'static {
        let factor = self.factor;
        move |x| x * factor
    }
}

fn flat(x: u32) -> u32 {
    x + 1
}

fn opt(x: u32) -> u32 {
    x
}

fn build(scaler: &Scaler, n: u32) -> pipeline_runtime::Pipeline<String> {
    let to_text: fn(u32) -> String = |x| x.to_string();
    pipeline! {
        source((0..n).map(|x| x + 1))
        -> pipe(scaler.stage(), concurrency = 1 + 1, order = input)
        -> pipe(flat)
        -> pipe(opt, name = format!("opt-{n}"))
        -> pipe({ let add = 10; move |x: u32| x + add })
        -> pipe(std::convert::identity::<u32>)
        -> pipe(to_text)
        -> sink(buffer = if n > 2 { 2 } else { 1 })
    }
    .expect("valid pipeline")
}

fn main() {
    let out: Vec<String> = build(&Scaler { factor: 3 }, 3).map(Result::unwrap).collect();
    assert_eq!(out, vec!["14", "17", "20"]);
}
