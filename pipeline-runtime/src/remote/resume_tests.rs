//! Resume through a remote region: the resume check over local lanes and over a worker in
//! this process, in input and completion order; a worker cut off mid-run and a resume
//! after it deliver every item once; what tracking cannot follow is refused.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{RemoteWorkers, Worker};
use crate::resume_check::{Attempt, Checked, ResumeCheck};
use crate::{BoxError, Order, PipelineBuilder, ResumeState, StageBuilder};

const TOKEN: &str = "open sesame";

fn fail_on_3_mod_7(x: u64) -> Result<u64, BoxError> {
    if x % 7 == 3 {
        Err(format!("{x} is 3 mod 7").into())
    } else {
        Ok(x)
    }
}

fn keep_not_1_mod_5(x: u64) -> Option<u64> {
    (x % 5 != 1).then_some(x * 2)
}

/// Fails some inputs and filters others: inputs with no output.
fn fail_filter_double(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.try_pipe(fail_on_3_mod_7).opt_pipe(keep_not_1_mod_5)
}

fn in_batches(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items.aggregate(3)
}

crate::__private::register!(region fail_filter_double);
crate::__private::register!(region in_batches);

fn expected(n: u64) -> Vec<u64> {
    (0..n)
        .filter(|x| x % 7 != 3 && x % 5 != 1)
        .map(|x| x * 2)
        .collect()
}

fn start_worker() -> String {
    let worker = Worker::bind("127.0.0.1:0", TOKEN).expect("bind");
    let addr = worker.local_addr().expect("addr").to_string();
    std::thread::spawn(move || worker.serve());
    addr
}

/// The tiers checked: two local lanes, and one in-process worker with no local lane.
fn tiers() -> Vec<(&'static str, RemoteWorkers)> {
    let local = RemoteWorkers::new(Vec::<String>::new(), TOKEN)
        .local_lanes(2)
        .ticket_size(4);
    let remote = RemoteWorkers::new([start_worker()], TOKEN)
        .local_lanes(0)
        .ticket_size(4);
    vec![("local lanes", local), ("a worker", remote)]
}

#[test]
fn a_remote_region_resumes_exactly_in_input_and_completion_order() {
    for (tier, workers) in tiers() {
        for order in [Order::Input, Order::Completion] {
            let build = |attempt: &Attempt<'_, ResumeState>| -> Result<Checked<u64>, BoxError> {
                let pipeline = PipelineBuilder::new()
                    .source(0..150u64)
                    .remote_region(fail_filter_double, &workers)
                    .order(order)
                    .sink()
                    .buffer(2)
                    .resume_from(attempt.own_state().cloned())
                    .build()?;
                Ok(Checked::from(pipeline))
            };
            for seed in 0..2 {
                let report = ResumeCheck::new()
                    .order(order)
                    .seed(seed)
                    .preemptions(3)
                    .run(build)
                    .unwrap_or_else(|e| panic!("{tier}, {order:?}, seed {seed}: {e}"));
                assert_eq!(report.items, expected(150).len(), "{tier}");
            }
        }
        // Across the epochs of a continuous source.
        let build = |attempt: &Attempt<'_, ResumeState>| -> Result<Checked<u64>, BoxError> {
            let pipeline = PipelineBuilder::new()
                .continuous_source(0..40u64)
                .remote_region(fail_filter_double, &workers)
                .sink()
                .resume_from(attempt.own_state().cloned())
                .build()?;
            Ok(Checked::from(pipeline))
        };
        ResumeCheck::new()
            .order(Order::Completion)
            .epochs(3)
            .preemptions(4)
            .seed(5)
            .run(build)
            .unwrap_or_else(|e| panic!("{tier}, continuous: {e}"));
    }
}

#[test]
fn the_accounts_and_the_memory_budget_count_items_through_a_remote_region() {
    for (tier, workers) in tiers() {
        let mut pipeline = PipelineBuilder::new()
            .source(0..100u64)
            .item_bytes(|_| 8)
            .remote_region(fail_filter_double, &workers)
            .sink()
            // Three items in flight, under a ticket's four: tickets close early.
            .memory_limit(24)
            .build()
            .unwrap();
        let mut got: Vec<u64> = pipeline.by_ref().map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, expected(100), "{tier}");
        let account = &pipeline.accounts()[0];
        assert!(account.ended && account.balanced(), "{tier}: {account}");
        assert_eq!(
            account.delivered,
            expected(100).len() as u64,
            "{tier}: {account}"
        );
        assert_eq!(
            account.delivered + account.filtered + account.failed,
            100,
            "{tier}: {account}"
        );
        // A batch made inside: counted whole (the accounts), refused with tracking.
        let mut batches = PipelineBuilder::new()
            .source(0..10u64)
            .remote_region(in_batches, &workers)
            .sink()
            .build()
            .unwrap();
        let mut got: Vec<u64> = batches.by_ref().flat_map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "{tier}");
        assert!(batches.accounts()[0].balanced(), "{tier}");
        let mut tracked = PipelineBuilder::new()
            .source(0..10u64)
            .remote_region(in_batches, &workers)
            .sink()
            .track_resume(true)
            .build()
            .unwrap();
        let refused = tracked
            .start()
            .expect_err("a batch inside is refused with tracking")
            .to_string();
        assert!(refused.contains("remote region `in_batches`"), "{refused}");
        assert!(refused.contains("a batch made inside it"), "{refused}");
    }
}

/// Forwards connections to `target`; the first is cut once `cut_after` bytes have come
/// back from the worker (a worker lost mid-run), later ones are left whole.
fn flaky_proxy(target: String, cut_after: usize) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let flag = cut.clone();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let limit = if n == 0 { cut_after } else { usize::MAX };
            let pipe = |mut from: TcpStream, mut to: TcpStream, limit: usize, counted: bool| {
                let (seen, flag) = (seen.clone(), flag.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while let Ok(n) = from.read(&mut buf) {
                        let total = if counted {
                            seen.fetch_add(n, Ordering::SeqCst) + n
                        } else {
                            0
                        };
                        if n == 0 || total > limit || to.write_all(&buf[..n]).is_err() {
                            if total > limit {
                                flag.store(true, Ordering::SeqCst);
                            }
                            break;
                        }
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                })
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                limit,
                false,
            );
            pipe(server, client, limit, n == 0);
        }
    });
    (addr, cut)
}

#[test]
fn a_worker_cut_off_mid_run_and_a_resume_deliver_each_item_once() {
    let worker = start_worker();
    let (proxy, cut) = flaky_proxy(worker.clone(), 3000);
    let build = |addr: &str, state: Option<ResumeState>| {
        let workers = RemoteWorkers::new([addr], TOKEN)
            .local_lanes(0)
            .ticket_size(4)
            .timeout(Duration::from_secs(5));
        PipelineBuilder::new()
            .source(0..400u64)
            .remote_region(fail_filter_double, &workers)
            .sink()
            .buffer(1)
            .resume_from(state)
            .build()
            .unwrap()
    };
    let mut first = build(&proxy, None);
    let mut got: Vec<u64> = first.by_ref().take(150).map(Result::unwrap).collect();
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy cut the first connection"
    );
    let state = first.resume_state().unwrap();
    drop(first);
    let mut rest = build(&worker, Some(state));
    got.extend(rest.by_ref().map(Result::unwrap));
    got.sort_unstable();
    assert_eq!(got, expected(400));
    let account = &rest.accounts()[0];
    assert!(account.ended && account.balanced(), "{account}");
}
