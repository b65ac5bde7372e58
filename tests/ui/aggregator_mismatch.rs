use pipeline_runtime::{pipeline, Aggregator, BoxError};

/// Pairs of `T`: an aggregator of strings only.
struct Pairs<T>(Vec<T>);

impl<T: Send + 'static> Aggregator<T> for Pairs<T> {
    type Output = Vec<T>;

    fn accumulate(&mut self, item: T) -> Result<Option<Vec<T>>, BoxError> {
        self.0.push(item);
        Ok((self.0.len() == 2).then(|| std::mem::take(&mut self.0)))
    }

    fn flush(&mut self) -> Result<Option<Vec<T>>, BoxError> {
        Ok((!self.0.is_empty()).then(|| std::mem::take(&mut self.0)))
    }
}

fn main() {
    let _ = pipeline! { source(0..3u64) -> aggregate_with(Pairs::<String>(Vec::new())) -> sink() };
}
