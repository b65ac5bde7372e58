//! A stage's counters as they cross a process boundary: a process region's worker sends
//! the totals of its nested pipeline's stages, and the parent adds what changed since the
//! last report into the region's stages in its own statistics, so that every worker's
//! figures are merged there.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::StageCounters;

/// One stage's totals in a worker (clock ticks; the clock is the machine's, the same in
/// both processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RemoteCounts {
    pub(crate) tasks: u64,
    pub(crate) failures: u64,
    pub(crate) outputs: u64,
    pub(crate) extra: u64,
    /// Task-time histogram: non-empty buckets, sum, maximum.
    pub(crate) buckets: Vec<(u16, u64)>,
    pub(crate) sum: u64,
    pub(crate) max: u64,
}

impl RemoteCounts {
    /// What `self` (later totals) adds to `earlier`; totals only grow within one worker.
    pub(crate) fn since(&self, earlier: &RemoteCounts) -> RemoteCounts {
        let buckets = self
            .buckets
            .iter()
            .filter_map(|&(i, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map_or(0, |(_, m)| *m);
                (n > before).then(|| (i, n - before))
            })
            .collect();
        RemoteCounts {
            tasks: self.tasks.saturating_sub(earlier.tasks),
            failures: self.failures.saturating_sub(earlier.failures),
            outputs: self.outputs.saturating_sub(earlier.outputs),
            extra: self.extra.saturating_sub(earlier.extra),
            buckets,
            sum: self.sum.saturating_sub(earlier.sum),
            max: self.max,
        }
    }
}

impl StageCounters {
    /// This stage's totals, every lane added up.
    pub(crate) fn export(&self) -> RemoteCounts {
        let mut out = RemoteCounts::default();
        let mut buckets = std::collections::BTreeMap::<u16, u64>::new();
        for lane in self.lanes.iter() {
            out.tasks += lane.tasks.load(Ordering::Relaxed);
            out.failures += lane.failures.load(Ordering::Relaxed);
            out.outputs += lane.outputs.load(Ordering::Relaxed);
            out.extra += lane.extra.load(Ordering::Relaxed);
            let (b, sum, max) = lane.task_time.export();
            for (i, n) in b {
                *buckets.entry(i).or_default() += n;
            }
            out.sum += sum;
            out.max = out.max.max(max);
        }
        out.buckets = buckets.into_iter().collect();
        out
    }

    /// Adds `delta` (see [`RemoteCounts::since`]) into shard `shard`, from any thread.
    pub(crate) fn absorb(&self, shard: usize, delta: &RemoteCounts) {
        let lane = &self.lanes[shard % self.lanes.len()];
        lane.tasks.fetch_add(delta.tasks, Ordering::Relaxed);
        lane.failures.fetch_add(delta.failures, Ordering::Relaxed);
        lane.outputs.fetch_add(delta.outputs, Ordering::Relaxed);
        lane.extra.fetch_add(delta.extra, Ordering::Relaxed);
        lane.task_time.absorb(&delta.buckets, delta.sum, delta.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_merge_as_deltas_into_another_stage() {
        let worker = StageCounters::new(2);
        worker.lane(0).record_task(Some(100), false);
        worker.lane(1).record_task(Some(300), true);
        worker.lane(1).record_outputs(1);
        let first = worker.export();
        assert_eq!((first.tasks, first.failures, first.outputs), (2, 1, 1));
        let parent = StageCounters::new(4);
        parent.absorb(0, &first.since(&RemoteCounts::default()));
        worker.lane(0).record_task(Some(200), false);
        let second = worker.export();
        let delta = second.since(&first);
        assert_eq!((delta.tasks, delta.sum), (1, 200));
        parent.absorb(1, &delta);
        let merged = parent.export();
        assert_eq!((merged.tasks, merged.failures, merged.outputs), (3, 1, 1));
        assert_eq!(merged.sum, 600);
        assert_eq!(merged.max, 300);
        assert_eq!(merged.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
