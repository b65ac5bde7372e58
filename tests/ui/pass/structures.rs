use pipeline_runtime::pipeline;

fn main() {
    let p = pipeline! {
        merge(
            source(0..4u32) -> pipe(|x: u32| x * 10),
            source(100..102u32),
            policy = round_robin,
            name = "mix",
        )
        -> route(|x: &u32| *x >= 100, {
            true => pipe(|x: u32| x + 1),
            false => pipe(|x: u32| x) -> pipe(|x: u32| x * 2, concurrency = 2),
        })
        -> sink()
    }
    .unwrap();
    let mut got: Vec<u32> = p.map(Result::unwrap).collect();
    got.sort();
    assert_eq!(got, [0, 20, 40, 60, 101, 102]);
}
