//! The parent's side of a process region: one thread per worker of the pool, each running
//! the region on its worker (the stage worker's channel, taken over for the region's run).
//!
//! Items are handed out as workers take them: each worker's sending thread takes the next
//! input from the region's input queue whenever its pipe to the worker has room, so a
//! faster worker takes more. Each worker's nested pipeline forms its own batches, in the
//! order its inputs reached it; outputs are passed on as they come back (completion order
//! across workers).
//!
//! Epoch boundaries (after a continuous source) go to every worker: a worker is sent a
//! boundary after every input of the epoch it was sent, and its nested pipeline passes it
//! back once every output of that epoch is out. The boundary goes on downstream once every
//! worker has passed it; until then a worker that has passed it is not read from, so that
//! no output of the next epoch comes before it.
//!
//! A worker that dies fails the inputs it held: those it was sent and had not reported done
//! with (delivered, failed or dropped inside the region). The slot is refilled with a new
//! worker and the region goes on there. Stopping kills the workers still running the
//! region, which ends every thread here.
//!
//! With a ledger (resume tracking, the memory budget, the accounts), each input sent keeps
//! its tag here under an id; an output that comes back holds a token of each input it
//! stands for (several, a group: a batch made inside), and an input's own token goes when
//! the worker reports it resolved. So a position is resolved when the last of the region's
//! outputs for it is delivered, fails or is dropped downstream, as through any stage. With
//! resume tracking, the outputs of one `flat_pipe` on the region's own inputs are named by
//! (input, index) and tracked one by one here; the indices resolved before a resume go to
//! the worker with the input (see `RegionFanOut` for what else is refused).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::block_on::block_on_until;
use crate::failure::BoxError;
use crate::failure::{BuildError, ItemError};
use crate::failure::{RemotePipelineError, StageFailureKind};
use crate::launch::{Launch, LaunchFn};
use crate::process::channel::{decode, encode, Channel, FrameReader, FrameWriter};
use crate::process::pool::{CallError, Slot};
use crate::process::region::{read_pairs, read_resolved, write_pairs, FROM_RESOLVED, WHOLE};
use crate::process::region::{
    Progress, RegionStart, FROM_DONE, FROM_FAILED, FROM_ITEM, FROM_LOST, FROM_READY, FROM_REFUSED,
    FROM_STATS, FROM_TAKEN, TO_END, TO_ITEM, WINDOW,
};
use crate::process::region::{FROM_EPOCH, TO_EPOCH};
use crate::process::stage_worker::request_header;
use crate::process::ProcessPool;
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::Outcome;
use crate::resume::ledger::Ledger;
use crate::resume::Tag;
use crate::run_state::RunState;
use crate::stage::StageCtx;
use crate::stats::{QueueCounters, QueueEntry, RemoteCounts, StageKind};
use crate::sync::lock;

/// How long a sending thread waits for an input before it looks whether to quit.
const POLL: Duration = Duration::from_millis(50);

/// One stage inside a region, as the parent's statistics show it.
#[derive(Debug, Clone)]
pub(crate) struct InnerStage {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    pub(crate) concurrency: usize,
}

/// A region, once its options are fixed.
pub(crate) struct RegionPlan {
    /// The registry key of the region's fn.
    pub(crate) key: &'static str,
    /// For messages.
    pub(crate) name: String,
    pub(crate) pool: ProcessPool,
    pub(crate) stages: Vec<InnerStage>,
    /// Capacity of the queue in front of the region.
    pub(crate) buffer: Option<usize>,
    /// Epoch boundaries come through (a continuous source).
    pub(crate) continuous: bool,
    /// Whether a stage inside gives several outputs per input, and if so whether resume
    /// tracking can follow them.
    pub(crate) fan_out: RegionFanOut,
}

/// The one-to-many stages inside a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionFanOut {
    None,
    /// One `flat_pipe` whose inputs are the region's: tracked one by one like the parent's.
    Tracked,
    /// Others (a `disaggregate`, a flat stage after a batch, several): why they are not.
    Untracked(&'static str),
}

/// Where each worker stands in the epochs.
struct Epochs {
    /// Boundaries each slot's workers have passed back (`u64::MAX` once the slot is done).
    passed: Vec<u64>,
    /// Boundaries passed on downstream.
    emitted: u64,
}

/// What the region's threads share.
struct Region<T, U> {
    key: &'static str,
    name: String,
    input: Rx<T>,
    output: Tx<U>,
    stages: Vec<Arc<StageCtx>>,
    start: RegionStart,
    run: Arc<RunState>,
    stopping: AtomicBool,
    /// Whether each slot's worker is running the region now (stop kills those).
    busy: Vec<AtomicBool>,
    /// The pool, until the pipeline stops (so that a pool only the pipeline holds ends
    /// its workers then).
    pool: Mutex<Option<ProcessPool>>,
    /// Boundaries taken from the input; in continuous mode receiving holds the lock, so
    /// that an input is never seen before the boundary that came before it.
    gate: Mutex<u64>,
    boundaries: AtomicU64,
    epochs: Mutex<Epochs>,
    epoch_moved: Condvar,
}

/// Per worker run: inputs sent, inputs the worker's nested pipeline has taken, and inputs
/// it reported done with; with a ledger, the tags of the inputs sent and not yet resolved,
/// by their ids.
#[derive(Default)]
struct Books {
    taken: AtomicU64,
    resolved: AtomicU64,
    credited: Mutex<u64>,
    room: Condvar,
    tags: Mutex<HashMap<u64, Tag>>,
}

impl Books {
    /// Waits (up to `POLL`) until fewer than `WINDOW` inputs are on their way; false if
    /// there is still no room.
    fn wait_for_room(&self) -> bool {
        let credited = lock(&self.credited);
        let full = |c: &mut u64| self.taken.load(Ordering::Acquire).saturating_sub(*c) >= WINDOW;
        let (credited, _) = self
            .room
            .wait_timeout_while(credited, POLL, full)
            .unwrap_or_else(|e| e.into_inner());
        self.taken.load(Ordering::Acquire).saturating_sub(*credited) < WINDOW
    }

    fn credit(&self, taken: u64) {
        *lock(&self.credited) = taken;
        self.room.notify_all();
    }
}

/// The launch function of a process region.
pub(crate) fn launch_region<T, U>(prev: LaunchFn<T>, plan: RegionPlan) -> LaunchFn<U>
where
    T: Serialize + Send + 'static,
    U: DeserializeOwned + Send + 'static,
{
    Box::new(move |l: &mut Launch, out_cap| {
        let input = prev(l, plan.buffer.unwrap_or(l.queue_capacity))?;
        let tracked = l.ledger.as_ref().is_some_and(|l| l.tracks_outputs());
        match plan.fan_out {
            RegionFanOut::None => {}
            RegionFanOut::Untracked(why) if tracked => {
                return Err(BuildError::new(format!(
                    "process region `{}`: resume tracking follows the outputs of one \
                     `flat_pipe` on the region's own inputs, not {why}; move that stage out \
                     of the region (before or after it), or turn `track_resume`/`resume_from` \
                     off",
                    plan.name
                )));
            }
            _ => l.fan_out(&plan.name)?,
        }
        let workers = plan.pool.num_workers();
        let mut stages = Vec::with_capacity(plan.stages.len());
        let mut output = None;
        for (i, s) in plan.stages.iter().enumerate() {
            let scope = l.scope(None);
            let ctx = l.stage(s.name.clone(), s.kind, s.concurrency * workers, scope);
            if i + 1 == plan.stages.len() {
                output = Some(l.queue::<U>(&ctx.name, out_cap));
            } else if l.stats {
                // The queue between two stages of the region lives in the workers; this
                // entry stands for it so that the statistics' queues follow their stages.
                // Written by this stage, read by the region's next one, made next.
                let writer = l.stages.len() - 1;
                l.queues.push(QueueEntry {
                    writer: Some(writer),
                    reader: Some(writer + 1),
                    after: ctx.name.clone(),
                    capacity: l.queue_capacity,
                    counters: Arc::new(QueueCounters::new()),
                    len: Box::new(|| None),
                });
            }
            stages.push(ctx);
        }
        let Some((tx, out_rx)) = output else {
            return Err(BuildError::new(format!(
                "process region `{}` has no stages",
                plan.name
            )));
        };
        let slots = plan.pool.slots().to_vec();
        let region = Arc::new(Region {
            key: plan.key,
            name: plan.name,
            input,
            output: tx,
            stages,
            start: RegionStart {
                num_threads: l.default_pool.num_threads(),
                queue_capacity: l.queue_capacity,
                continuous: plan.continuous,
                trace: l.ledger.is_some(),
                outputs: tracked,
            },
            run: l.run.clone(),
            stopping: AtomicBool::new(false),
            busy: slots.iter().map(|_| AtomicBool::new(false)).collect(),
            pool: Mutex::new(Some(plan.pool)),
            gate: Mutex::new(0),
            boundaries: AtomicU64::new(0),
            epochs: Mutex::new(Epochs {
                passed: vec![0; workers],
                emitted: 0,
            }),
            epoch_moved: Condvar::new(),
        });
        {
            // Weak: the region's output closes when its last thread ends.
            let region = Arc::downgrade(&region);
            let slots = slots.clone();
            l.run.on_stop(Box::new(move || {
                if let Some(region) = region.upgrade() {
                    region.stop(&slots);
                }
            }));
        }
        for (index, slot) in slots.into_iter().enumerate() {
            for ctx in &region.stages {
                ctx.lanes_starting(1);
            }
            let guards: Vec<_> = region.stages.iter().map(|c| c.lane_guard()).collect();
            let worker_region = region.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pipeline-region-{index}"))
                .spawn(move || {
                    worker_region.serve(index, &slot);
                    // The stages end before the output can close.
                    drop(guards);
                    drop(worker_region);
                });
            match thread {
                Ok(thread) => l.run.register_thread(thread),
                Err(e) => {
                    return Err(BuildError::new(format!(
                        "cannot start a process region thread: {e}"
                    )))
                }
            }
        }
        Ok(out_rx)
    })
}

impl<T: Serialize + Send + 'static, U: DeserializeOwned + Send + 'static> Region<T, U> {
    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
            || self.run.stop_requested()
            || self.stages.iter().any(|s| s.should_stop())
    }

    /// On stop: kills the workers running the region and lets go of the pool.
    fn stop(&self, slots: &[Arc<Slot>]) {
        self.stopping.store(true, Ordering::Release);
        for (slot, busy) in slots.iter().zip(&self.busy) {
            if busy.load(Ordering::Acquire) {
                slot.kill_worker();
            }
        }
        drop(lock(&self.pool).take());
    }

    /// Runs the region on slot `index`'s worker until the input ends, replacing the worker
    /// each time it dies.
    fn serve(&self, index: usize, slot: &Slot) {
        while !self.stopped() {
            let books = Books::default();
            self.busy[index].store(true, Ordering::Release);
            if self.stopping.load(Ordering::Acquire) {
                self.busy[index].store(false, Ordering::Release);
                break;
            }
            let result = slot.run_exclusive(|channel| self.drive(index, channel, &books));
            self.busy[index].store(false, Ordering::Release);
            match result {
                Ok(()) => break,
                Err(CallError::WorkerDied(how)) => {
                    if self.stopped() {
                        break; // killed by the stop: not a failure
                    }
                    let held = books
                        .taken
                        .load(Ordering::Acquire)
                        .saturating_sub(books.resolved.load(Ordering::Acquire));
                    // Their tags fail too, so that their positions are resolved.
                    if let Some(ledger) = self.ledger() {
                        for (_, tag) in lock(&books.tags).drain() {
                            ledger.resolve(tag, Outcome::Failed);
                        }
                    }
                    if !self.fail_held(index, held, &how) {
                        break;
                    }
                    slot.restart();
                }
                Err(CallError::PoolClosed) => break,
                Err(e) => {
                    self.stages[0].fail_stage(StageFailureKind::Start(BuildError::new(format!(
                        "process region `{}`: {e}",
                        self.name
                    ))));
                    break;
                }
            }
        }
        if self.stages.iter().any(|s| s.should_stop()) {
            // Cancel upstream, as a stage that ends on a failure does.
            self.input.close();
        }
        // This slot holds no boundary back any more.
        let mut epochs = lock(&self.epochs);
        epochs.passed[index] = u64::MAX;
        self.emit_boundaries(&mut epochs);
    }

    /// Passes on downstream every boundary that every worker has passed back.
    fn emit_boundaries(&self, epochs: &mut Epochs) {
        while epochs.emitted < self.boundaries.load(Ordering::Acquire)
            && epochs.passed.iter().all(|&p| p > epochs.emitted)
        {
            // A closed output (a stop) needs no boundary.
            let _ = self.output.send_blocking(Msg::EpochEnd);
            epochs.emitted += 1;
            self.epoch_moved.notify_all();
        }
    }

    /// Slot `index`'s worker passed a boundary back: waits until it has gone downstream.
    fn boundary_passed(&self, index: usize) {
        let mut epochs = lock(&self.epochs);
        epochs.passed[index] = epochs.passed[index].saturating_add(1);
        let mine = epochs.passed[index];
        self.emit_boundaries(&mut epochs);
        drop(epochs);
        self.wait_downstream(mine);
    }

    /// Waits until `boundaries` boundaries have gone downstream: a worker's outputs of a
    /// later epoch wait for the boundary before them (also a new worker's, which starts in
    /// the input's epoch while others may still be in an earlier one).
    fn wait_downstream(&self, boundaries: u64) {
        let mut epochs = lock(&self.epochs);
        while epochs.emitted < boundaries && !self.stopped() {
            epochs = self
                .epoch_moved
                .wait_timeout(epochs, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A new worker starts in the epoch the input is in: the boundaries before count as
    /// passed by this slot.
    fn rebase(&self, index: usize) -> u64 {
        let base = self.boundaries.load(Ordering::Acquire);
        let mut epochs = lock(&self.epochs);
        epochs.passed[index] = epochs.passed[index].max(base);
        self.emit_boundaries(&mut epochs);
        base
    }

    /// The next message of the input (or `None` after `POLL`), and the number of
    /// boundaries before it.
    fn next_input(&self) -> (Option<Result<Msg<T>, crate::queue::Closed>>, u64) {
        let recv = || block_on_until(self.input.recv(), Some(Instant::now() + POLL));
        if !self.start.continuous {
            return (recv(), 0);
        }
        let mut gate = lock(&self.gate);
        let msg = recv();
        if let Some(Ok(Msg::EpochEnd)) = msg {
            *gate += 1;
            self.boundaries.store(*gate, Ordering::Release);
        }
        (msg, *gate)
    }

    /// One run of the region on a live worker: start it, then send inputs from one thread
    /// while this one reads what comes back. An `Err` means the worker is gone.
    fn drive(&self, index: usize, channel: &mut Channel, books: &Books) -> std::io::Result<()> {
        let header = request_header(self.key);
        let args = encode(&self.start)?;
        channel.send_parts(&[&header, &args])?;
        let first = channel.recv()?.ok_or_else(eof)?;
        match first.split_first() {
            Some((&FROM_READY, _)) => {}
            Some((&FROM_REFUSED, why)) => {
                channel.send(&[TO_END])?;
                self.stages[0].fail_stage(StageFailureKind::Start(BuildError::new(format!(
                    "process region `{}` could not be built in a worker process: {}",
                    self.name,
                    String::from_utf8_lossy(why)
                ))));
                return Ok(());
            }
            _ => {
                return Err(invalid(
                    "a process region's worker did not say it was ready",
                ))
            }
        }
        let (reader, writer) = channel.halves();
        let quit = AtomicBool::new(false);
        let base = self.rebase(index);
        std::thread::scope(|s| {
            let sender = s.spawn(|| self.send_inputs(writer, books, &quit, base));
            self.wait_downstream(base);
            let received = self.receive(index, reader, books, &quit);
            quit.store(true, Ordering::Release);
            let sent = sender.join().unwrap_or(Ok(()));
            received.and(sent)
        })
    }

    /// Sends inputs to the worker until the input ends (then says so) or `quit` is set.
    fn send_inputs(
        &self,
        writer: &mut FrameWriter,
        books: &Books,
        quit: &AtomicBool,
        base: u64,
    ) -> std::io::Result<()> {
        // Boundaries sent to this worker, counted from the input's first.
        let mut sent = base;
        let mut boundaries_up_to = |target: u64, writer: &mut FrameWriter| {
            while sent < target {
                writer.send(&[TO_EPOCH])?;
                sent += 1;
            }
            Ok::<(), std::io::Error>(())
        };
        while !quit.load(Ordering::Acquire) && !self.stopped() {
            // Every input this thread took is sent: the boundaries taken so far can go.
            boundaries_up_to(self.boundaries.load(Ordering::Acquire), writer)?;
            if !books.wait_for_room() {
                continue;
            }
            match self.next_input() {
                (None, _) | (Some(Ok(Msg::EpochEnd)), _) => continue,
                (Some(Ok(Msg::Item(item, tag))), before) => match encode(&item) {
                    Ok(bytes) => {
                        drop(item);
                        boundaries_up_to(before, writer)?;
                        let id = books.taken.fetch_add(1, Ordering::AcqRel);
                        let mut header = id.to_le_bytes().to_vec();
                        // Outputs of it resolved before a resume: the worker skips them.
                        let done = self.ledger().and_then(|ledger| {
                            lock(&books.tags).insert(id, tag);
                            ledger.fan_out(tag)
                        });
                        write_pairs(&mut header, done.as_ref().map_or(&[], |d| d.ranges()));
                        writer.send_parts(&[&[TO_ITEM], &header, &bytes])?;
                    }
                    Err(e) => {
                        self.fail_item(0, e.into());
                        self.stages[0].resolve(tag, Outcome::Failed);
                    }
                },
                (Some(Err(_closed)), _) => break,
            }
        }
        boundaries_up_to(self.boundaries.load(Ordering::Acquire), writer)?;
        writer.send(&[TO_END])
    }

    /// Reads the worker's outputs and reports until it is done.
    fn receive(
        &self,
        index: usize,
        reader: &mut FrameReader,
        books: &Books,
        quit: &AtomicBool,
    ) -> std::io::Result<()> {
        let last = self.stages.len() - 1;
        let mut before = vec![RemoteCounts::default(); self.stages.len()];
        let mut draining = false;
        loop {
            let frame = reader.recv()?.ok_or_else(eof)?;
            let Some((&tag, body)) = frame.split_first() else {
                return Err(invalid("an empty frame from a process region's worker"));
            };
            match tag {
                FROM_ITEM => {
                    let (count, rest) = body
                        .split_at_checked(8)
                        .ok_or_else(|| invalid("a truncated output"))?;
                    let (ids, rest) =
                        read_pairs(rest).ok_or_else(|| invalid("a truncated output"))?;
                    let (resolved, bytes) =
                        read_resolved(rest).ok_or_else(|| invalid("a truncated output"))?;
                    let count: [u8; 8] = count.try_into().expect("8 bytes");
                    books
                        .resolved
                        .store(u64::from_le_bytes(count), Ordering::Release);
                    match decode::<U>(bytes) {
                        Ok(value) if !draining => {
                            let tag = self.output_tag(books, &ids)?;
                            self.resolve_inputs(books, resolved)?;
                            if self.output.send_blocking(Msg::Item(value, tag)).is_err() {
                                // Nothing reads the output any more: let the worker finish
                                // what it holds, and drop it.
                                draining = true;
                                quit.store(true, Ordering::Release);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let tag = self.output_tag(books, &ids)?;
                            self.resolve_inputs(books, resolved)?;
                            self.stages[last].resolve(tag, Outcome::Failed);
                            self.fail_item(last, e.into());
                        }
                    }
                }
                FROM_RESOLVED => {
                    let (resolved, rest) = read_resolved(body)
                        .filter(|(_, rest)| rest.is_empty())
                        .ok_or_else(|| invalid("a malformed report of resolved inputs"))?;
                    debug_assert!(rest.is_empty());
                    self.resolve_inputs(books, resolved)?;
                }
                FROM_STATS | FROM_DONE => {
                    let progress: Progress = decode(body)?;
                    books.resolved.store(progress.resolved, Ordering::Release);
                    self.absorb(index, &progress, &mut before);
                    if tag == FROM_DONE {
                        return Ok(());
                    }
                }
                FROM_FAILED => {
                    let remote: RemotePipelineError = decode(body)?;
                    for failure in remote.failures() {
                        let ctx = self
                            .stages
                            .iter()
                            .find(|s| s.name == failure.stage())
                            .unwrap_or(&self.stages[0]);
                        ctx.fail_stage(StageFailureKind::InWorker(failure.clone()));
                    }
                    return Ok(()); // the worker reads on until the end of inputs
                }
                FROM_EPOCH => self.boundary_passed(index),
                FROM_TAKEN => {
                    let count: [u8; 8] = body
                        .try_into()
                        .map_err(|_| invalid("a truncated acknowledgement"))?;
                    books.credit(u64::from_le_bytes(count));
                }
                FROM_LOST => {
                    let (ids, why) =
                        read_pairs(body).ok_or_else(|| invalid("a truncated report"))?;
                    let tag = self.output_tag(books, &ids)?;
                    self.stages[last].resolve(tag, Outcome::Failed);
                    self.fail_item(last, String::from_utf8_lossy(why).into_owned().into())
                }
                _ => return Err(invalid("an unknown frame from a process region's worker")),
            }
        }
    }

    /// The ledger the region's positions are counted in, if any.
    fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.stages[0].ledger.as_ref()
    }

    /// The tag of an output standing for `sources` (an input's id, and which output of a
    /// fan-out of it, or `WHOLE`): each input gives it a token, or, for output `k` tracked
    /// one by one, an output tag of its own (one source: that tag; several: a group of
    /// them). `Tag::NONE` without a ledger.
    fn output_tag(&self, books: &Books, sources: &[[u64; 2]]) -> std::io::Result<Tag> {
        let Some(ledger) = self.ledger() else {
            return Ok(Tag::NONE);
        };
        let tags = lock(&books.tags);
        let inputs = sources
            .iter()
            .map(|&[id, k]| tags.get(&id).map(|&tag| (tag, k)))
            .collect::<Option<Vec<(Tag, u64)>>>()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("an output that names no input the worker holds"))?;
        drop(tags);
        let tracked = ledger.tracks_outputs();
        let members: Vec<Tag> = inputs
            .into_iter()
            .map(|(tag, k)| match k {
                WHOLE => {
                    ledger.add_token(tag);
                    tag
                }
                k if tracked => ledger.output(tag, k),
                _ => {
                    ledger.add_token(tag);
                    tag
                }
            })
            .collect();
        Ok(match members[..] {
            [one] => one,
            _ => ledger.group(members),
        })
    }

    /// The worker resolved these inputs: their own tokens go.
    fn resolve_inputs(&self, books: &Books, resolved: Vec<(u64, Outcome)>) -> std::io::Result<()> {
        let Some(ledger) = self.ledger() else {
            return Ok(());
        };
        for (id, outcome) in resolved {
            let tag = lock(&books.tags)
                .remove(&id)
                .ok_or_else(|| invalid("a resolved input the worker does not hold"))?;
            ledger.resolve(tag, outcome);
        }
        Ok(())
    }

    /// Adds what a worker's stages did since its last report into the region's stages.
    fn absorb(&self, index: usize, progress: &Progress, before: &mut [RemoteCounts]) {
        for ((ctx, now), then) in self.stages.iter().zip(&progress.stages).zip(before) {
            let delta = now.since(then);
            ctx.counters.absorb(index, &delta);
            // The budgets see the workers' items as they see the parent's own.
            for _ in 0..delta.tasks.saturating_sub(delta.failures) {
                ctx.on_success();
            }
            for _ in 0..delta.failures {
                let error = "an item failed in a worker process of the region (the worker's \
                             stderr has its error)";
                ctx.on_failure(ItemError::from_error(&ctx.name, error.into()));
            }
            *then = now.clone();
        }
    }

    /// Fails the `held` inputs of a worker that died; false if that exceeds the budget.
    fn fail_held(&self, index: usize, held: u64, how: &str) -> bool {
        let ctx = &self.stages[0];
        let counts = RemoteCounts {
            tasks: held,
            failures: held,
            ..RemoteCounts::default()
        };
        ctx.counters.absorb(index, &counts);
        for _ in 0..held {
            let message = format!(
                "{how} while process region `{}` held this item; a replacement worker was \
                 started",
                self.name
            );
            if !ctx.on_failure(ItemError::from_error(&ctx.name, message.into())) {
                return false;
            }
        }
        true
    }

    /// One item failed at the boundary (it could not be encoded or decoded).
    fn fail_item(&self, stage: usize, error: BoxError) {
        let ctx = &self.stages[stage];
        ctx.counters.absorb(
            0,
            &RemoteCounts {
                tasks: 1,
                failures: 1,
                ..RemoteCounts::default()
            },
        );
        ctx.on_failure(ItemError::from_error(&ctx.name, error));
    }
}

fn eof() -> std::io::Error {
    std::io::ErrorKind::UnexpectedEof.into()
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}
