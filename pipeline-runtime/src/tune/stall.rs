//! Stall detection: no stage has completed an item for a while, yet items are waiting.
//!
//! Progress is every stage's tasks and outputs added up. Items are waiting when a stage is
//! inside its function, a queue between stages holds items, or the source waits for room in
//! the memory limit; a full queue to the consumer is the consumer's doing, not a stall.
//! The warning names the stage holding the items: the one whose oldest call has run
//! longest, else the last stage with items waiting at its input.

use std::time::{Duration, Instant};

use super::running::Supervised;
use super::{TuneSettings, TARGET};
use crate::clock;
use crate::failure::StageFailureKind;

pub(crate) struct StallWatch {
    warn: Option<Duration>,
    fail: Option<Duration>,
    progress: u64,
    since: Instant,
    warned: bool,
}

/// Where a stalled pipeline holds its items.
#[derive(Debug, PartialEq)]
pub(crate) struct Culprit {
    pub(crate) stage: String,
    /// Calls of its function under way (or items waiting at its input, when none is).
    pub(crate) in_flight: usize,
    /// How long its oldest call has been running (zero when none is).
    pub(crate) oldest: Duration,
}

impl StallWatch {
    pub(crate) fn new(settings: &TuneSettings) -> Option<Self> {
        (settings.stall_warn.is_some() || settings.stall_fail.is_some()).then(|| Self {
            warn: settings.stall_warn,
            fail: settings.stall_fail,
            progress: 0,
            since: Instant::now(),
            warned: false,
        })
    }

    pub(crate) fn check(&mut self, s: &Supervised, now: Instant) {
        let progress: u64 = s
            .stages
            .iter()
            .map(|c| c.counters.tasks() + c.counters.outputs())
            .sum();
        if progress != self.progress {
            self.progress = progress;
            self.since = now;
            self.warned = false;
            return;
        }
        let Some(culprit) = culprit(s) else {
            // Nothing waits (idle, finished, or the consumer is the slow part).
            self.since = now;
            return;
        };
        let idle = now.duration_since(self.since);
        if self.fail.is_some_and(|limit| idle >= limit) {
            tracing::error!(
                target: TARGET,
                stage = %culprit.stage,
                in_flight = culprit.in_flight,
                oldest_ms = culprit.oldest.as_millis() as u64,
                "pipeline stalled for {:.1}s at stage `{}`: ending it",
                idle.as_secs_f64(),
                culprit.stage
            );
            s.run.fail(
                &culprit.stage,
                StageFailureKind::Stalled {
                    idle,
                    in_flight: culprit.in_flight,
                    oldest: culprit.oldest,
                },
            );
            s.run.request_stop();
            self.since = now;
            return;
        }
        if !self.warned && self.warn.is_some_and(|limit| idle >= limit) {
            self.warned = true;
            tracing::warn!(
                target: TARGET,
                stage = %culprit.stage,
                in_flight = culprit.in_flight,
                oldest_ms = culprit.oldest.as_millis() as u64,
                "no stage has completed an item for {:.1}s: stage `{}` holds {} item(s) in \
                 flight, its oldest call running for {:.1}s",
                idle.as_secs_f64(),
                culprit.stage,
                culprit.in_flight,
                culprit.oldest.as_secs_f64()
            );
        }
    }
}

/// The stage holding a stalled pipeline's items, if items are waiting at all.
pub(crate) fn culprit(s: &Supervised) -> Option<Culprit> {
    let now = clock::now();
    let oldest = s
        .stages
        .iter()
        .filter_map(|c| {
            let (n, oldest) = c.lanes.in_calls();
            oldest.map(|t| (c, n, t))
        })
        .min_by_key(|&(_, _, t)| t);
    if let Some((c, n, t)) = oldest {
        return Some(Culprit {
            stage: c.name.clone(),
            in_flight: n,
            oldest: clock::ticks_to_duration(now.saturating_sub(t)),
        });
    }
    let lens = s.stats.queue_lens();
    if lens.last().copied().flatten().is_some_and(|n| n > 0) {
        return None; // the consumer has items to read
    }
    // Queue `i` feeds stage `i + 1`: the last stage with items at its input.
    let waiting = lens
        .iter()
        .enumerate()
        .rev()
        .skip(1)
        .find_map(|(i, len)| len.filter(|&n| n > 0).map(|n| (i + 1, n)));
    if let Some((i, n)) = waiting {
        return s.stages.get(i).map(|c| Culprit {
            stage: c.name.clone(),
            in_flight: n,
            oldest: Duration::ZERO,
        });
    }
    let memory = s.memory.as_ref().map(|b| b.stats())?;
    memory.source_waiting.then(|| Culprit {
        // The items are held where no call is under way: a batch being filled, most likely.
        stage: s
            .stages
            .iter()
            .rev()
            .find(|c| c.kind == crate::stats::StageKind::Aggregate)
            .or(s.stages.first())
            .map_or_else(|| "source".to_owned(), |c| c.name.clone()),
        in_flight: 0,
        oldest: Duration::ZERO,
    })
}
