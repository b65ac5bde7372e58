//! The source: an iterator pulled on its own thread (so a slow or blocking source never
//! stalls a stage), or a `Stream` polled on the async runtime.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{LaneGuard, StageCtx};
use crate::error::{BoxError, ItemError};
use crate::failure::StageFailureKind;
use crate::queue::{Msg, Tx};

/// One pass over the source's items.
pub(crate) type Pass<T> = Box<dyn Iterator<Item = Result<T, BoxError>> + Send>;

/// What a source produces: one pass, or a fresh pass per epoch (continuous mode).
pub(crate) enum SourceKind<T> {
    Once(Pass<T>),
    Continuous(Box<dyn FnMut() -> Pass<T> + Send>),
    Stream(BoxStream<'static, Result<T, BoxError>>),
}

/// Runs an iterator source on the calling thread until it ends, fails, or the pipeline stops.
pub(crate) fn run_iter_source<T: Send + 'static>(
    lane: LaneGuard,
    ctx: Arc<StageCtx>,
    kind: SourceKind<T>,
    tx: Tx<T>,
) {
    // A local, so that the stage ends before `tx` closes the queue.
    let _lane = lane;
    match kind {
        SourceKind::Once(pass) => {
            drain_pass(&ctx, pass, &tx);
        }
        SourceKind::Continuous(mut make_pass) => loop {
            let pass = match catch_unwind(AssertUnwindSafe(&mut make_pass)) {
                Ok(pass) => pass,
                Err(panic) => {
                    fail(&ctx, ItemError::panic(&ctx.name, panic.as_ref()));
                    return;
                }
            };
            if !drain_pass(&ctx, pass, &tx) || tx.send_blocking(Msg::EpochEnd).is_err() {
                return;
            }
        },
        SourceKind::Stream(_) => unreachable!("stream sources run on the async runtime"),
    }
}

/// Sends one pass downstream. Returns false if the source must end (failure, stop).
fn drain_pass<T>(ctx: &StageCtx, mut pass: Pass<T>, tx: &Tx<T>) -> bool {
    loop {
        if ctx.run.stop_requested() {
            return false;
        }
        match catch_unwind(AssertUnwindSafe(|| pass.next())) {
            Ok(Some(Ok(item))) => {
                if tx.send_blocking(Msg::Item(item)).is_err() {
                    return false;
                }
                ctx.counters.lane(0).record_outputs(1);
            }
            Ok(Some(Err(error))) => {
                fail(ctx, ItemError::from_error(&ctx.name, error));
                return false;
            }
            Ok(None) => return true,
            Err(panic) => {
                fail(ctx, ItemError::panic(&ctx.name, panic.as_ref()));
                return false;
            }
        }
    }
}

/// Polls a stream source until it ends, fails, or the pipeline stops.
pub(crate) async fn run_stream_source<T: Send + 'static>(
    lane: LaneGuard,
    ctx: Arc<StageCtx>,
    mut stream: BoxStream<'static, Result<T, BoxError>>,
    tx: Tx<T>,
) {
    let _lane = lane;
    loop {
        if ctx.run.stop_requested() {
            return;
        }
        match AssertUnwindSafe(stream.next()).catch_unwind().await {
            Ok(Some(Ok(item))) => {
                if tx.send(Msg::Item(item)).await.is_err() {
                    return;
                }
                ctx.counters.lane(0).record_outputs(1);
            }
            Ok(Some(Err(error))) => return fail(&ctx, ItemError::from_error(&ctx.name, error)),
            Ok(None) => return,
            Err(panic) => return fail(&ctx, ItemError::panic(&ctx.name, panic.as_ref())),
        }
    }
}

fn fail(ctx: &StageCtx, error: ItemError) {
    ctx.fail_stage(StageFailureKind::Source(error));
}
