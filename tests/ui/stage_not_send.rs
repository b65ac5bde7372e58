use std::rc::Rc;

use pipeline_runtime::pipeline;

fn main() {
    let offset = Rc::new(1u32);
    let _ = pipeline! { source(0..10u32) -> pipe(move |x| x + *offset) -> sink() };
}
