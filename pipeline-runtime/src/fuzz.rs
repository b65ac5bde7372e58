//! Support for the property tests that fuzz the parsers of hostile input (tar shards, worker
//! frames, subprocess records, Parquet files) on stable Rust.
//!
//! Each property runs [`cases`] cases: a few hundred by default, so that `cargo test` stays
//! quick, or as many as the environment variable `PIPELINE_FUZZ_CASES` says, e.g.
//! `PIPELINE_FUZZ_CASES=100000 cargo test -p pipeline-runtime --features storage,parquet fuzz`.
//!
//! The test binary counts the bytes each thread allocates ([`allocated_during`]), so that a
//! test can assert that a size claimed by the input, far larger than the input, is never
//! allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::test_runner::Config;

/// Counts the bytes allocated by each thread (cumulatively: frees are not subtracted).
struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: no counting while the thread's locals are being torn down.
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as u64)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the bytes this thread allocated meanwhile.
pub(crate) fn allocated_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATED.with(Cell::get);
    let r = f();
    (r, ALLOCATED.with(Cell::get) - before)
}

/// How many cases each fuzzing property runs: `PIPELINE_FUZZ_CASES`, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PIPELINE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest configuration of [`cases`] cases, without failure persistence files (found
/// failures are kept as regression tests in the code instead).
pub(crate) fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Each fuzzed call returns within this (the inputs are in memory, a few KiB).
pub(crate) const CALL_BOUND: Duration = Duration::from_secs(2);

/// Runs `f`, asserting that it returns within [`CALL_BOUND`] and allocates at most `limit`
/// bytes.
pub(crate) fn bounded<R>(what: &str, limit: u64, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let (r, bytes) = allocated_during(f);
    let took = t0.elapsed();
    assert!(took < CALL_BOUND, "{what} took {took:?}");
    assert!(
        bytes <= limit,
        "{what} allocated {bytes} bytes (limit {limit})"
    );
    r
}
