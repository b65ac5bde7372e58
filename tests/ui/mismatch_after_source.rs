use pipeline_runtime::pipeline;

fn shout(text: String) -> String {
    text.to_uppercase()
}

fn main() {
    let _ = pipeline! { source(0..10u32) -> pipe(shout) -> sink() };
}
