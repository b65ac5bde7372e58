//! The source: an iterator pulled on its own thread (so a slow or blocking source never
//! stalls a stage), or a `Stream` polled on the async runtime.
//!
//! The source numbers the items it sends (their position in its order, from the start of
//! the epoch it began in) and sends each with its position as its tag. Resuming, it skips
//! the epochs before the state's and the positions the state says were resolved.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use crate::failure::BoxError;
use crate::failure::ItemError;
use crate::failure::StageFailureKind;
use crate::memory::{Admission, MemoryLimit, SizeFn};
use crate::queue::{Msg, Tx};
use crate::resume::numbering::{skip_items, Numbering, SourceBooks};
use crate::resume::{ResumeState, Tag};
use crate::stage::{OneLane, StageCtx};

/// One pass over the source's items.
pub(crate) type Pass<T> = Box<dyn Iterator<Item = Result<T, BoxError>> + Send>;

/// What a source produces: one pass, or a fresh pass per epoch (continuous mode).
pub(crate) enum SourceKind<T> {
    Once(Pass<T>),
    Continuous(Box<dyn FnMut() -> Pass<T> + Send>),
    Stream(BoxStream<'static, Result<T, BoxError>>),
}

/// A user's iterator as a pass: each item wrapped in `Ok`, with `nth` and `size_hint`
/// forwarded (so that resuming skips an indexed iterator in O(1); `map(Ok)` would not).
pub(crate) struct Oks<I>(pub(crate) I);

impl<I: Iterator> Iterator for Oks<I> {
    type Item = Result<I::Item, BoxError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(Ok)
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.0.nth(n).map(Ok)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A user's iterator of `Result`s as a pass (errors boxed), forwarding `nth` and `size_hint`.
pub(crate) struct BoxedErrors<I>(pub(crate) I);

impl<I, T, E> Iterator for BoxedErrors<I>
where
    I: Iterator<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    type Item = Result<T, BoxError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|r| r.map_err(Into::into))
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.0.nth(n).map(|r| r.map_err(Into::into))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// The memory limit the source admits its items into, and their size function.
pub(crate) struct Admit<T> {
    pub(crate) memory: Arc<MemoryLimit>,
    pub(crate) size: SizeFn<T>,
}

impl<T> Admit<T> {
    /// The bytes of `item`, or the source's error if it can never fit.
    fn bytes(&self, ctx: &StageCtx, item: &T) -> Result<u64, ()> {
        match catch_unwind(AssertUnwindSafe(|| (self.size)(item))) {
            Ok(bytes) => Ok(bytes as u64),
            Err(panic) => {
                fail(ctx, ItemError::panic(&ctx.name, panic.as_ref()));
                Err(())
            }
        }
    }

    /// The outcome of an admission: true to send the item on.
    fn admitted(&self, ctx: &StageCtx, outcome: Admission, bytes: u64) -> bool {
        match outcome {
            Admission::Admitted => true,
            Admission::Stopped => false,
            Admission::TooLarge => {
                let message = format!(
                    "an item of {bytes} bytes is larger than the whole memory_limit of {} \
                     bytes, so it can never be admitted: raise memory_limit above the largest \
                     item, or split such items",
                    self.memory.limit()
                );
                fail(ctx, ItemError::from_error(&ctx.name, message.into()));
                false
            }
        }
    }

    /// Waits (on this thread) until `item` fits; false if the source must end.
    fn admit_blocking(&self, ctx: &StageCtx, pos: u64, item: &T) -> bool {
        let Ok(bytes) = self.bytes(ctx, item) else {
            return false;
        };
        let outcome = self.memory.admit_blocking(pos, bytes);
        self.admitted(ctx, outcome, bytes)
    }

    /// Waits (in async code) until `bytes` fit; false if the source must end.
    async fn admit(&self, ctx: &StageCtx, pos: u64, bytes: u64) -> bool {
        let outcome = self.memory.admit(pos, bytes).await;
        self.admitted(ctx, outcome, bytes)
    }
}

/// Runs an iterator source on the calling thread until it ends, fails, or the pipeline stops;
/// its positions' keys start at `base`.
pub(crate) fn run_iter_source<T: Send + 'static>(
    lane: OneLane<T>,
    kind: SourceKind<T>,
    (base, resume): (u64, Option<ResumeState>),
    admit: Option<Admit<T>>,
) {
    let admit = admit.as_ref();
    let OneLane {
        guard,
        ctx,
        output: tx,
    } = lane;
    // Declared last, so that the stage ends before `tx` closes the queue.
    let _lane = guard;
    let mut numbering = resume
        .as_ref()
        .map_or_else(Numbering::fresh, Numbering::resumed);
    let first_pass = resume.as_ref().map_or(0, ResumeState::epoch);
    let mut books = SourceBooks::new(ctx.ledger.clone(), ctx.accounts.clone(), first_pass, base);
    match kind {
        SourceKind::Once(pass) => {
            drain_pass(&ctx, pass, &tx, &mut numbering, &books, admit);
        }
        SourceKind::Continuous(mut make_pass) => {
            let mut pass_no = 0u64;
            loop {
                if ctx.run.stop_requested() {
                    return;
                }
                let pass = match catch_unwind(AssertUnwindSafe(&mut make_pass)) {
                    Ok(pass) => pass,
                    Err(panic) => {
                        fail(&ctx, ItemError::panic(&ctx.name, panic.as_ref()));
                        return;
                    }
                };
                if pass_no < first_pass {
                    // An epoch the resumed state is past: made (a source that counts its
                    // passes counts it) and not read.
                    pass_no += 1;
                    continue;
                }
                if pass_no > first_pass {
                    books.pass_started(pass_no, numbering.next_pos());
                }
                if !drain_pass(&ctx, pass, &tx, &mut numbering, &books, admit)
                    || tx.send_blocking(Msg::EpochEnd).is_err()
                {
                    return;
                }
                pass_no += 1;
            }
        }
        SourceKind::Stream(_) => unreachable!("stream sources run on the async runtime"),
    }
}

/// Sends one pass downstream. Returns false if the source must end (failure, stop).
fn drain_pass<T>(
    ctx: &StageCtx,
    mut pass: Pass<T>,
    tx: &Tx<T>,
    numbering: &mut Numbering,
    books: &SourceBooks,
    admit: Option<&Admit<T>>,
) -> bool {
    loop {
        if ctx.run.stop_requested() {
            return false;
        }
        let skip = numbering.to_skip();
        if skip > 0 {
            match skip_resolved(ctx, &mut pass, numbering, skip) {
                Some(keep_going) => return keep_going,
                None => continue,
            }
        }
        match catch_unwind(AssertUnwindSafe(|| pass.next())) {
            Ok(Some(Ok(item))) => {
                let pos = books.taken(numbering.take());
                if admit.is_some_and(|a| !a.admit_blocking(ctx, pos, &item)) {
                    return false;
                }
                if tx.send_blocking(Msg::Item(item, Tag::pos(pos))).is_err() {
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

/// Resuming: skips `skip` items the state resolved. `None` to go on with the pass,
/// `Some(keep_going)` if it ended among them (or failed).
#[cold]
#[inline(never)]
fn skip_resolved<T>(
    ctx: &StageCtx,
    pass: &mut Pass<T>,
    numbering: &mut Numbering,
    skip: u64,
) -> Option<bool> {
    match catch_unwind(AssertUnwindSafe(|| skip_items(pass, skip))) {
        Ok(skipped) => {
            numbering.skipped(skipped);
            // Fewer: the pass ended among the skipped items.
            (skipped < skip).then_some(true)
        }
        Err(panic) => {
            fail(ctx, ItemError::panic(&ctx.name, panic.as_ref()));
            Some(false)
        }
    }
}

/// Polls a stream source until it ends, fails, or the pipeline stops.
pub(crate) async fn run_stream_source<T: Send + 'static>(
    lane: OneLane<T>,
    mut stream: BoxStream<'static, Result<T, BoxError>>,
    (base, resume): (u64, Option<ResumeState>),
    admit: Option<Admit<T>>,
) {
    let OneLane {
        guard,
        ctx,
        output: tx,
    } = lane;
    // Declared last, so that the stage ends before `tx` closes the queue.
    let _lane = guard;
    let mut numbering = resume
        .as_ref()
        .map_or_else(Numbering::fresh, Numbering::resumed);
    let books = SourceBooks::new(
        ctx.ledger.clone(),
        ctx.accounts.clone(),
        resume.as_ref().map_or(0, ResumeState::epoch),
        base,
    );
    loop {
        if ctx.run.stop_requested() {
            return;
        }
        match AssertUnwindSafe(stream.next()).catch_unwind().await {
            Ok(Some(_)) if numbering.to_skip() > 0 => numbering.skipped(1),
            Ok(Some(Ok(item))) => {
                let pos = books.taken(numbering.take());
                if let Some(admit) = &admit {
                    let Ok(bytes) = admit.bytes(&ctx, &item) else {
                        return;
                    };
                    if !admit.admit(&ctx, pos, bytes).await {
                        return;
                    }
                }
                if tx.send(Msg::Item(item, Tag::pos(pos))).await.is_err() {
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
