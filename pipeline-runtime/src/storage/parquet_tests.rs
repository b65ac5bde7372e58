//! The Parquet reader on files written by parquet's own `ArrowWriter` (here, beside the
//! reader, so that the integration tests need no parquet dependency of their own).

use std::sync::Arc;

use super::{batches, read_file, ParquetOptions};
use crate::failure::StageFailureKind;
use crate::storage::{block_on, Filter, Store};
use crate::{MaxFailures, PipelineBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// A file of `rows` rows (`id`, `caption`, `score`) in row groups of 100.
fn parquet_file(rows: i64) -> Vec<u8> {
    let ids = Int64Array::from_iter_values(0..rows);
    let captions = StringArray::from_iter_values((0..rows).map(|i| format!("caption {i}")));
    let scores = Int64Array::from_iter_values((0..rows).map(|i| i * 10));
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("caption", Arc::new(captions) as ArrayRef),
        ("score", Arc::new(scores) as ArrayRef),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

fn store_with(files: &[(&str, Vec<u8>)]) -> Store {
    let store = Store::open("memory://").unwrap();
    for (name, data) in files {
        block_on(store.put(&store.path(name), data.clone().into())).unwrap();
    }
    store
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("id").unwrap();
            col.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn batches_hold_the_named_columns_and_ranks_split_the_row_groups() {
    let store = store_with(&[("t/a.parquet", parquet_file(450))]);
    let files = block_on(store.list(&Filter::suffix(".parquet"))).unwrap();
    let mut all = Vec::new();
    for rank in 0..2 {
        let options = ParquetOptions::new()
            .columns(["id", "score"])
            .batch_size(64)
            .rank(rank, 2);
        let p = PipelineBuilder::new()
            .source(files.clone())
            .async_try_flat_pipe(batches(&store, options))
            .sink()
            .build()
            .unwrap();
        let got: Vec<RecordBatch> = p.collect::<Result<_, _>>().unwrap();
        for b in &got {
            assert_eq!(b.num_columns(), 2);
            assert!(b.column_by_name("caption").is_none());
            assert!(b.num_rows() <= 64);
        }
        let mine = ids(&got);
        // Row groups of 100: rank 0 reads groups 0, 2, 4 (rows 0-99, 200-299, 400-449).
        let expected: Vec<i64> = if rank == 0 {
            (0..100).chain(200..300).chain(400..450).collect()
        } else {
            (100..200).chain(300..400).collect()
        };
        assert_eq!(mine, expected, "rank {rank}");
        all.extend(mine);
    }
    assert_eq!(all.len(), 450);
}

#[test]
fn a_corrupt_footer_fails_that_file_by_name_and_the_others_are_read() {
    let good = parquet_file(120);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff; // inside the footer's length: no valid footer
    bad[n - 8] ^= 0xff;
    let store = store_with(&[("a.parquet", good), ("b.parquet", bad)]);
    let files = block_on(store.list(&Filter::suffix(".parquet"))).unwrap();
    let p = PipelineBuilder::new()
        .source(files)
        .async_try_flat_pipe(batches(&store, ParquetOptions::new()))
        .name("parquet")
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let mut rows = 0;
    let mut error = None;
    for r in p {
        match r {
            Ok(b) => rows += b.num_rows(),
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(rows, 120, "a.parquet is read before b.parquet fails");
    let error = error.expect("b.parquet fails");
    let StageFailureKind::BudgetExceeded { causes, .. } = error.first().kind() else {
        panic!("{error}");
    };
    let cause = causes[0].to_string();
    assert!(
        cause.contains("memory:///b.parquet") && cause.contains("footer"),
        "{cause}"
    );
}

#[test]
fn an_unknown_column_is_named() {
    let store = store_with(&[("a.parquet", parquet_file(10))]);
    let files = block_on(store.list(&Filter::All)).unwrap();
    let mut stream = Box::pin(read_file(
        &store,
        files[0].clone(),
        ParquetOptions::new().columns(["id", "label"]),
    ));
    let first = block_on(futures::StreamExt::next(&mut stream)).unwrap();
    let e = first.unwrap_err().to_string();
    assert!(
        e.contains("no column `label`") && e.contains("id, caption, score"),
        "{e}"
    );
}

/// Fuzzing: the reader over `bytes` (as one file in a memory store) ends, in an error or
/// not, without a panic, within the call bound, allocating a bounded multiple of the file.
fn read_fuzzed(bytes: &[u8]) {
    use futures::StreamExt;
    let store = store_with(&[("f.parquet", bytes.to_vec())]);
    let files = block_on(store.list(&Filter::suffix(".parquet"))).unwrap();
    let file = files.into_iter().next().unwrap();
    crate::fuzz::bounded(
        "parquet read_file",
        64 * bytes.len() as u64 + (16 << 20),
        || {
            let stream = read_file(&store, file, ParquetOptions::new().batch_size(64));
            block_on(stream.for_each(|_| async {}));
        },
    );
}

/// Regression (found by `fuzz_parquet_mutated_files`): one bit flipped in the footer of a
/// file of 79 rows gave a column chunk a negative offset, and parquet's reader panicked
/// ("column start and length should not be negative") instead of failing the file.
#[test]
fn a_column_chunk_outside_the_file_fails_it_without_a_panic() {
    let mut bytes = parquet_file(79);
    // proptest's `Index(15555453173515097953)` over the file's length.
    let at = ((bytes.len() as u128 * 15_555_453_173_515_097_953u128) >> 64) as usize;
    bytes[at] ^= 1;
    read_fuzzed(&bytes);
    let store = store_with(&[("f.parquet", bytes)]);
    let file = block_on(store.list(&Filter::suffix(".parquet")))
        .unwrap()
        .remove(0);
    let results: Vec<_> = block_on(futures::StreamExt::collect::<Vec<_>>(read_file(
        &store,
        file,
        ParquetOptions::new(),
    )));
    let error = results
        .into_iter()
        .find_map(Result::err)
        .expect("the file fails");
    assert_eq!(
        error.kind(),
        crate::storage::StorageErrorKind::Corrupt,
        "{error}"
    );
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(crate::fuzz::config(64))]

        #[test]
        fn fuzz_parquet_arbitrary_bytes(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            magic in any::<bool>(),
        ) {
            if magic && bytes.len() >= 8 {
                // Past the magic check, so that the footer's parser is what is fuzzed.
                let n = bytes.len();
                bytes[..4].copy_from_slice(b"PAR1");
                bytes[n - 4..].copy_from_slice(b"PAR1");
            }
            read_fuzzed(&bytes);
        }

        #[test]
        fn fuzz_parquet_mutated_files(
            rows in 1i64..300,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = parquet_file(rows);
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            read_fuzzed(&bytes);
        }
    }
}

mod sharded {
    //! Parquet files as shards of rows: equal blocks, exact resume, another world size.

    use std::collections::BTreeMap;

    use super::{parquet_file, store_with};
    use crate::distributed::{Rank, Split};
    use crate::storage::parquet::{index_files, ParquetRows};
    use crate::storage::{block_on, Filter, ShardSampler, ShardState};
    use crate::{Order, Pipeline, PipelineBuilder, ResumeState};
    use arrow_array::{Int64Array, RecordBatch, StringArray};

    /// Row `(file, id)` as one number, checking its caption on the way.
    fn row(
        file_of: fn(i64) -> i64,
    ) -> impl Fn(Result<RecordBatch, crate::storage::StorageError>) -> Result<i64, String> {
        move |batch| {
            let b = batch.map_err(|e| e.to_string())?;
            assert_eq!(b.num_rows(), 1);
            let id = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0);
            let caption = b
                .column_by_name("caption")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .to_owned();
            assert_eq!(caption, format!("caption {id}"));
            assert!(
                b.column_by_name("score").is_none(),
                "only the named columns"
            );
            Ok(file_of(id) + id)
        }
    }

    fn build(s: &ShardSampler<ParquetRows>, state: Option<ResumeState>) -> Pipeline<i64> {
        PipelineBuilder::new()
            .continuous_source(s.epochs())
            .try_pipe(row(|_| 0))
            .concurrency(3)
            .order(Order::Input)
            .sink()
            .resume_from(state)
            .build()
            .unwrap()
    }

    #[test]
    fn rows_of_parquet_files_resume_exactly_and_split_equally() {
        let store = store_with(&[
            ("t/a.parquet", parquet_file(250)),
            ("t/b.parquet", parquet_file(130)),
            ("t/c.parquet", parquet_file(321)),
        ]);
        let index = std::sync::Arc::new(
            block_on(index_files(&store, &Filter::suffix(".parquet"), 2)).unwrap(),
        );
        assert_eq!(index.samples(), 701);
        let rows = ParquetRows::new().columns(["id", "caption"]);
        let sampler = |r, w| {
            ShardSampler::with_format(
                &store,
                index.clone(),
                Rank::new(r, w).unwrap(),
                rows.clone(),
            )
            .seed(4)
            .shuffle_buffer(50)
            .split(Split::Even)
        };
        // One rank, stopped in the middle of a row group and resumed: the same sequence.
        let s = sampler(0, 1);
        let mut p = build(&s, None);
        let full: Vec<i64> = p.epoch().map(|x| x.unwrap()).collect();
        assert_eq!(full.len(), 701);
        for stop in [1, 77, 400] {
            let mut p = build(&s, None);
            let mut got: Vec<i64> = p.epoch().take(stop).map(|x| x.unwrap()).collect();
            let state = ShardState::new(&s, p.resume_state().unwrap());
            drop(p);
            let json = serde_json::to_string(&state).unwrap();
            let resumed = serde_json::from_str::<ShardState>(&json)
                .unwrap()
                .resume(&s)
                .unwrap();
            let mut p = build(&resumed.sampler, Some(resumed.pipeline));
            got.extend(p.epoch().map(|x| x.unwrap()));
            assert_eq!(got, full, "stop {stop}");
        }
        // Two ranks stopped, three finish the epoch: every row of the epoch once.
        let mut seen: BTreeMap<(u64, i64), u32> = BTreeMap::new();
        let mut states = Vec::new();
        for r in 0..2 {
            let s = sampler(r, 2);
            let mut p = build(&s, None);
            for x in p.epoch().take(60 + r as usize * 30) {
                *seen.entry((0, x.unwrap())).or_default() += 1;
            }
            states.push(ShardState::new(&s, p.resume_state().unwrap()));
        }
        for r in 0..3 {
            let resumed = ShardState::resume_all(&states, &sampler(r, 3)).unwrap();
            let mut p = build(&resumed.sampler, Some(resumed.pipeline));
            for x in p.epoch() {
                *seen.entry((0, x.unwrap())).or_default() += 1;
            }
        }
        let mut expected: BTreeMap<(u64, i64), u32> = BTreeMap::new();
        for n in [250, 130, 321] {
            for id in 0..n {
                *expected.entry((0, id)).or_default() += 1;
            }
        }
        assert_eq!(seen, expected, "every row of the epoch exactly once");
    }

    /// The resume check over Parquet rows: preemptions at seeded points, on the same world
    /// size and from 3 ranks to 2.
    #[test]
    fn the_resume_check_passes_over_parquet_rows() {
        use crate::resume_check::{Attempt, Checked, ResumeCheck};

        let store = store_with(&[
            ("t/a.parquet", parquet_file(90)),
            ("t/b.parquet", parquet_file(61)),
        ]);
        let index = std::sync::Arc::new(
            block_on(index_files(&store, &Filter::suffix(".parquet"), 2)).unwrap(),
        );
        let rows = ParquetRows::new().columns(["id", "caption"]);
        let job = |attempt: &Attempt<'_, ShardState>| {
            let fresh =
                ShardSampler::with_format(&store, index.clone(), attempt.rank, rows.clone())
                    .seed(8)
                    .shuffle_buffer(10)
                    .split(Split::Even);
            let (sampler, state) = match attempt.states() {
                None => (fresh, None),
                Some(states) => {
                    let resume = ShardState::resume_all(states, &fresh)?;
                    (resume.sampler, Some(resume.pipeline))
                }
            };
            let pipeline = build(&sampler, state);
            Ok(Checked::new(pipeline, move |state| {
                ShardState::new(&sampler, state)
            }))
        };
        for (seed, worlds) in [(0, vec![3]), (1, vec![3]), (2, vec![3, 2]), (3, vec![3, 2])] {
            let check = ResumeCheck::new()
                .epochs(2)
                .preemptions(3)
                .seed(seed)
                .world_sizes(worlds);
            if let Err(e) = check.run(job) {
                panic!("seed {seed}: {e}");
            }
        }
    }
}
