//! The running pipeline: what the consumer iterates, and its lifecycle (start, stop, drop).

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;

use crate::async_runtime::AsyncRuntime;
use crate::block_on::block_on_until;
use crate::executor::{join_all_until, ThreadPool};
use crate::failure::BuildError;
use crate::failure::PipelineError;
use crate::launch::{Launch, LaunchFn, Settings};
use crate::memory::MemoryLimit;
use crate::queue::{Msg, Rx};
use crate::resume::accounts::{Accounts, Cursor, Outcome};
use crate::resume::ledger::Ledger;
use crate::resume::ResumeState;
use crate::run_state::RunState;
use crate::stage::StageCtx;
use crate::stats::report;
use crate::stats::{ConsumerClock, PipelineStats, StatsRegistry, StatsSeries};
use crate::tune::running::Supervised;
use crate::tune::supervisor::run_supervisor;
use crate::tune::TuneError;

enum State<T> {
    Built { launch: LaunchFn<T>, buffer: usize },
    Running(Running<T>),
    Stopped,
}

struct Running<T> {
    output: Pin<Box<Rx<T>>>,
    default_pool: ThreadPool,
    runtime: Option<AsyncRuntime>,
    stages: Vec<Arc<StageCtx>>,
}

/// A built pipeline. Read its items as a blocking [`Iterator`] or, through
/// [`into_stream`](Self::into_stream) or [`stream`](Self::stream), as an async [`Stream`];
/// both yield `Result<T, PipelineError>`, so a failure arrives after the items produced
/// before it and never looks like a short but successful run.
///
/// The pipeline starts on the first read (or [`start`](Self::start)). Dropping it stops it:
/// queues close, stages end, and every thread it started exits (a thread still inside a
/// stage function is left to finish that call on its own; see [`stop`](Self::stop)).
pub struct Pipeline<T> {
    state: State<T>,
    run: Arc<RunState>,
    settings: Settings,
    stats: Arc<StatsRegistry>,
    /// Dropping it ends the periodic reporter thread.
    reporter: Option<std::sync::mpsc::Sender<()>>,
    final_reported: bool,
    finished: bool,
    /// The stages, one word each (see [`ResumeState::shape`]).
    shape: String,
    /// The token ledger: with resume tracking, a memory limit, or accounts over stages
    /// that are not one-to-one.
    ledger: Option<Arc<Ledger>>,
    /// The ledger's accounts (see [`Accounts`]); absent for structures they do not cover
    /// yet (merge).
    accounts: Option<Arc<Accounts>>,
    /// The consumer's place in the accounts (accounts without a token ledger).
    cursor: Option<Cursor>,
    /// The epoch the consumer is in: the next epoch boundary closes its account.
    epoch_now: u64,
    /// The consumer's wait and step times (statistics on only).
    consumer: ConsumerClock,
    /// The memory limit of items in flight (`memory_limit`).
    memory: Option<Arc<MemoryLimit>>,
    /// What can be resized, and autotune's log (once started).
    supervised: Option<Arc<Supervised>>,
    /// Dropping it ends the supervisor thread (autotune, stall detection).
    supervisor: Option<std::sync::mpsc::Sender<()>>,
    /// What the last item delivered stood for (a process region's worker only): positions,
    /// or output `k` of a position.
    sources: Vec<(u64, Option<u64>)>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Built { .. } => "built",
            State::Running(_) => "running",
            State::Stopped => "stopped",
        };
        f.debug_struct("Pipeline")
            .field("state", &state)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    pub(crate) fn new(
        launch: LaunchFn<T>,
        buffer: usize,
        settings: Settings,
        shape: String,
    ) -> Self {
        let memory = settings
            .tune
            .memory_limit
            .map(|limit| Arc::new(MemoryLimit::new(limit)));
        let epoch = settings.resume_from.as_ref().map_or(0, ResumeState::epoch);
        let carried = settings
            .resume_from
            .as_ref()
            .map_or(&[][..], ResumeState::accounts);
        let accounts = accounts_cover(&shape).then(|| Arc::new(Accounts::new(epoch, carried)));
        // The memory limit learns from the ledger when an item is resolved; the accounts
        // need it where a message is not one position.
        let needs_ledger = settings.track_resume
            || memory.is_some()
            || (accounts.is_some() && !one_to_one(&shape));
        let ledger = needs_ledger.then(|| {
            let mut ledger = Ledger::new(epoch);
            // A region's worker tracks outputs when its parent does (see `in_region`).
            if settings.track_resume && (!settings.in_region || settings.region_outputs) {
                ledger = ledger.tracking_outputs();
            }
            #[cfg(unix)]
            if settings.in_region {
                ledger = ledger.journaling();
            }
            if let Some(state) = &settings.resume_from {
                ledger = ledger.resuming(state);
            }
            if let Some(memory) = &memory {
                ledger = ledger.with_memory_limit(memory.clone());
            }
            if let Some(accounts) = &accounts {
                ledger = ledger.with_accounts(accounts.clone());
            }
            Arc::new(ledger)
        });
        let cursor = match (&ledger, &accounts) {
            (None, Some(accounts)) => Some(Cursor::new(accounts)),
            _ => None,
        };
        Self {
            state: State::Built { launch, buffer },
            run: Arc::new(RunState::default()),
            settings,
            stats: Arc::new(StatsRegistry::default()),
            reporter: None,
            final_reported: false,
            finished: false,
            consumer: ConsumerClock::default(),
            shape,
            ledger,
            accounts,
            cursor,
            epoch_now: epoch,
            memory,
            supervised: None,
            supervisor: None,
            sources: Vec::new(),
        }
    }

    /// Where the consumer stands, for resuming exactly: what it has received so far (see
    /// [`ResumeState`]). `None` unless resume tracking is on
    /// ([`SinkBuilder::track_resume`](crate::SinkBuilder::track_resume) or
    /// [`resume_from`](crate::SinkBuilder::resume_from)).
    ///
    /// Items the pipeline holds but the consumer has not received (in a stage, a queue or the
    /// sink's buffer) are pending in the state: a pipeline resumed from it recomputes them.
    pub fn resume_state(&self) -> Option<ResumeState> {
        let ledger = self
            .ledger
            .as_ref()
            .filter(|_| self.settings.track_resume)?;
        Some(match &self.state {
            // Not started: where it would start.
            State::Built { .. } => self
                .settings
                .resume_from
                .clone()
                .unwrap_or_else(|| ResumeState::start_of_epoch(self.shape.clone(), 0)),
            _ => ledger.snapshot(&self.shape),
        })
    }

    /// The counters of the running stages, in pipeline order (a process region's worker
    /// sends them to its parent).
    #[cfg(unix)]
    pub(crate) fn stage_counters(&self) -> Vec<Arc<crate::stats::StageCounters>> {
        match &self.state {
            State::Running(running) => running.stages.iter().map(|s| s.counters.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The stages, one word each (see [`ResumeState::shape`]).
    pub(crate) fn shape(&self) -> &str {
        &self.shape
    }

    /// The positions the item last read stood for (a region's worker: see
    /// `Settings::in_region`).
    #[cfg(unix)]
    pub(crate) fn sources(&self) -> &[(u64, Option<u64>)] {
        &self.sources
    }

    /// The ledger (a region's worker seeds it with the outputs already resolved).
    #[cfg(unix)]
    pub(crate) fn ledger(&self) -> Option<Arc<Ledger>> {
        self.ledger.clone()
    }

    /// The positions resolved since the last call, with their outcomes (a region's worker).
    #[cfg(unix)]
    pub(crate) fn take_resolved(&self) -> Vec<(u64, Outcome)> {
        self.ledger
            .as_ref()
            .map(|l| l.take_journal())
            .unwrap_or_default()
    }

    /// Source positions resolved so far (resume tracking on), else 0.
    #[cfg(unix)]
    pub(crate) fn resolved_inputs(&self) -> u64 {
        self.ledger.as_ref().map_or(0, |l| l.resolved())
    }

    /// A message at the consumer: an item's tag goes back to the ledger as delivered; an
    /// epoch boundary closes the epoch's account, which must balance.
    #[inline]
    fn delivered(&mut self, msg: &Msg<T>) -> Result<(), PipelineError> {
        match msg {
            Msg::Item(_, tag) => {
                if let Some(ledger) = &self.ledger {
                    if self.settings.in_region {
                        self.sources.clear();
                        #[cfg(unix)]
                        ledger.sources(*tag, &mut self.sources);
                    }
                    ledger.resolve(*tag, Outcome::Delivered);
                } else if let (Some(cursor), Some(accounts)) = (&mut self.cursor, &self.accounts) {
                    cursor.delivered(accounts, *tag);
                }
                Ok(())
            }
            Msg::EpochEnd => self.close_epoch(),
        }
    }

    /// The consumer reached the end of its epoch: checks the epoch's account. A mismatch
    /// stops the pipeline and is its error.
    fn close_epoch(&mut self) -> Result<(), PipelineError> {
        let epoch = self.epoch_now;
        self.epoch_now += 1;
        let Some(accounts) = &self.accounts else {
            return Ok(());
        };
        match accounts.close(epoch) {
            Ok(()) => Ok(()),
            Err(account) => {
                tracing::error!("the ledger does not balance: {account}");
                self.run.request_stop();
                self.finished = true;
                self.report_final();
                Err(PipelineError::ledger_mismatch(account))
            }
        }
    }

    /// Starts the stages. Reading starts the pipeline too; starting twice is an error.
    pub fn start(&mut self) -> Result<(), BuildError> {
        let State::Built { .. } = self.state else {
            return Err(BuildError::new(
                "the pipeline was already started (or stopped)",
            ));
        };
        let State::Built { launch, buffer } = std::mem::replace(&mut self.state, State::Stopped)
        else {
            unreachable!()
        };
        if self.settings.stats || !self.settings.hooks.0.is_empty() {
            // Measure the clock's rate now rather than on a lane's first timed task.
            crate::clock::ns_per_tick();
        }
        let default_pool = ThreadPool::builder()
            .num_threads(self.settings.num_threads)
            .name("pipeline-worker")
            .build()?;
        let mut l = Launch::new(
            self.run.clone(),
            &self.settings,
            default_pool.clone(),
            (self.ledger.clone(), self.accounts.clone()),
        );
        l.memory = self.memory.clone();
        if let Some(memory) = self.memory.clone() {
            self.run.on_stop(Box::new(move || memory.close()));
        }
        match launch(&mut l, buffer).and_then(|rx| l.check_sources().map(|()| rx)) {
            Ok(mut output) => {
                output.set_consumer();
                let stages = l.stages.iter().map(|s| s.stats_entry()).collect();
                self.stats
                    .start(stages, std::mem::take(&mut l.queues), self.settings.stats);
                if self.settings.stats {
                    self.start_stats_thread(self.settings.report_interval);
                }
                let supervised = Arc::new(Supervised::new(
                    std::mem::take(&mut l.resizers),
                    l.stages.clone(),
                    default_pool.clone(),
                    self.memory.clone(),
                    self.run.clone(),
                    self.stats.clone(),
                ));
                if self.settings.tune.supervised() {
                    self.start_supervisor(supervised.clone());
                }
                self.supervised = Some(supervised);
                self.state = State::Running(Running {
                    output: Box::pin(output),
                    default_pool,
                    runtime: l.runtime.take(),
                    stages: l.stages,
                });
                Ok(())
            }
            Err(e) => {
                shut_down(
                    &self.run,
                    &default_pool,
                    l.runtime.as_mut(),
                    self.settings.stop_timeout,
                );
                Err(e)
            }
        }
    }

    /// Starts the thread that samples queue occupancy and logs the periodic reports.
    /// Without it (no thread to be had) the pipeline runs on, with occupancy 0 and no
    /// periodic reports, and says so.
    fn start_stats_thread(&mut self, interval: Option<Duration>) {
        let (stop, stopped) = std::sync::mpsc::channel();
        let registry = self.stats.clone();
        let thread = std::thread::Builder::new()
            .name("pipeline-stats".to_owned())
            .spawn(move || report::run_stats_thread(registry, interval, stopped));
        match thread {
            Ok(thread) => {
                self.run.register_thread(thread);
                self.reporter = Some(stop);
            }
            Err(e) => tracing::warn!("cannot start the statistics thread: {e}"),
        }
    }

    /// Starts the thread that runs autotune and stall detection.
    fn start_supervisor(&mut self, supervised: Arc<Supervised>) {
        let (stop, stopped) = std::sync::mpsc::channel();
        let settings = self.settings.tune.clone();
        let thread = std::thread::Builder::new()
            .name("pipeline-tune".to_owned())
            .spawn(move || run_supervisor(supervised, settings, stopped));
        match thread {
            Ok(thread) => {
                self.run.register_thread(thread);
                self.supervisor = Some(stop);
            }
            Err(e) => tracing::warn!(
                "cannot start the supervisor thread: autotune and stall detection are off: {e}"
            ),
        }
    }

    /// The running pipeline's resizable parts; an error before the start and after the end.
    fn running_parts(&self) -> Result<&Supervised, TuneError> {
        match (&self.state, &self.supervised) {
            (State::Running(_), Some(s)) if !self.finished && !self.run.stop_requested() => Ok(s),
            (State::Built { .. }, _) => Err(TuneError::new(
                "the pipeline has not started: resize it once it runs (set the starting \
                 concurrency with the builder's `concurrency`)",
            )),
            _ => Err(TuneError::new(
                "the pipeline has ended: there is nothing to resize",
            )),
        }
    }

    /// Sets the concurrency of the `pipe` stage named `stage` while the pipeline runs: new
    /// lanes start at once; surplus lanes retire after emitting the item they hold. No item
    /// is lost, duplicated or (in a stage keeping input order) reordered. Logged like an
    /// autotune decision. Under autotune the controller may move it again.
    pub fn resize(&self, stage: &str, concurrency: usize) -> Result<(), TuneError> {
        self.running_parts()?.resize_by_name(stage, concurrency)
    }

    /// Sets the number of threads of the default pool while the pipeline runs: threads
    /// start at once; surplus ones exit when their current stage call returns.
    pub fn resize_pool(&self, threads: usize) -> Result<(), TuneError> {
        self.running_parts()?
            .resize_pool(threads, "user".to_owned(), 0.0)
    }

    fn ensure_started(&mut self) -> Result<(), PipelineError> {
        if let State::Built { .. } = self.state {
            if let Err(e) = self.start() {
                return Err(PipelineError::start_failed(e));
            }
        }
        Ok(())
    }

    fn output(&self) -> Option<&Rx<T>> {
        match &self.state {
            State::Running(r) => Some(&*r.output),
            _ => None,
        }
    }

    /// Called when the output queue is closed and empty: the failure, if any, once.
    fn end_of_stream(&mut self) -> Option<PipelineError> {
        let error = self.run.take_error();
        // A source that ends without an epoch boundary (one pass) ends its epoch here;
        // a failure or a stop leaves items unresolved, with nothing to check.
        let ended = error.is_none() && !self.run.stop_requested();
        let mismatch = match ended {
            true => self.close_epoch().err(),
            false => None,
        };
        self.finished = true;
        self.report_final();
        error.or(mismatch)
    }

    /// The next item, waiting at most `timeout`. To wait as long as it takes, use the
    /// iterator ([`next`](Iterator::next)).
    ///
    /// Epoch boundaries of a continuous pipeline are skipped here; use [`epoch`](Self::epoch)
    /// to see them.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, GetError> {
        let deadline = Some(Instant::now() + timeout);
        self.consumer_reads();
        loop {
            match self.next_msg(deadline) {
                Ok(Some(Msg::Item(item, _))) => {
                    self.consumer_takes(true);
                    return Ok(item);
                }
                Ok(Some(Msg::EpochEnd)) => continue,
                Ok(None) => {
                    self.consumer_takes(false);
                    return Err(GetError::Finished);
                }
                // A timeout leaves the read under way: the next call goes on with its wait.
                Err(GetError::Timeout) => return Err(GetError::Timeout),
                Err(e) => {
                    self.consumer_takes(false);
                    return Err(e);
                }
            }
        }
    }

    /// Reads one message: `Ok(None)` at the end, `Err` on timeout or failure.
    pub(crate) fn next_msg(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Msg<T>>, GetError> {
        if self.finished {
            return Ok(None);
        }
        if let State::Built { .. } = self.state {
            // The first read waits for the start too.
            self.consumer_waits();
        }
        self.ensure_started().map_err(GetError::Failed)?;
        // An item already waiting is taken without a clock reading for the consumer's wait
        // (it is zero); only a read that has to wait starts timing it.
        let State::Running(running) = &self.state else {
            return Ok(None);
        };
        let rx = &*running.output;
        let received = match deadline {
            None => {
                let (clock, counters) = (&mut self.consumer, &self.stats.consumer);
                let stats = self.settings.stats;
                Some(rx.recv_blocking(|| {
                    if stats {
                        clock.on_wait(counters);
                    }
                }))
            }
            Some(deadline) => match rx.try_recv() {
                Some(now) => Some(now),
                None => {
                    self.consumer_waits();
                    let Some(rx) = self.output() else {
                        return Ok(None);
                    };
                    block_on_until(rx.recv(), Some(deadline))
                }
            },
        };
        match received {
            None => Err(GetError::Timeout),
            Some(Ok(msg)) => match self.delivered(&msg) {
                Ok(()) => Ok(Some(msg)),
                Err(mismatch) => Err(GetError::Failed(mismatch)),
            },
            Some(Err(_closed)) => match self.end_of_stream() {
                Some(error) => Err(GetError::Failed(error)),
                None => Ok(None),
            },
        }
    }

    /// An iterator over the current epoch: it ends at the next epoch boundary of a
    /// continuous pipeline (or at the end of the stream). Call again for the next epoch;
    /// nothing is lost between calls.
    pub fn epoch(&mut self) -> Epoch<'_, T> {
        Epoch {
            pipeline: self,
            done: false,
        }
    }

    /// A snapshot of every stage's and queue's statistics, readable at any time (empty
    /// before the pipeline starts; frozen once it has ended). Its `Display` is a table that
    /// names the bottleneck.
    pub fn stats(&self) -> PipelineStats {
        let mut stats = self.stats.snapshot();
        if let Some(s) = &self.supervised {
            stats.tuning = s.log.decisions();
            stats.pool_threads = s.pool.num_threads();
        }
        stats.memory = self.memory.as_ref().map(|b| b.stats());
        stats.accounts = self.accounts();
        stats
    }

    /// The ledger's accounts, one per epoch (the open ones and the last few ended), oldest
    /// first: empty for a pipeline whose structure they do not cover yet (a merge, a
    /// process region). Also in [`stats`](Self::stats).
    pub fn accounts(&self) -> Vec<crate::stats::EpochAccount> {
        self.accounts
            .as_ref()
            .map_or_else(Vec::new, |a| a.snapshot())
    }

    /// The statistics over time, recorded by the statistics thread while the pipeline runs
    /// (empty when statistics are off). See [`write_report`](Self::write_report) for the
    /// picture.
    pub fn stats_series(&self) -> StatsSeries {
        self.stats.series()
    }

    /// The picture of the run so far, as a self-contained SVG document: one panel per stage
    /// (items/s, busy share, occupancy of its input queue) and one for the consumer (items/s,
    /// wait share), the bottleneck framed in red.
    pub fn report_svg(&self) -> String {
        crate::stats::svg::render(&self.stats.series(), &self.stats.snapshot())
    }

    /// Writes [`report_svg`](Self::report_svg) to `path`. Best called after the last item
    /// (or [`stop`](Self::stop)), when the figures are final.
    pub fn write_report(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.report_svg())
    }

    /// Stops the pipeline: stages stop taking items, queues close, and the pipeline's
    /// threads are joined for up to the build's `stop_timeout`. Items already in the sink
    /// stay readable. Idempotent.
    ///
    /// A synchronous stage function cannot be interrupted: a thread still inside one when
    /// the timeout passes is left running; it ends as soon as that call returns, since its
    /// queues are closed. Returns the pipeline's failure if it failed and the failure was not
    /// read yet.
    pub fn stop(&mut self) -> Result<(), PipelineError> {
        self.run.request_stop();
        self.reporter = None;
        self.supervisor = None;
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Running(mut running) => {
                shut_down(
                    &self.run,
                    &running.default_pool,
                    running.runtime.as_mut(),
                    self.settings.stop_timeout,
                );
                // Keep the output so buffered items stay readable after stop.
                let drained = running.output;
                drop(running.stages);
                self.state = State::Running(Running {
                    output: drained,
                    default_pool: running.default_pool,
                    runtime: None,
                    stages: Vec::new(),
                });
            }
            // Stopping a pipeline that never started: it stays stopped, with no items.
            State::Built { .. } | State::Stopped => self.finished = true,
        }
        self.report_final();
        if self.finished {
            return Ok(());
        }
        match self.run.take_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl<T> Pipeline<T> {
    /// Freezes the statistics, stops the periodic reporter and logs the final report (once,
    /// and only for a pipeline that ran with statistics on).
    fn report_final(&mut self) {
        self.reporter = None;
        self.supervisor = None;
        if self.final_reported || !self.settings.stats || !self.stats.is_started() {
            return;
        }
        self.final_reported = true;
        self.stats.mark_ended();
        let mut stats = self.stats.snapshot();
        stats.accounts = self
            .accounts
            .as_ref()
            .map_or_else(Vec::new, |a| a.snapshot());
        report::log(&stats, "final");
    }
}

impl<T> Drop for Pipeline<T> {
    fn drop(&mut self) {
        self.run.request_stop();
        self.reporter = None;
        self.supervisor = None;
        if let State::Running(mut running) = std::mem::replace(&mut self.state, State::Stopped) {
            shut_down(
                &self.run,
                &running.default_pool,
                running.runtime.as_mut(),
                self.settings.stop_timeout,
            );
        }
        self.report_final();
    }
}

/// Whether the accounts cover a pipeline of this shape: every structure but those whose
/// items the ledger cannot follow yet (issue 27, item 4).
fn accounts_cover(shape: &str) -> bool {
    !shape.contains("merge(")
}

/// Whether every stage after the source is a one-to-one `pipe` or an `aggregate`: then
/// each position travels in one message, and the accounts need no token ledger.
fn one_to_one(shape: &str) -> bool {
    let aggregate = |word: &str| word.starts_with("aggregate(") || word == "aggregate_with";
    shape
        .split(" -> ")
        .skip(1)
        .all(|word| word == "pipe" || aggregate(word))
}

/// Stops every part of a pipeline and joins its threads for up to `timeout`; a thread still
/// inside a stage function then is left to finish that call (its queues are closed, so it
/// exits right after). Returns whether every thread was joined.
fn shut_down(
    run: &RunState,
    default_pool: &ThreadPool,
    runtime: Option<&mut AsyncRuntime>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    run.request_stop();
    let mut all_joined = default_pool.shutdown(timeout);
    if let Some(rt) = runtime {
        all_joined &= rt.shutdown(deadline);
    }
    all_joined &= join_all_until(run.take_threads(), deadline);
    // The pipeline's threads are gone; lanes they cancelled inside wakers are dropped here.
    crate::executor::drop_deferred();
    if !all_joined {
        tracing::warn!(
            "pipeline stopped; a thread still inside a stage function was left to finish \
             that call on its own"
        );
    }
    all_joined
}

impl<T: Send + 'static> Iterator for Pipeline<T> {
    type Item = Result<T, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.consumer_reads();
        let next = self.next_item();
        self.consumer_takes(matches!(next, Some(Ok(_))));
        next
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// The iterator's next item, epoch boundaries skipped.
    fn next_item(&mut self) -> Option<Result<T, PipelineError>> {
        loop {
            match self.next_msg(None) {
                Ok(Some(Msg::Item(item, _))) => return Some(Ok(item)),
                Ok(Some(Msg::EpochEnd)) => continue,
                Ok(None) => return None,
                Err(GetError::Failed(e)) => return Some(Err(e)),
                Err(GetError::Timeout | GetError::Finished) => return None,
            }
        }
    }

    /// The consumer asks for an item. The clock is read only when the read has to wait
    /// ([`consumer_waits`](Self::consumer_waits)) and when the item is handed over, so an
    /// item already waiting costs one reading (statistics on only).
    #[inline]
    fn consumer_reads(&mut self) {
        if self.settings.stats {
            self.consumer.on_read();
        }
    }

    /// The read has to wait for its item: its wait starts now (timed with statistics on).
    #[inline]
    fn consumer_waits(&mut self) {
        if self.settings.stats {
            self.consumer.on_wait(&self.stats.consumer);
        }
    }

    /// The read ends, with an item handed over or without one.
    #[inline]
    fn consumer_takes(&mut self, item: bool) {
        if !self.settings.stats {
            return;
        }
        if item {
            self.consumer.on_item(&self.stats.consumer);
        } else {
            self.consumer.on_no_item(&self.stats.consumer);
        }
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// The pipeline as an async [`Stream`] of the same `Result`s as the iterator, for an async
    /// consumer; polling it never blocks. A named type rather than a second impl on
    /// `Pipeline`, so that `Iterator` and `StreamExt` methods (`next`, `map`, `count`) never
    /// clash on it.
    pub fn into_stream(self) -> PipelineStream<T> {
        PipelineStream { pipeline: self }
    }

    /// Like [`into_stream`](Self::into_stream), borrowing the pipeline, so that it stays
    /// usable afterwards (e.g. for [`stats`](Self::stats)).
    pub fn stream(&mut self) -> impl Stream<Item = Result<T, PipelineError>> + Unpin + '_ {
        futures::stream::poll_fn(move |cx| self.poll_item(cx))
    }

    /// The stream's poll: items in order, epoch boundaries skipped, the failure (if any)
    /// once at the end.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, PipelineError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Err(e) = self.ensure_started() {
            self.finished = true;
            return Poll::Ready(Some(Err(e)));
        }
        self.consumer_reads();
        loop {
            let State::Running(running) = &mut self.state else {
                self.consumer_takes(false);
                return Poll::Ready(None);
            };
            match running.output.as_mut().poll_next(cx) {
                Poll::Pending => {
                    self.consumer_waits();
                    return Poll::Pending;
                }
                Poll::Ready(Some(msg)) => {
                    if let Err(mismatch) = self.delivered(&msg) {
                        self.consumer_takes(false);
                        return Poll::Ready(Some(Err(mismatch)));
                    }
                    let Msg::Item(item, _) = msg else {
                        continue; // an epoch boundary
                    };
                    self.consumer_takes(true);
                    return Poll::Ready(Some(Ok(item)));
                }
                Poll::Ready(None) => {
                    self.consumer_takes(false);
                    return Poll::Ready(self.end_of_stream().map(Err));
                }
            }
        }
    }
}

/// A [`Pipeline`] read as an async [`Stream`]; see [`Pipeline::into_stream`].
#[derive(Debug)]
pub struct PipelineStream<T> {
    pipeline: Pipeline<T>,
}

impl<T> PipelineStream<T> {
    /// The pipeline, e.g. for its [`stats`](Pipeline::stats).
    pub fn get_ref(&self) -> &Pipeline<T> {
        &self.pipeline
    }

    /// The pipeline back, to read the rest of it as an iterator.
    pub fn into_inner(self) -> Pipeline<T> {
        self.pipeline
    }
}

impl<T: Send + 'static> Stream for PipelineStream<T> {
    type Item = Result<T, PipelineError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().pipeline.poll_item(cx)
    }
}

/// One epoch of a pipeline's items; see [`Pipeline::epoch`].
#[derive(Debug)]
pub struct Epoch<'a, T> {
    pipeline: &'a mut Pipeline<T>,
    done: bool,
}

impl<T: Send + 'static> Iterator for Epoch<'_, T> {
    type Item = Result<T, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.pipeline.consumer_reads();
        let next = self.pipeline.next_msg(None);
        self.pipeline
            .consumer_takes(matches!(next, Ok(Some(Msg::Item(_, _)))));
        match next {
            Ok(Some(Msg::Item(item, _))) => Some(Ok(item)),
            Ok(Some(Msg::EpochEnd)) | Ok(None) => {
                self.done = true;
                None
            }
            Err(GetError::Failed(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(GetError::Timeout | GetError::Finished) => {
                self.done = true;
                None
            }
        }
    }
}

/// Why [`Pipeline::get_timeout`](crate::Pipeline::get_timeout) returned no item.
#[derive(Debug)]
pub enum GetError {
    /// No item arrived within the timeout; the pipeline is still running.
    Timeout,
    /// The pipeline failed (reported once; later calls say [`GetError::Finished`]).
    Failed(PipelineError),
    /// The pipeline has finished and every item was read.
    Finished,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Timeout => f.write_str("no item became available before the timeout"),
            GetError::Failed(e) => e.fmt(f),
            GetError::Finished => f.write_str("the pipeline has finished"),
        }
    }
}

impl StdError for GetError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            GetError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pipeline;
    use crate::error::StageFailureKind;
    use crate::resume::accounts::Outcome;
    use crate::PipelineBuilder;

    /// Reads one item, feeds the accounts one stray resolution (as an engine defect would),
    /// and returns the error the rest of the run ends with.
    fn stray_resolution<T: Send + 'static>(mut pipeline: Pipeline<T>, stray: Outcome) -> String {
        assert!(pipeline.next().is_some_and(|r| r.is_ok()));
        pipeline
            .accounts
            .as_ref()
            .unwrap()
            .dropped(crate::resume::Tag::pos(0), stray);
        let error = pipeline.find_map(Result::err).expect("a mismatch");
        assert!(matches!(
            error.first().kind(),
            StageFailureKind::LedgerMismatch(_)
        ));
        error.to_string()
    }

    #[test]
    fn an_epoch_that_does_not_balance_ends_the_pipeline_with_the_counts() {
        let one_to_one = PipelineBuilder::new().source(0..100u64).pipe(|x| x);
        let message = stray_resolution(one_to_one.sink().build().unwrap(), Outcome::Failed);
        assert!(message.contains("sourced 100"), "{message}");
        assert!(
            message.contains("1 more resolved than sourced"),
            "{message}"
        );
        let batched = PipelineBuilder::new().source(0..100u64).aggregate(10);
        let message = stray_resolution(batched.sink().build().unwrap(), Outcome::Filtered);
        assert!(message.contains("filtered 1"), "{message}");
        assert!(message.contains("duplicated"), "{message}");
    }
}
