//! The parent's side of a process stage: the body its lanes run, which sends each input to
//! the worker of the calling thread and reads the reply back as the function's return value.

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lane::{Body, Output};
use crate::executor::Executor;
use crate::failure::{BuildError, ItemError};
use crate::process::pool::{CallError, ProcessPool, StageCalls};
use crate::sync::lock;

/// Checks that `F` can be found by name in a worker: a registered, named `fn`.
pub(crate) fn check_registered<F>(stage: &str) -> Result<(), BuildError> {
    let key = std::any::type_name::<F>();
    if key.starts_with("fn(") {
        Err(BuildError::new(format!(
            "stage `{stage}`: a function pointer (`{key}`) cannot be found by name in a \
             worker process; pass the function itself (`process_pipe(decode)`)"
        )))
    } else if key.contains("{{closure}}") {
        Err(BuildError::new(format!(
            "stage `{stage}`: a closure cannot run in a worker process; write the stage as a \
             named `fn` and register it with `process_fn!`"
        )))
    } else {
        // Not registered, or registered as another kind: the registry says which, and how.
        crate::process::registry::check(key, crate::process::registry::Kind::Stage)
            .map_err(|e| BuildError::new(format!("stage `{stage}`: {e}")))
    }
}

/// The body of a process stage running registered function `F` (returning `R`) on the
/// pool in `executor`, with `shape` reading each reply; and the hook that releases the
/// stage's handle on the pool and kills the workers running one of the stage's calls when
/// the pipeline stops (a drop, `stop()`, a fatal stall) or the stage trips its failure
/// budget: a call stuck in a worker must not keep that worker from a pool the user goes on
/// using. The pool replaces a killed worker at once, and a pool only this pipeline held
/// ends all its workers.
pub(crate) fn process_body<T, R, U, F>(
    executor: Option<&Executor>,
    stage: &str,
    shape: fn(R) -> Output<U>,
) -> (Body<T, U>, Arc<dyn Fn() + Send + Sync>)
where
    T: Serialize + Send + 'static,
    R: DeserializeOwned + 'static,
    U: Send + 'static,
{
    let key = std::any::type_name::<F>();
    let pool = Arc::new(Mutex::new(match executor {
        Some(Executor::Processes(pool)) => Some(pool.clone()),
        _ => None,
    }));
    let calls = Arc::new(StageCalls::default());
    let release = {
        let (pool, calls) = (pool.clone(), calls.clone());
        Arc::new(move || {
            // The pool first: a call the kill ends then reads as a stop, not a failure.
            drop(lock(&pool).take());
            calls.stop();
        }) as Arc<dyn Fn() + Send + Sync>
    };
    let stage = stage.to_owned();
    let body = Body::Sync(Arc::new(move |item: T| {
        let slot = match lock(&pool).as_ref().map(ProcessPool::caller_slot) {
            None => return Output::Skip, // stopping
            Some(Ok(slot)) => slot,
            Some(Err(e)) => return Output::Fail(e.into()),
        };
        let result = match crate::process::encode(&item) {
            Ok(input) => {
                drop(item);
                slot.call(key, &input, &calls)
            }
            Err(e) => return Output::Fail(e.into()),
        };
        if lock(&pool).is_none() {
            return Output::Skip; // stopped while in flight: not a failure
        }
        match result {
            Ok(bytes) => match crate::process::decode::<R>(&bytes) {
                Ok(value) => shape(value),
                Err(e) => Output::Fail(e.into()),
            },
            Err(CallError::Panic(message)) => {
                Output::Fail(Box::new(ItemError::panic_message(&stage, message)))
            }
            Err(e) => Output::Fail(e.into()),
        }
    }));
    (body, release)
}
