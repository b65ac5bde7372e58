//! Bounded queues between stages.
//!
//! Every stage reads from one bounded queue and writes to the next, so a slow stage or an
//! absent consumer stops upstream stages once the queues fill (backpressure). Epoch
//! boundaries of a continuous source travel in band as [`Msg::EpochEnd`]; the end of the
//! stream is the queue closing when the last sender of the upstream stage is gone.

/// What travels on a queue.
#[derive(Debug)]
pub(crate) enum Msg<T> {
    Item(T),
    EpochEnd,
}

pub(crate) type Tx<T> = async_channel::Sender<Msg<T>>;
pub(crate) type Rx<T> = async_channel::Receiver<Msg<T>>;

/// Creates a queue holding at most `capacity` messages.
pub(crate) fn bounded<T>(capacity: usize) -> (Tx<T>, Rx<T>) {
    async_channel::bounded(capacity.max(1))
}

/// Tries a queue operation for a short while before blocking on it.
///
/// A thread that parks on an empty or full queue costs a wake-up of tens of microseconds
/// on a busy machine, and with a fast peer it would park again a few items later. Retrying
/// for a few microseconds first (yielding the core to other threads) lets a hand-off that is
/// about to succeed do so without a park. The budget is small so an idle pipeline does not
/// burn CPU.
pub(crate) fn spin_then<R>(mut attempt: impl FnMut() -> Option<R>, block: impl FnOnce() -> R) -> R {
    for round in 0..SPIN_ROUNDS {
        if let Some(r) = attempt() {
            return r;
        }
        spin_pause(round);
    }
    block()
}

pub(crate) const SPIN_ROUNDS: u32 = 64;

/// One pause of a spin: a CPU hint at first, then yielding the core.
pub(crate) fn spin_pause(round: u32) {
    if round < SPIN_ROUNDS / 2 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}
