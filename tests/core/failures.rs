//! Failure budgets (SPDL's failure_rate_test and _FailCounter cases), panics, source and
//! aggregator failures. The consumer always gets the items produced before a failure.

use pipeline_runtime::error::{BudgetScope, StageFailureKind};
use pipeline_runtime::{Aggregator, BoxError, MaxFailures, PipelineBuilder, PipelineError};

/// Reads everything: the items, then the error if the pipeline failed.
fn drain<T: Send + 'static>(p: pipeline_runtime::Pipeline<T>) -> (Vec<T>, Option<PipelineError>) {
    let mut items = Vec::new();
    let mut error = None;
    for r in p {
        match r {
            Ok(x) => items.push(x),
            Err(e) => {
                assert!(error.is_none(), "the error is reported once");
                error = Some(e);
            }
        }
    }
    (items, error)
}

fn fail_odd(x: u32) -> Result<u32, String> {
    if x % 2 == 1 {
        Err(format!("odd {x}"))
    } else {
        Ok(x)
    }
}

#[test]
fn count_budget_trips_on_the_failure_after_the_threshold() {
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .try_pipe(fail_odd)
        .sink()
        .buffer(2)
        .max_failures(MaxFailures::Count(5))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    // The 6th failure is item 11: the even items before it were delivered, then the error.
    assert_eq!(items, vec![0, 2, 4, 6, 8, 10]);
    let error = error.expect("budget exceeded");
    let failure = error.first();
    assert_eq!(failure.stage(), "fail_odd");
    match failure.kind() {
        StageFailureKind::BudgetExceeded {
            failures,
            invocations,
            scope,
            causes,
            ..
        } => {
            assert_eq!(*failures, 6);
            assert_eq!(*invocations, 12, "items 0..=11 were tried");
            assert_eq!(*scope, BudgetScope::Pipeline);
            assert_eq!(
                causes.last().unwrap().to_string(),
                "stage `fail_odd`: odd 11"
            );
        }
        other => panic!("unexpected kind {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("fail_odd") && text.contains("odd 11"),
        "{text}"
    );
}

#[test]
fn count_zero_allows_no_failure() {
    let p = PipelineBuilder::new()
        .source(0..10u32)
        .try_pipe(fail_odd)
        .sink()
        .buffer(2)
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert_eq!(items, vec![0]);
    assert!(error.is_some());
}

#[test]
fn unlimited_budget_drops_failed_items_and_goes_on() {
    let mut p = PipelineBuilder::new()
        .source(0..100u32)
        .try_pipe(fail_odd)
        .concurrency(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let mut items: Vec<u32> = p.by_ref().map(|r| r.unwrap()).collect();
    items.sort();
    assert_eq!(items, (0..100).step_by(2).collect::<Vec<_>>());
    assert_eq!(p.stats().stages[1].failures, 50);
    assert!(p.stop().is_ok());
}

#[test]
fn pipeline_budget_is_shared_by_stages_without_their_own() {
    // SPDL: max_failures=5 tripped on the 6th failure summed across two stages.
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .try_pipe(|x| if x % 4 == 1 { Err("a") } else { Ok(x) })
        .name("a")
        .try_pipe(|x| if x % 4 == 2 { Err("b") } else { Ok(x) })
        .name("b")
        .sink()
        .buffer(1)
        .queue_capacity(1)
        .max_failures(MaxFailures::Count(5))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    let error = error.expect("tripped");
    match error.first().kind() {
        StageFailureKind::BudgetExceeded { failures, .. } => assert_eq!(*failures, 6),
        other => panic!("{other:?}"),
    }
    // Which stage fails sixth depends on how far `a` runs ahead of `b`.
    assert!(["a", "b"].contains(&error.first().stage()));
    assert!(items.iter().all(|x| x % 4 == 0 || x % 4 == 3));
}

#[test]
fn stage_budget_counts_only_that_stage() {
    // Stage `strict` allows 2 failures of its own; the pipeline-wide budget (100) is not
    // touched by them, and the lenient stage's 20 failures do not trip `strict`.
    let p = PipelineBuilder::new()
        .source(0..200u32)
        .try_pipe(|x| if x % 10 == 0 { Err("lenient") } else { Ok(x) })
        .name("lenient")
        .try_pipe(|x| if x % 50 == 1 { Err("strict") } else { Ok(x) })
        .name("strict")
        .max_failures(MaxFailures::Count(2))
        .sink()
        .buffer(1)
        .max_failures(MaxFailures::Count(100))
        .build()
        .unwrap();
    let (_items, error) = drain(p);
    let error = error.expect("strict trips on its 3rd failure (item 101)");
    assert_eq!(error.first().stage(), "strict");
    match error.first().kind() {
        StageFailureKind::BudgetExceeded {
            failures, scope, ..
        } => {
            assert_eq!(*failures, 3);
            assert_eq!(*scope, BudgetScope::Stage);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.failures().len(),
        1,
        "only the stage that tripped fails"
    );
}

#[test]
fn stage_budget_tolerates_what_the_pipeline_budget_would_not() {
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .try_pipe(fail_odd)
        .max_failures(MaxFailures::Unlimited)
        .sink()
        .buffer(1)
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert!(error.is_none());
    assert_eq!(items.len(), 50);
}

#[test]
fn rate_budget_waits_for_its_probation_then_trips() {
    // SPDL: 25% failures against a rate of 1/5 tripped at 100 invocations.
    let p = PipelineBuilder::new()
        .source(0..1000u32)
        .try_pipe(|x| if x % 4 == 0 { Err("quarter") } else { Ok(x) })
        .sink()
        .buffer(1)
        .max_failures(MaxFailures::rate(0.2))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    match error.expect("tripped").first().kind() {
        StageFailureKind::BudgetExceeded {
            failures,
            invocations,
            ..
        } => {
            assert_eq!(*invocations, 100);
            assert_eq!(*failures, 25);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(items.len(), 75);
}

#[test]
fn rate_budget_under_the_rate_never_trips() {
    let p = PipelineBuilder::new()
        .source(0..1000u32)
        .try_pipe(|x| if x % 10 == 0 { Err("tenth") } else { Ok(x) })
        .concurrency(4)
        .sink()
        .buffer(1)
        .max_failures(MaxFailures::Rate {
            rate: 0.2,
            min_invocations: 10,
        })
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert!(error.is_none());
    assert_eq!(items.len(), 900);
}

#[test]
fn a_panic_fails_the_item_with_its_message() {
    let p = PipelineBuilder::new()
        .source(0..10u32)
        .pipe(|x| {
            if x == 3 {
                panic!("bad item {x}");
            }
            x
        })
        .name("panicky")
        .sink()
        .buffer(2)
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert_eq!(items, vec![0, 1, 2]);
    let error = error.unwrap();
    match error.first().kind() {
        StageFailureKind::BudgetExceeded { causes, .. } => {
            assert!(causes[0].is_panic());
            assert_eq!(causes[0].stage(), "panicky");
            assert!(causes[0].to_string().contains("bad item 3"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn async_panic_and_error_fail_items() {
    let mut p = PipelineBuilder::new()
        .source(0..10u32)
        .async_try_pipe(|x| async move {
            match x {
                2 => panic!("async boom"),
                5 => Err("five"),
                _ => Ok(x),
            }
        })
        .concurrency(2)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let mut items: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    items.sort();
    assert_eq!(items, vec![0, 1, 3, 4, 6, 7, 8, 9]);
    assert_eq!(p.stats().stages[1].failures, 2);
}

#[test]
fn source_error_after_items_delivers_them_then_fails() {
    let source = (0..5u32)
        .map(Ok)
        .chain(std::iter::once(Err("disk gone")))
        .chain((10..20).map(Ok));
    let p = PipelineBuilder::new()
        .try_source(source)
        .pipe(|x| x)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    let error = error.unwrap();
    assert!(matches!(error.first().kind(), StageFailureKind::Source(_)));
    assert!(error.to_string().contains("disk gone"), "{error}");
}

#[test]
fn source_panic_delivers_earlier_items_then_fails() {
    let source = (0..10u32).inspect(|&x| {
        if x == 4 {
            panic!("source exploded");
        }
    });
    let p = PipelineBuilder::new()
        .source(source)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert_eq!(items, vec![0, 1, 2, 3]);
    assert!(error.unwrap().to_string().contains("source exploded"));
}

struct FailingAggregator {
    seen: u32,
}

impl Aggregator<u32> for FailingAggregator {
    type Output = u32;

    fn accumulate(&mut self, item: u32) -> Result<Option<u32>, BoxError> {
        self.seen += 1;
        if item == 7 {
            return Err("corrupt state".into());
        }
        Ok(Some(item))
    }

    fn flush(&mut self) -> Result<Option<u32>, BoxError> {
        Ok(None)
    }
}

#[test]
fn aggregator_failure_ends_the_pipeline_with_its_name() {
    let p = PipelineBuilder::new()
        .source(0..20u32)
        .aggregate_with(FailingAggregator { seen: 0 })
        .name("packer")
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert_eq!(items, (0..7).collect::<Vec<_>>());
    let error = error.unwrap();
    assert_eq!(error.first().stage(), "packer");
    assert!(matches!(
        error.first().kind(),
        StageFailureKind::Aggregator(_)
    ));
    assert!(error.to_string().contains("corrupt state"));
}

#[test]
fn stop_reports_an_unread_failure() {
    let mut p = PipelineBuilder::new()
        .source(0..10u32)
        .try_pipe(fail_odd)
        .sink()
        .buffer(16)
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    p.start().unwrap();
    assert!(pipeline_tests::wait_until(
        std::time::Duration::from_secs(5),
        || p.stats().stages[1].failures > 0
    ));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let error = p.stop().expect_err("the failure was not read yet");
    assert_eq!(error.first().stage(), "fail_odd");
}
