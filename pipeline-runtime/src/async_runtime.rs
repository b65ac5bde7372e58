//! The pipeline's async runtime: a current-thread tokio runtime on its own thread, started
//! only when a stage is `async` or the source is a `Stream`. Async stage functions may use
//! tokio (timers, `tokio::spawn`) from inside. Their lanes run on the [`Relay`].

mod relay;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use futures::channel::oneshot;
use tokio::runtime::Handle;

pub(crate) use relay::Relay;

use crate::executor::{drop_deferred, join_all_until};
use crate::failure::BuildError;

#[derive(Debug)]
pub(crate) struct AsyncRuntime {
    handle: Handle,
    relay: Arc<Relay>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AsyncRuntime {
    pub(crate) fn start() -> Result<Self, BuildError> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_time();
        // Object stores talk HTTP through tokio's sockets.
        #[cfg(feature = "storage")]
        builder.enable_io();
        let runtime = builder
            .build()
            .map_err(|e| BuildError::new(format!("cannot start the async runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let relay = Arc::new(Relay::default());
        drop(handle.spawn(relay.clone().run()));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pipeline-async".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime drops every lane still parked on it; sync lanes
                // cancelled by those drops were deferred (see `executor::task`).
                drop(runtime);
                drop_deferred();
            })
            .map_err(|e| BuildError::new(format!("cannot start the async runtime thread: {e}")))?;
        Ok(Self {
            handle,
            relay,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Where async stages' lanes run.
    pub(crate) fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Ends the runtime (cancelling its tasks) and waits for its thread until `deadline`.
    pub(crate) fn shutdown(&mut self, deadline: Instant) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(thread) => join_all_until(vec![thread], deadline),
            None => true,
        }
    }
}

impl Drop for AsyncRuntime {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
