//! The autotune controller: a hill climb on the sink's throughput, one change at a time.
//!
//! Every step it measures, over a window, the throughput into the last stage and each tuned
//! stage's busy share (time in its function over its lanes' time; an async stage's waits
//! count, since they are what its lanes are for), and the default pool's busy share. Then:
//!
//! 1. A change on trial is judged: kept if the throughput rose by at least [`MIN_GAIN`]
//!    (over one window, or two when the first is unclear), otherwise undone, and what it raised is held at its old value for a while (doubling
//!    with every failed try), so a stage that gains nothing is backed off and not raised
//!    again and again (no oscillation on a steady workload).
//! 2. Otherwise the busiest tuned stage, if it is saturated ([`SATURATED`]), is raised
//!    (doubled for an async stage, one more lane for a synchronous one), with a thread more
//!    for the pool when the stage's lanes would outnumber its threads; else, when the pool's
//!    threads are all busy, the pool alone gets a thread. Both within the thread limit.
//!    Under a binding memory limit (the source waits for room at least half the time) no
//!    stage is busy on average; then the stage whose input queue holds the most items is
//!    raised, which shortens the time an item takes and so raises what the limit allows.
//! 3. A throughput that stays more than [`WORKLOAD_SHIFT`] away from the one at the last
//!    hold, for three windows in a row without a change of ours, means the workload changed: every hold is lifted, so the climb starts again from there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::running::Supervised;
use super::TuneSettings;
use crate::clock;

/// Smallest relative gain for which a change is kept.
pub(crate) const MIN_GAIN: f64 = 0.03;
/// Busy share from which a stage (or the pool) counts as saturated.
pub(crate) const SATURATED: f64 = 0.75;
/// Relative throughput change that counts as a new workload.
pub(crate) const WORKLOAD_SHIFT: f64 = 0.3;
/// Windows over which an unclear change is judged, at most.
const JUDGED_WINDOWS: usize = 2;
/// A loss from which a change is undone after one window.
const CLEAR_LOSS: f64 = 0.25;
/// Windows in a row that must all show a [`WORKLOAD_SHIFT`] before holds are lifted.
const SHIFT_WINDOWS: u32 = 3;
/// How long a raise that gained nothing is held off at first.
const FIRST_HOLD: Duration = Duration::from_secs(5);

/// What a change raised: a stage (by its index among the resizers) or the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Knob {
    Stage(usize),
    Pool,
}

/// One change on trial: the knobs moved, from what, and the throughput before.
#[derive(Debug)]
struct Trial {
    moves: Vec<(Knob, usize, usize)>,
    before: f64,
    /// Throughputs of the windows judged so far (an unclear first window gets a second).
    after: Vec<f64>,
}

#[derive(Debug)]
struct Hold {
    /// The knob may not go above this.
    ceiling: usize,
    until: Instant,
    /// The hold's length, doubled when the knob fails again.
    length: Duration,
}

/// Counters at the start of a window.
#[derive(Debug, Clone)]
struct Mark {
    at: Instant,
    sink_tasks: u64,
    /// (tasks, busy ticks) of each resizer's stage.
    stages: Vec<(u64, u64)>,
}

pub(crate) struct Controller {
    /// Ticks of a measurement window.
    window_ticks: u32,
    pool_max: usize,
    mark: Option<Mark>,
    ticks: u32,
    /// A change was just made: the next tick starts the window (lanes start, queues adapt).
    settling: bool,
    trial: Option<Trial>,
    holds: HashMap<Knob, Hold>,
    /// The throughput when a knob was last held: the reference for a workload change.
    steady_ref: Option<f64>,
    /// Windows in a row beyond [`WORKLOAD_SHIFT`] of `steady_ref` (signed: up or down).
    shifted: i32,
    /// Over the current window: the sum of each queue's length at every tick, the ticks,
    /// and the ticks at which the source waited for room in the memory limit.
    queued: Vec<usize>,
    samples: u32,
    limit_waits: u32,
    now: Instant,
}

impl Controller {
    pub(crate) fn new(s: &Supervised, settings: &TuneSettings) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let pool_max = settings
            .thread_limit
            .unwrap_or(cores)
            .max(s.pool.num_threads());
        let interval = settings.interval();
        // About 200 ms of measurement: enough items for a stable rate, few enough for the
        // climb to finish in a couple of seconds.
        let window_ticks = (Duration::from_millis(200).as_secs_f64() / interval.as_secs_f64())
            .ceil()
            .max(2.0) as u32;
        Self {
            window_ticks,
            pool_max,
            mark: None,
            ticks: 0,
            settling: false,
            trial: None,
            holds: HashMap::new(),
            steady_ref: None,
            shifted: 0,
            queued: Vec::new(),
            samples: 0,
            limit_waits: 0,
            now: Instant::now(),
        }
    }

    fn mark(s: &Supervised, at: Instant) -> Mark {
        Mark {
            at,
            sink_tasks: s.stages.last().map_or(0, |c| c.counters.tasks()),
            stages: s
                .resizers
                .iter()
                .map(|r| (r.ctx.counters.tasks(), r.ctx.counters.busy_ticks()))
                .collect(),
        }
    }

    /// Samples the queues and the memory limit (what a limit-bound pipeline is judged by).
    fn sample(&mut self, s: &Supervised) {
        let Some(limit) = &s.memory else {
            return;
        };
        let lens = s.stats.queue_lens();
        self.queued.resize(lens.len(), 0);
        for (sum, len) in self.queued.iter_mut().zip(lens) {
            *sum += len.unwrap_or(0);
        }
        self.samples += 1;
        if limit.stats().source_waiting {
            self.limit_waits += 1;
        }
    }

    fn clear_samples(&mut self) {
        self.queued.iter_mut().for_each(|q| *q = 0);
        self.samples = 0;
        self.limit_waits = 0;
    }

    pub(crate) fn step(&mut self, s: &Supervised, now: Instant) {
        if self.settling || self.mark.is_none() {
            self.settling = false;
            self.mark = Some(Self::mark(s, now));
            self.ticks = 0;
            self.clear_samples();
            return;
        }
        self.sample(s);
        self.ticks += 1;
        if self.ticks < self.window_ticks {
            return;
        }
        let start = self.mark.take().expect("checked above");
        let end = Self::mark(s, now);
        let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-3);
        let throughput = end.sink_tasks.saturating_sub(start.sink_tasks) as f64 / secs;
        let window_ticks = secs * 1e9 / clock::ns_per_tick().max(1e-6);
        // Busy share of each tuned stage over the window, and of the default pool.
        let mut shares = Vec::with_capacity(s.resizers.len());
        let mut pool_busy = 0.0;
        for (i, r) in s.resizers.iter().enumerate() {
            let busy = end.stages[i].1.wrapping_sub(start.stages[i].1) as f64;
            let lanes = r.concurrency().max(1) as f64;
            shares.push((busy / (window_ticks * lanes)).min(1.0));
            if r.on_default_pool {
                pool_busy += busy;
            }
        }
        let threads = s.pool.num_threads();
        let pool_share = pool_busy / (window_ticks * threads.max(1) as f64);
        self.mark = Some(end);
        self.ticks = 0;

        self.now = now;
        if let Some(trial) = self.trial.take() {
            // A change that paid goes on at once from the window that judged it.
            if !self.judge(s, trial, throughput, now) {
                return;
            }
        } else if let Some(steady) = self.steady_ref {
            let shift = (throughput - steady) / steady.max(1e-9);
            let side = if shift > WORKLOAD_SHIFT {
                1
            } else if shift < -WORKLOAD_SHIFT {
                -1
            } else {
                0
            };
            self.shifted = match side {
                0 => 0,
                _ if self.shifted.signum() == side => self.shifted + side,
                _ => side,
            };
            if self.shifted.unsigned_abs() >= SHIFT_WINDOWS && !self.holds.is_empty() {
                self.shifted = 0;
                self.steady_ref = Some(throughput);
                tracing::info!(
                    target: super::TARGET,
                    "autotune: throughput moved from {steady:.0} to {throughput:.0} items/s \
                     without a change: workload changed, holds lifted"
                );
                self.holds.clear();
            }
        }
        self.raise(s, &shares, pool_share, throughput);
        self.clear_samples();
    }

    fn ceiling(&self, knob: Knob, bound: usize) -> usize {
        // An expired hold stays, so that its length keeps doubling if the knob fails again.
        self.holds
            .get(&knob)
            .filter(|h| h.until > self.now)
            .map_or(bound, |h| h.ceiling.min(bound))
    }

    /// Raises the busiest saturated stage (and the pool with it when it needs threads).
    fn raise(&mut self, s: &Supervised, shares: &[f64], pool_share: f64, throughput: f64) {
        let threads = s.pool.num_threads();
        let pool_room = self.ceiling(Knob::Pool, self.pool_max) > threads;
        let busiest = s
            .resizers
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.auto
                    .is_some_and(|(_, hi)| r.concurrency() < self.ceiling(Knob::Stage(*i), hi))
            })
            .map(|(i, _)| (i, shares[i]))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let pool_bound = pool_share >= SATURATED
            && s.resizers.iter().enumerate().any(|(i, r)| {
                r.on_default_pool && r.auto.is_some() && shares[i] >= SATURATED * 0.5
            });
        let mut moves = Vec::new();
        let mut reason = String::new();
        if let Some((i, share)) = busiest.filter(|&(_, share)| share >= SATURATED) {
            let r = &s.resizers[i];
            let (_, hi) = r.auto.expect("filtered above");
            let c = r.concurrency();
            let ceiling = self.ceiling(Knob::Stage(i), hi.min(r.max));
            // An async stage's lanes cost no thread: it doubles.
            let to = if !r.is_async {
                c + 1
            } else {
                (c * 2).max(c + 1)
            }
            .min(ceiling);
            if to > c {
                moves.push((Knob::Stage(i), c, to));
                reason = format!("busiest stage, {:.0}% busy", share * 100.0);
                // More lanes than threads on the pool: a thread with them, if there is room.
                let pool_lanes: usize = s
                    .resizers
                    .iter()
                    .filter(|r| r.on_default_pool)
                    .map(|r| r.concurrency())
                    .sum::<usize>()
                    + (to - c);
                if r.on_default_pool && pool_lanes > threads && pool_room {
                    moves.push((Knob::Pool, threads, threads + 1));
                }
            }
        }
        // The pool alone when its threads are the limit: all busy, and a stage on it busy
        // too (its lanes wait for threads).
        if moves.is_empty() && pool_bound && pool_room {
            moves.push((Knob::Pool, threads, threads + 1));
            reason = format!("default pool {:.0}% busy", pool_share * 100.0);
        }
        // Held back by the memory limit, no stage is busy on average, but items arrive in
        // bursts as others are delivered: throughput is then what is in flight over the time
        // an item takes, so the stage where admitted items wait longest is raised.
        if moves.is_empty() && self.limit_waits * 2 >= self.samples.max(1) {
            let waiting = |r: &super::resize::StageResizer| {
                let queue = r.ctx.info.index.checked_sub(1)?;
                let sum = *self.queued.get(queue)?;
                Some(sum as f64 / self.samples.max(1) as f64)
            };
            let candidate = s
                .resizers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let (_, hi) = r.auto?;
                    let ceiling = self.ceiling(Knob::Stage(i), hi.min(r.max));
                    if r.concurrency() < ceiling {
                        Some((i, waiting(r)?, ceiling))
                    } else {
                        None
                    }
                })
                .filter(|&(_, queued, _)| queued >= 1.0)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, queued, ceiling)) = candidate {
                let r = &s.resizers[i];
                let c = r.concurrency();
                let to = if !r.is_async {
                    c + 1
                } else {
                    (c * 2).max(c + 1)
                }
                .min(ceiling);
                moves.push((Knob::Stage(i), c, to));
                reason =
                    format!("memory limit binding; {queued:.1} items wait at its input on average");
                let pool_lanes: usize = s
                    .resizers
                    .iter()
                    .filter(|r| r.on_default_pool)
                    .map(|r| r.concurrency())
                    .sum::<usize>()
                    + (to - c);
                if r.on_default_pool && pool_lanes > threads && pool_room {
                    moves.push((Knob::Pool, threads, threads + 1));
                }
            }
        }
        if moves.is_empty() {
            return;
        }
        for &(knob, _, to) in &moves {
            self.apply(s, knob, to, reason.clone(), throughput);
        }
        self.trial = Some(Trial {
            moves,
            before: throughput,
            after: Vec::new(),
        });
        self.settling = true;
    }

    fn apply(&self, s: &Supervised, knob: Knob, to: usize, reason: String, throughput: f64) {
        let result = match knob {
            Knob::Stage(i) => s.resize_stage(i, to, reason, throughput),
            Knob::Pool => s.resize_pool(to, reason, throughput),
        };
        if let Err(e) = result {
            tracing::warn!(target: super::TARGET, "autotune: {e}");
        }
    }

    /// Keeps a change that paid (true), undoes one that did not and holds its knobs.
    fn judge(&mut self, s: &Supervised, mut trial: Trial, throughput: f64, now: Instant) -> bool {
        trial.after.push(throughput);
        let throughput = trial.after.iter().sum::<f64>() / trial.after.len() as f64;
        if throughput >= trial.before * (1.0 + MIN_GAIN) {
            for (knob, _, _) in &trial.moves {
                self.holds.remove(knob);
            }
            return true;
        }
        // A shared machine makes single windows noisy: an unclear verdict (neither a gain
        // nor a clear loss) is judged again with one more window.
        if trial.after.len() < JUDGED_WINDOWS && throughput > trial.before * (1.0 - CLEAR_LOSS) {
            self.trial = Some(trial);
            return false;
        }
        let reason = format!(
            "no gain ({:.0} -> {:.0} items/s): undone",
            trial.before, throughput
        );
        for &(knob, from, _) in trial.moves.iter().rev() {
            self.apply(s, knob, from, reason.clone(), throughput);
            let length = self
                .holds
                .get(&knob)
                .map_or(FIRST_HOLD, |h| (h.length * 2).min(Duration::from_secs(300)));
            self.holds.insert(
                knob,
                Hold {
                    ceiling: from,
                    until: now + length,
                    length,
                },
            );
        }
        self.steady_ref = Some(trial.before);
        self.shifted = 0;
        self.settling = true;
        false
    }
}
