use pipeline_runtime::pipeline;

enum Kind {
    Jpeg,
    Png,
}

fn kind_of(x: &u32) -> Kind {
    if x % 2 == 0 { Kind::Jpeg } else { Kind::Png }
}

fn decode_jpeg(x: u32) -> Vec<u8> {
    vec![x as u8]
}

fn decode_png(x: u32) -> String {
    x.to_string()
}

fn main() {
    let _ = pipeline! {
        source(0..10u32)
        -> route(kind_of, {
            Kind::Jpeg => pipe(decode_jpeg),
            Kind::Png => pipe(decode_png),
        })
        -> sink()
    };
}
