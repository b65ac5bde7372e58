//! Store calls outside a pipeline (listing shards before building one, preparing data):
//! [`block_on`] runs a future on a short-lived current-thread tokio runtime with its I/O
//! and time drivers, on the calling thread.

use std::future::Future;

/// Runs `future` to completion on the calling thread, on a fresh tokio runtime. For code
/// outside a pipeline (inside one, store calls run on the pipeline's runtime). Not for use
/// from inside an async context: that runtime would be nested in the caller's.
///
/// # Panics
///
/// If the runtime cannot start (the system refuses the I/O driver its file descriptors).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a tokio runtime for storage calls")
        .block_on(future)
}
