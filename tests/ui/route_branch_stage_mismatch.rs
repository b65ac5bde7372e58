use pipeline_runtime::pipeline;

fn decode(bytes: Vec<u8>) -> usize {
    bytes.len()
}

fn main() {
    let _ = pipeline! {
        source(0..10u32)
        -> route(|x: &u32| x % 2, {
            0 => pipe(|x: u32| x as usize),
            _ => pipe(decode),
        })
        -> sink()
    };
}
