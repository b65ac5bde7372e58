//! The supervisor thread, which runs autotune and stall detection while the pipeline runs.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use super::controller::Controller;
use super::running::Supervised;
use super::stall::StallWatch;
use super::TuneSettings;

/// The supervisor thread: a controller step and a stall check every `interval`, until the
/// pipeline ends (`stopped` disconnects) or stops.
pub(crate) fn run_supervisor(
    supervised: Arc<Supervised>,
    settings: TuneSettings,
    stopped: Receiver<()>,
) {
    let interval = settings.interval();
    let mut controller = settings
        .autotune
        .then(|| Controller::new(&supervised, &settings));
    let mut stall = StallWatch::new(&settings);
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if supervised.run.stop_requested() {
            return;
        }
        let now = Instant::now();
        if let Some(c) = controller.as_mut() {
            c.step(&supervised, now);
        }
        if let Some(stall) = stall.as_mut() {
            stall.check(&supervised, now);
        }
    }
}
