//! The always-on ledger: per epoch, sourced = delivered + failed + filtered (+ in flight),
//! with a checksum of the delivered positions, in `stats()` and across a resume.

use std::time::Duration;

use pipeline_runtime::stats::EpochAccount;
use pipeline_runtime::{Order, Pipeline, PipelineBuilder, ResumeState};

/// 0..n through a failing stage (x % 7 == 3) and a filter (x % 5 == 1), one-to-one.
fn one_to_one(n: u64, order: Order, concurrency: usize) -> Pipeline<u64> {
    PipelineBuilder::new()
        .source(0..n)
        .try_pipe(|x| match x % 7 {
            3 => Err(format!("{x} fails")),
            _ => Ok(x),
        })
        .concurrency(concurrency)
        .order(order)
        .opt_pipe(|x| (x % 5 != 1).then_some(x))
        .sink()
        .stats(false)
        .build()
        .unwrap()
}

fn counts(a: &EpochAccount) -> [u64; 5] {
    [a.sourced, a.delivered, a.failed, a.filtered, a.in_flight]
}

fn expected(n: u64) -> [u64; 5] {
    let failed = (0..n).filter(|x| x % 7 == 3).count() as u64;
    let filtered = (0..n).filter(|x| x % 7 != 3 && x % 5 == 1).count() as u64;
    [n, n - failed - filtered, failed, filtered, 0]
}

#[test]
fn a_finished_run_balances_with_every_outcome_counted_even_with_statistics_off() {
    let mut pipeline = one_to_one(1000, Order::Input, 4);
    let items = pipeline.by_ref().filter(Result::is_ok).count() as u64;
    let accounts = pipeline.stats().accounts;
    assert_eq!(accounts.len(), 1);
    let account = &accounts[0];
    assert_eq!(counts(account), expected(1000));
    assert_eq!(account.delivered, items);
    assert!(account.ended && account.balanced(), "{account}");
}

#[test]
fn the_checksum_depends_on_the_delivered_positions_not_their_order() {
    let checksum = |order, concurrency| {
        let mut pipeline = one_to_one(500, order, concurrency);
        pipeline.by_ref().for_each(drop);
        pipeline.accounts()[0].checksum
    };
    let input = checksum(Order::Input, 1);
    assert_eq!(checksum(Order::Completion, 8), input);
    let mut fewer = one_to_one(499, Order::Input, 1);
    fewer.by_ref().for_each(drop);
    assert_ne!(fewer.accounts()[0].checksum, input);
}

#[test]
fn one_to_many_stages_and_batches_count_source_positions() {
    // Each x fans out into x % 3 items (none for multiples of 3: filtered), in batches of 4
    // (the last one partial).
    let mut pipeline = PipelineBuilder::new()
        .source(0..100u32)
        .flat_pipe(|x| vec![x; (x % 3) as usize])
        .concurrency(3)
        .aggregate(4)
        .sink()
        .build()
        .unwrap();
    let delivered: Vec<u32> = pipeline.by_ref().flat_map(Result::unwrap).collect();
    let account = &pipeline.accounts()[0];
    assert_eq!(delivered.len(), 99);
    assert_eq!(
        counts(account),
        [100, 66, 0, 34, 0],
        "multiples of 3 give nothing: {account}"
    );
    assert!(account.balanced());
}

#[test]
fn batches_that_fail_or_are_dropped_count_their_members_without_tracking() {
    // Batches of 10 over 0..103: those starting at a multiple of 20 fail after the
    // aggregate, the last 3 items are dropped (`drop_last`).
    let mut pipeline = PipelineBuilder::new()
        .source(0..103u32)
        .pipe(|x| x)
        .aggregate(10)
        .drop_last(true)
        .try_pipe(|batch: Vec<u32>| match batch[0] % 20 {
            0 => Err("fails"),
            _ => Ok(batch),
        })
        .sink()
        .stats(false)
        .build()
        .unwrap();
    let delivered: usize = pipeline.by_ref().map(|b| b.unwrap().len()).sum();
    let account = &pipeline.accounts()[0];
    assert_eq!(delivered, 50);
    assert_eq!(counts(account), [103, 50, 50, 3, 0], "{account}");
    assert!(account.ended && account.balanced());
}

#[test]
fn each_epoch_of_a_continuous_source_has_its_account() {
    let mut pipeline = PipelineBuilder::new()
        .continuous_source(0..10u32)
        .opt_pipe(|x| (x != 4).then_some(x))
        .concurrency(2)
        .sink()
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(pipeline.epoch().count(), 9);
    }
    let accounts = pipeline.accounts();
    let ended: Vec<[u64; 5]> = accounts.iter().filter(|a| a.ended).map(counts).collect();
    assert_eq!(ended, vec![[10, 9, 0, 1, 0]; 3], "{accounts:?}");
    let epochs: Vec<u64> = accounts.iter().map(|a| a.epoch).collect();
    assert_eq!(&epochs[..3], [0, 1, 2]);
    // The report shows them.
    assert!(pipeline
        .stats()
        .to_string()
        .contains("ledger epoch 1: sourced 10"));
}

#[test]
fn a_stopped_run_counts_its_items_in_flight() {
    let mut pipeline = PipelineBuilder::new()
        .source(0..10_000u64)
        .pipe(|x| {
            std::thread::sleep(Duration::from_micros(50));
            x
        })
        .concurrency(4)
        .sink()
        .buffer(8)
        .build()
        .unwrap();
    let read = pipeline.by_ref().take(20).count() as u64;
    std::thread::sleep(Duration::from_millis(20));
    pipeline.stop().unwrap();
    let account = &pipeline.accounts()[0];
    assert_eq!(account.delivered, read);
    assert!(account.in_flight > 0, "{account}");
    assert_eq!(
        account.sourced,
        account.delivered + account.failed + account.filtered + account.in_flight
    );
    assert!(!account.ended && account.balanced());
}

/// Batches of 4 over 0..n with failures and a filter, resumable.
fn batches(n: u32, concurrency: usize, state: Option<ResumeState>) -> Pipeline<Vec<u32>> {
    PipelineBuilder::new()
        .source(0..n)
        .try_pipe(|x| match x % 7 {
            3 => Err(format!("{x} fails")),
            _ => Ok(x),
        })
        .concurrency(concurrency)
        .opt_pipe(|x| (x % 5 != 1).then_some(x))
        .aggregate(4)
        .sink()
        .buffer(2)
        .queue_capacity(3)
        .track_resume(true)
        .resume_from(state)
        .build()
        .unwrap()
}

#[test]
fn the_accounts_carry_across_a_resume_and_balance_at_the_end() {
    let mut whole = batches(300, 4, None);
    whole.by_ref().for_each(drop);
    let straight = whole.accounts()[0].clone();
    assert!(straight.balanced() && straight.ended);

    let mut first = batches(300, 4, None);
    let _ = first.by_ref().take(9).count();
    std::thread::sleep(Duration::from_millis(10));
    let state = first.resume_state().unwrap();
    drop(first);
    // Through JSON, as a job would keep it.
    let state: ResumeState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let mut resumed = batches(300, 2, Some(state));
    resumed.by_ref().for_each(drop);
    let account = &resumed.accounts()[0];
    assert!(account.ended && account.balanced(), "{account}");
    assert_eq!(counts(account), counts(&straight));
    assert_eq!(account.checksum, straight.checksum);
}

#[test]
fn a_state_whose_accounts_do_not_match_it_is_refused() {
    let mut first = batches(300, 4, None);
    let _ = first.by_ref().take(5).count();
    let state = first.resume_state().unwrap();
    drop(first);
    let mut json: serde_json::Value = serde_json::to_value(&state).unwrap();
    let delivered = &mut json["accounts"][0]["delivered"][0];
    *delivered = (delivered.as_u64().unwrap() + 1).into();
    let tampered: ResumeState = serde_json::from_value(json).unwrap();
    let error = PipelineBuilder::new()
        .source(0..300u32)
        .try_pipe(Ok::<_, String>)
        .opt_pipe(Some)
        .aggregate(4)
        .sink()
        .resume_from(Some(tampered))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("malformed state"), "{error}");
}

/// 0..120: x fans out into x % 4 outputs (none: filtered), x % 9 == 5 fails after its
/// first output (so it counts as delivered), outputs divisible by 7 are dropped.
fn fanned_out(state: Option<ResumeState>) -> Pipeline<Vec<u32>> {
    PipelineBuilder::new()
        .source(0..120u32)
        .try_flat_pipe(|x: u32| {
            (0..x % 4).map(move |k| match (x % 9, k) {
                (5, 1) => Err(format!("{x} fails")),
                _ => Ok(x * 10 + k),
            })
        })
        .concurrency(3)
        .opt_pipe(|y| (y % 7 != 0).then_some(y))
        .aggregate(3)
        .sink()
        .buffer(1)
        .queue_capacity(2)
        .resume_from(state)
        .build()
        .unwrap()
}

/// What each position of `fanned_out` counts as: [delivered, failed, filtered].
fn fanned_out_expected() -> [u64; 3] {
    let mut counts = [0; 3];
    for x in 0..120u32 {
        let outputs: Vec<Result<u32, ()>> = (0..x % 4)
            .map(|k| match (x % 9, k) {
                (5, 1) => Err(()),
                _ => Ok(x * 10 + k),
            })
            .take_while(Result::is_ok)
            .chain((x % 9 == 5 && x % 4 > 1).then_some(Err(())))
            .collect();
        let delivered = outputs.iter().any(|o| o.is_ok_and(|y| y % 7 != 0));
        let failed = outputs.iter().any(Result::is_err);
        counts[match (delivered, failed) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        }] += 1;
    }
    counts
}

#[test]
fn a_fan_out_split_by_stops_counts_each_position_once_by_its_best_outcome() {
    let [delivered, failed, filtered] = fanned_out_expected();
    let mut whole = fanned_out(None);
    whole.by_ref().for_each(drop);
    let straight = whole.accounts()[0].clone();
    assert_eq!(
        counts(&straight),
        [120, delivered, failed, filtered, 0],
        "{straight}"
    );
    assert!(straight.ended && straight.balanced());
    // Stopped every few batches, each state through JSON: the same account at the end.
    let mut state = None;
    let mut received = 0;
    let last = loop {
        let mut part = fanned_out(state.take());
        let got = part.by_ref().take(4).count();
        received += got;
        if got < 4 {
            break part.accounts()[0].clone();
        }
        std::thread::sleep(Duration::from_millis(2));
        let json = serde_json::to_string(&part.resume_state().unwrap()).unwrap();
        state = Some(serde_json::from_str(&json).unwrap());
    };
    assert!(last.ended && last.balanced(), "{last}");
    assert_eq!(counts(&last), counts(&straight), "{last}");
    assert_eq!(last.checksum, straight.checksum);
    assert!(received > 10, "{received} batches");
}

#[test]
fn a_batch_fanned_out_again_counts_its_members_as_delivered() {
    // Each batch of 3 is taken apart; its items are delivered after the batch's own message
    // was given back, or before: either way the members count as delivered, once.
    let mut pipeline = PipelineBuilder::new()
        .source(0..99u32)
        .aggregate(3)
        .disaggregate()
        .opt_pipe(|x| (x % 5 != 0).then_some(x))
        .sink()
        .track_resume(true)
        .build()
        .unwrap();
    let items = pipeline.by_ref().count() as u64;
    let account = &pipeline.accounts()[0];
    // A batch with any item delivered counts all 3 members as delivered (the convention
    // of one-to-many stages: a position counts once, by its best outcome).
    let batches_out = (0..33u32)
        .filter(|b| (0..3).any(|i| (b * 3 + i) % 5 != 0))
        .count() as u64;
    assert_eq!(items, (0..99).filter(|x| x % 5 != 0).count() as u64);
    assert_eq!(
        counts(account),
        [99, batches_out * 3, 0, 99 - batches_out * 3, 0]
    );
    assert!(account.balanced());
}
