use std::rc::Rc;

use pipeline_runtime::pipeline;

fn wrap(x: u32) -> Rc<u32> {
    Rc::new(x)
}

fn main() {
    let _ = pipeline! { source(0..10u32) -> pipe(wrap) -> sink() };
}
