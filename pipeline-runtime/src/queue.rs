//! Bounded queues between stages.
//!
//! Every stage reads from one bounded queue and writes to the next, so a slow stage or an
//! absent consumer stops upstream stages once the queues fill (backpressure). Epoch
//! boundaries of a continuous source travel in band as [`Msg::EpochEnd`]; the end of the
//! stream is the queue closing when the last sender of the upstream stage is gone.
//!
//! Each item travels with its [`Tag`] (the source position it came from, or a batch's
//! group), which resume tracking reads; it is a copied `u64` and costs nothing otherwise.
//!
//! Both ends count items for the statistics when the pipeline has them on: an operation
//! that succeeds at once costs one counter increment; one that must wait is timed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::{TryRecvError, TrySendError};
use futures::Stream;

use crate::clock;
use crate::resume::Tag;
use crate::stats::QueueCounters;

/// What travels on a queue.
#[derive(Debug)]
pub(crate) enum Msg<T> {
    Item(T, Tag),
    EpochEnd,
}

// The tag costs no room of its own beside the discriminant: `EpochEnd` lives in its niche.
const _: () = assert!(std::mem::size_of::<Msg<u64>>() == 2 * std::mem::size_of::<u64>());

/// The queue is closed: nothing will be received, or nothing will read what is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The sending end of a queue.
pub(crate) struct Tx<T> {
    inner: async_channel::Sender<Msg<T>>,
    stats: Option<Arc<QueueCounters>>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The receiving end of a queue.
pub(crate) struct Rx<T> {
    inner: Pin<Box<async_channel::Receiver<Msg<T>>>>,
    stats: Option<Arc<QueueCounters>>,
    /// When a poll as a `Stream` first found the queue empty (ticks).
    pending_since: Option<u64>,
    /// This end belongs to the pipeline's consumer, which counts the items it takes.
    consumer: bool,
}

/// Creates a queue holding at most `capacity` messages, counted into `stats` if given.
pub(crate) fn bounded<T>(capacity: usize, stats: Option<Arc<QueueCounters>>) -> (Tx<T>, Rx<T>) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    (
        Tx {
            inner: tx,
            stats: stats.clone(),
        },
        Rx {
            inner: Box::pin(rx),
            stats,
            pending_since: None,
            consumer: false,
        },
    )
}

impl<T> Tx<T> {
    fn sent(&self, is_item: bool, waited: Option<u64>) {
        if let (true, Some(stats), Some(w)) = (is_item, &self.stats, waited) {
            stats.on_put_wait(w);
        }
    }

    /// Sends, waiting for room.
    pub(crate) async fn send(&self, msg: Msg<T>) -> Result<(), Closed> {
        let is_item = matches!(msg, Msg::Item(..));
        if self.stats.is_none() {
            return self.inner.send(msg).await.map_err(|_| Closed);
        }
        let (result, waited) = timed(self.inner.send(msg)).await;
        result.map_err(|_| Closed)?;
        self.sent(is_item, waited);
        Ok(())
    }

    /// Sends from a plain thread, retrying briefly before blocking (see [`spin_then`]).
    pub(crate) fn send_blocking(&self, mut msg: Msg<T>) -> Result<(), Closed> {
        let is_item = matches!(msg, Msg::Item(..));
        let mut started = None;
        for round in 0..SPIN_ROUNDS {
            match self.inner.try_send(msg) {
                Ok(()) => {
                    self.sent(is_item, started.map(|s| clock::now().saturating_sub(s)));
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => msg = back,
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
            if started.is_none() && self.stats.is_some() {
                started = Some(clock::now());
            }
            spin_pause(round);
        }
        self.inner.send_blocking(msg).map_err(|_| Closed)?;
        self.sent(is_item, started.map(|s| clock::now().saturating_sub(s)));
        Ok(())
    }

    /// A handle that does not keep the queue open, for closing it on stop.
    pub(crate) fn downgrade(&self) -> async_channel::WeakSender<Msg<T>> {
        self.inner.downgrade()
    }

    /// A sender that does not keep the queue open, for starting lanes later (a resize).
    pub(crate) fn weak(&self) -> WeakTx<T> {
        WeakTx {
            inner: self.inner.downgrade(),
            stats: self.stats.clone(),
        }
    }
}

/// See [`Tx::weak`].
pub(crate) struct WeakTx<T> {
    inner: async_channel::WeakSender<Msg<T>>,
    stats: Option<Arc<QueueCounters>>,
}

impl<T> WeakTx<T> {
    /// The sender again, while some other sender keeps the queue open.
    pub(crate) fn upgrade(&self) -> Option<Tx<T>> {
        Some(Tx {
            inner: self.inner.upgrade()?,
            stats: self.stats.clone(),
        })
    }
}

impl<T> Rx<T> {
    fn received(&self, msg: &Msg<T>, waited: Option<u64>) {
        if let (Msg::Item(..), Some(stats)) = (msg, &self.stats) {
            if let Some(w) = waited {
                stats.on_get_wait(w);
            }
            if self.consumer {
                stats.on_take();
            }
        }
    }

    /// Marks this end as the pipeline's consumer's (its only reader), which counts the
    /// items it takes; other queues' items are counted by the stage reading them.
    pub(crate) fn set_consumer(&mut self) {
        self.consumer = true;
    }

    /// Receives, waiting for an item.
    pub(crate) async fn recv(&self) -> Result<Msg<T>, Closed> {
        if self.stats.is_none() {
            return self.inner.recv().await.map_err(|_| Closed);
        }
        let (result, waited) = timed(self.inner.recv()).await;
        let msg = result.map_err(|_| Closed)?;
        self.received(&msg, waited);
        Ok(msg)
    }

    /// Receives without waiting: `None` when the queue is empty (and open).
    pub(crate) fn try_recv(&self) -> Option<Result<Msg<T>, Closed>> {
        match self.inner.try_recv() {
            Ok(msg) => {
                self.received(&msg, None);
                Some(Ok(msg))
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Closed) => Some(Err(Closed)),
        }
    }

    /// Receives on a plain thread, retrying briefly before blocking (see [`spin_then`]);
    /// calls `waits` once if the queue is empty at first (the consumer's wait starts there).
    pub(crate) fn recv_blocking(&self, waits: impl FnOnce()) -> Result<Msg<T>, Closed> {
        let mut started = None;
        let mut waits = Some(waits);
        let result = spin_then(
            || match self.inner.try_recv() {
                Ok(msg) => Some(Ok(msg)),
                Err(TryRecvError::Empty) => {
                    if let Some(waits) = waits.take() {
                        waits();
                    }
                    if started.is_none() && self.stats.is_some() {
                        started = Some(clock::now());
                    }
                    None
                }
                Err(TryRecvError::Closed) => Some(Err(Closed)),
            },
            || self.inner.recv_blocking().map_err(|_| Closed),
        );
        if let Ok(msg) = &result {
            self.received(msg, started.map(|s| clock::now().saturating_sub(s)));
        }
        result
    }

    /// Closes the queue: senders fail from now on; items already in it stay readable.
    pub(crate) fn close(&self) {
        self.inner.close();
    }
}

impl<T> Stream for Rx<T> {
    type Item = Msg<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Msg<T>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => {
                if this.pending_since.is_none() && this.stats.is_some() {
                    this.pending_since = Some(clock::now());
                }
                Poll::Pending
            }
            Poll::Ready(Some(msg)) => {
                let waited = this
                    .pending_since
                    .take()
                    .map(|s| clock::now().saturating_sub(s));
                this.received(&msg, waited);
                Poll::Ready(Some(msg))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
}

/// Awaits `fut`, and returns how long it waited (ticks) if it was not ready at once: the
/// clock is read only when the first poll finds the queue full or empty, and the operation
/// is attempted exactly as often as without the timing.
async fn timed<F: Future>(fut: F) -> (F::Output, Option<u64>) {
    let mut fut = std::pin::pin!(fut);
    let mut started = None;
    let output = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(output),
        Poll::Pending => {
            started.get_or_insert_with(clock::now);
            Poll::Pending
        }
    })
    .await;
    (output, started.map(|s| clock::now().saturating_sub(s)))
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
