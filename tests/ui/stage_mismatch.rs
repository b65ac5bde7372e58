use std::path::PathBuf;

use pipeline_runtime::pipeline;

fn read(path: PathBuf) -> String {
    path.display().to_string()
}

fn decode(bytes: Vec<u8>) -> usize {
    bytes.len()
}

fn main() {
    let paths = vec![PathBuf::from("a"), PathBuf::from("b")];
    let _ = pipeline! {
        source(paths)
        -> pipe(read, concurrency = 4)
        -> pipe(decode, name = "decode")
        -> sink()
    };
}
