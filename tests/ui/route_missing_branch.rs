use pipeline_runtime::pipeline;

enum Kind {
    Jpeg,
    Png,
}

fn kind_of(x: &u32) -> Kind {
    if x % 2 == 0 { Kind::Jpeg } else { Kind::Png }
}

fn main() {
    let _ = pipeline! {
        source(0..10u32)
        -> route(kind_of, { Kind::Jpeg => pipe(|x: u32| x) })
        -> sink()
    };
}
