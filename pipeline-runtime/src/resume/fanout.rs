//! Exact resume through one-to-many stages (`flat_pipe`, `async_try_flat_pipe`,
//! `disaggregate`): which outputs of an input still in flight were already resolved.
//!
//! With resume tracking on, a one-to-many stage tags its `k`-th output of an input as
//! output `k` of that input's tag (see [`Ledger::output`](super::ledger::Ledger::output)).
//! When such an output is resolved (delivered, failed, filtered), the ledger marks `k` done
//! for its input; the resume state carries, for each pending input with outputs done, their
//! indices ([`FanOutState`]). A resumed stage, given the same input again, skips those
//! outputs. This needs a fan-out that gives the same outputs in the same order for the same
//! input (the guide says so); the indices are kept as ranges, so a state stays bounded by the
//! outputs in flight, not by how many outputs an input has.

use serde::{Deserialize, Serialize};

use super::accounts::Outcome;

/// Output indices of one input, as ascending, disjoint `[start, end)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct IndexSet(Vec<[u64; 2]>);

impl IndexSet {
    /// Adds `k`; outputs are resolved mostly in order, so this is usually a push or a
    /// widening of the last range.
    pub(crate) fn insert(&mut self, k: u64) {
        let runs = &mut self.0;
        // The first range ending at or after `k`.
        let i = runs.partition_point(|r| r[1] < k);
        match runs.get(i).copied() {
            Some([a, b]) if a <= k && k < b => {} // already in
            Some([_, b]) if b == k => {
                runs[i][1] = k + 1;
                if runs.get(i + 1).is_some_and(|next| next[0] == k + 1) {
                    runs[i][1] = runs[i + 1][1];
                    runs.remove(i + 1);
                }
            }
            Some([a, _]) if a == k + 1 => runs[i][0] = k,
            _ => runs.insert(i, [k, k + 1]),
        }
    }

    pub(crate) fn contains(&self, k: u64) -> bool {
        let i = self.0.partition_point(|r| r[1] <= k);
        self.0.get(i).is_some_and(|r| r[0] <= k)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its `[start, end)` ranges, ascending.
    #[cfg(unix)]
    pub(crate) fn ranges(&self) -> &[[u64; 2]] {
        &self.0
    }

    /// The set of these ranges; an error if they are not ascending, apart and non-empty.
    #[cfg(unix)]
    pub(crate) fn from_ranges(ranges: Vec<[u64; 2]>) -> Result<Self, String> {
        let set = Self(ranges);
        set.check()?;
        Ok(set)
    }

    /// Why the ranges are not ascending, disjoint and non-empty, if they are not.
    fn check(&self) -> Result<(), String> {
        if self.0.iter().any(|[a, b]| a >= b) {
            return Err("a fan-out's done range is empty or reversed".into());
        }
        if self.0.windows(2).any(|w| w[0][1] >= w[1][0]) {
            return Err("a fan-out's done ranges are not ascending and apart".into());
        }
        Ok(())
    }
}

/// In a resume state: an input of a one-to-many stage that was in flight with some of its
/// outputs resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FanOutState {
    /// The source positions the input stands for, counted from the state's epoch start: one
    /// (an item), or a batch's members in batch order (a `disaggregate`).
    pub(crate) input: Vec<u64>,
    /// The output indices already resolved: the resumed stage skips them.
    pub(crate) done: IndexSet,
    /// The best outcome of those outputs (the position's account, once resolved).
    pub(crate) outcome: Outcome,
}

impl FanOutState {
    /// Checks the records of a state whose pending positions are `pending` (ascending):
    /// each input is pending and in one record only, and each record is well formed.
    pub(crate) fn check_all(records: &[Self], pending: &[u64]) -> Result<(), String> {
        if records.len() > pending.len() {
            return Err("more fan-out records than pending positions".into());
        }
        let mut seen = Vec::new();
        for r in records {
            if r.input.is_empty() {
                return Err("a fan-out record names no input".into());
            }
            if r.done.is_empty() {
                return Err("a fan-out record has no output done".into());
            }
            r.done.check()?;
            for &p in &r.input {
                if pending.binary_search(&p).is_err() {
                    return Err(format!("a fan-out record's input {p} is not pending"));
                }
                seen.push(p);
            }
            if seen.len() > pending.len() {
                return Err("fan-out records name a position twice".into());
            }
        }
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err("fan-out records name a position twice".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ks: &[u64]) -> IndexSet {
        let mut s = IndexSet::default();
        for &k in ks {
            s.insert(k);
        }
        s
    }

    #[test]
    fn indices_are_kept_as_merged_ranges_in_any_order() {
        let s = set(&[0, 1, 2, 5, 4, 9, 3, 3]);
        assert_eq!(s.0, [[0, 6], [9, 10]]);
        for k in 0..12 {
            assert_eq!(s.contains(k), k < 6 || k == 9, "{k}");
        }
        assert_eq!(set(&[7, 5, 6]).0, [[5, 8]]);
        assert!(set(&[7, 5, 6]).check().is_ok());
    }

    #[test]
    fn malformed_records_are_refused() {
        let ok = |input: Vec<u64>, done: Vec<[u64; 2]>| FanOutState {
            input,
            done: IndexSet(done),
            outcome: Outcome::Delivered,
        };
        let pending = [2, 3, 5];
        assert_eq!(
            FanOutState::check_all(
                &[ok(vec![2], vec![[0, 2]]), ok(vec![3, 5], vec![[1, 2]])],
                &pending
            ),
            Ok(())
        );
        let cases = [
            (vec![ok(vec![4], vec![[0, 1]])], "not pending"),
            (vec![ok(vec![], vec![[0, 1]])], "no input"),
            (vec![ok(vec![2], vec![])], "no output done"),
            (vec![ok(vec![2], vec![[3, 3]])], "empty or reversed"),
            (vec![ok(vec![2], vec![[0, 4], [2, 6]])], "ascending"),
            (
                vec![ok(vec![2], vec![[0, 1]]), ok(vec![3, 2], vec![[0, 1]])],
                "twice",
            ),
            (vec![ok(vec![2, 2, 2, 2], vec![[0, 1]])], "twice"),
        ];
        for (records, why) in cases {
            let err = FanOutState::check_all(&records, &pending).unwrap_err();
            assert!(err.contains(why), "{err} (wanted {why})");
        }
    }
}
