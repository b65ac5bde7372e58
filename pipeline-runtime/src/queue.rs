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
//!
//! An async sender that finds the queue full while its reader is slow waits until it is
//! half empty ([`Room`]), not for one free slot: a slow reader then wakes its lanes once per
//! half a queue instead of once per item, a batch at a time. A plain thread, or an async
//! sender whose reader keeps up, takes the first free slot: with both ends fast, waiting
//! for half a queue makes them take turns instead of running side by side.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_channel::{TryRecvError, TrySendError};
use futures::Stream;

mod room;
use room::{Room, RoomWait};

use crate::block_on::block_on_until;
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
    room: Arc<Room>,
    stats: Option<Arc<QueueCounters>>,
    spin: Spin,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            room: self.room.clone(),
            stats: self.stats.clone(),
            spin: Spin::new(),
        }
    }
}

/// A sending end that does not keep the queue open (see [`Tx::downgrade`]).
pub(crate) struct WeakTx<T> {
    inner: async_channel::WeakSender<Msg<T>>,
    room: Arc<Room>,
    stats: Option<Arc<QueueCounters>>,
}

impl<T> WeakTx<T> {
    pub(crate) fn upgrade(&self) -> Option<Tx<T>> {
        Some(Tx {
            inner: self.inner.upgrade()?,
            room: self.room.clone(),
            stats: self.stats.clone(),
            spin: Spin::new(),
        })
    }
}

/// The receiving end of a queue (the only one: a stage's lanes share it).
pub(crate) struct Rx<T> {
    inner: Pin<Box<async_channel::Receiver<Msg<T>>>>,
    room: Arc<Room>,
    stats: Option<Arc<QueueCounters>>,
    /// When a poll as a `Stream` first found the queue empty (ticks).
    pending_since: Option<u64>,
    /// This end belongs to the pipeline's consumer, which counts the items it takes.
    consumer: bool,
    spin: Spin,
}

/// Creates a queue holding at most `capacity` messages, counted into `stats` if given.
pub(crate) fn bounded<T>(capacity: usize, stats: Option<Arc<QueueCounters>>) -> (Tx<T>, Rx<T>) {
    let capacity = capacity.max(1);
    let (tx, rx) = async_channel::bounded(capacity);
    let room = Arc::new(Room::new(capacity));
    (
        Tx {
            inner: tx,
            room: room.clone(),
            stats: stats.clone(),
            spin: Spin::new(),
        },
        Rx {
            inner: Box::pin(rx),
            room,
            stats,
            pending_since: None,
            consumer: false,
            spin: Spin::new(),
        },
    )
}

/// A spin allowance, one per queue end. A plain thread always retries the whole
/// [`SPIN_ROUNDS`] before it blocks: a thread holds no one else's work, and with both ends
/// fast (two threads passing items) a cut-short spin parks a thread that would have got its
/// slot a microsecond later. An async lane's allowance adapts instead, as it holds up the
/// runtime's other tasks while it spins: a wait that spinning did not avoid and that then
/// lasted long (the peer is slow: 1024 lanes in front of a source) halves it, a short one
/// (the peer was about to deliver), or a spin that succeeded, doubles it back. The same
/// allowance tells an async sender whether its reader keeps up (see [`Tx::send_or_pause`]).
struct Spin(AtomicU32);

impl Spin {
    const MIN: u32 = 2;
    /// About what a park and a wake-up cost: a wait shorter than this was worth spinning.
    const SHORT_WAIT: Duration = Duration::from_micros(20);

    fn new() -> Self {
        Spin(AtomicU32::new(SPIN_ROUNDS))
    }

    /// Retries `attempt` within the allowance (at most `max` rounds; `adaptive`: within the
    /// adapted allowance and no longer than [`SHORT_WAIT`](Self::SHORT_WAIT), as on a loaded
    /// machine one yield can last a whole time slice of another process); `Err(tick)` (when
    /// the spin started) if it never succeeded: an adaptive caller passes it to
    /// [`waited`](Self::waited) once the blocking wait is over.
    fn run<R>(
        &self,
        max: u32,
        adaptive: bool,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Result<R, u64> {
        let started = clock::now();
        let allowance = if adaptive {
            self.0.load(Ordering::Relaxed)
        } else {
            max
        };
        let mut round = 0;
        while round < allowance.min(max) {
            if let Some(r) = attempt() {
                // A success that took long (a yield that lasted) is no reason to spin more.
                if adaptive {
                    self.waited(started);
                }
                return Ok(r);
            }
            spin_pause(round);
            round += 1;
            if adaptive
                && clock::ticks_to_duration(clock::now().saturating_sub(started))
                    >= Self::SHORT_WAIT
            {
                break;
            }
        }
        Err(started)
    }

    /// Adapts the allowance to a blocking wait that began (spin included) at tick `started`.
    fn waited(&self, started: u64) {
        let allowance = self.0.load(Ordering::Relaxed);
        let waited = clock::ticks_to_duration(clock::now().saturating_sub(started));
        let next = if waited < Self::SHORT_WAIT {
            (allowance * 2).min(SPIN_ROUNDS)
        } else {
            (allowance / 2).max(Self::MIN)
        };
        self.0.store(next, Ordering::Relaxed);
    }
}

impl<T> Tx<T> {
    fn sent(&self, is_item: bool, waited: Option<u64>) {
        if let (true, Some(stats), Some(w)) = (is_item, &self.stats, waited) {
            stats.on_put_wait(w);
        }
    }

    /// Sends, waiting for room.
    pub(crate) async fn send(&self, msg: Msg<T>) -> Result<(), Closed> {
        self.send_or_pause(msg, || {}).await
    }

    /// Sends, waiting for room; calls `pausing` first if it has to wait, and keeps what it
    /// returns until the send ends. A stage counts its lanes paused this way and tops its
    /// input up ([`Rx::top_up`]) once they all are: then nothing takes from that input.
    pub(crate) async fn send_or_pause<G>(
        &self,
        msg: Msg<T>,
        pausing: impl FnOnce() -> G,
    ) -> Result<(), Closed> {
        let is_item = matches!(msg, Msg::Item(..));
        let msg = match self.inner.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Closed(_)) => return Err(Closed),
        };
        let _paused = pausing();
        let started = clock::now();
        // Eager (woken at the first free slot) while this end's recent waits were short:
        // the reader keeps up, so waiting for half a queue would only stall both ends.
        let eager = self.spin.0.load(Ordering::Relaxed) >= SPIN_ROUNDS;
        let sent = self.send_waiting(msg, eager).await;
        self.spin.waited(started);
        sent?;
        let waited = self
            .stats
            .is_some()
            .then(|| clock::now().saturating_sub(started));
        self.sent(is_item, waited);
        Ok(())
    }

    /// Sends once there is room, after a try found the queue full (see [`Room`]).
    async fn send_waiting(&self, mut msg: Msg<T>, eager: bool) -> Result<(), Closed> {
        let mut wait = RoomWait::new(&self.room, eager);
        loop {
            (&mut wait).await;
            match self.inner.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => msg = back,
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
        }
    }

    /// Sends from a plain thread, retrying briefly before blocking (see [`Spin`]).
    pub(crate) fn send_blocking(&self, msg: Msg<T>) -> Result<(), Closed> {
        let is_item = matches!(msg, Msg::Item(..));
        let mut msg = match self.inner.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Closed(_)) => return Err(Closed),
        };
        let started = self.stats.is_some().then(clock::now);
        let mut slot = Some(msg);
        // Into async lanes: a short spin of CPU hints only, then the half-queue wait (see
        // `Room::read_by_async_lanes`); yielding to them would only delay the runtime.
        let async_reader = self.room.async_reader();
        let rounds = if async_reader {
            SPIN_ROUNDS / 2
        } else {
            SPIN_ROUNDS
        };
        let spun = self
            .spin
            .run(rounds, false, || match self.inner.try_send(slot.take()?) {
                Ok(()) => Some(Ok(())),
                Err(TrySendError::Full(back)) => {
                    slot = Some(back);
                    None
                }
                Err(TrySendError::Closed(_)) => Some(Err(Closed)),
            });
        match spun {
            Ok(result) => result?,
            Err(_) => {
                msg = slot.expect("a full queue gives the message back");
                // Otherwise a thread takes the first free slot: one sender, no herd to avoid.
                let sent = block_on_until(self.send_waiting(msg, !async_reader), None);
                sent.expect("a wait without a deadline ends")?;
            }
        }
        self.sent(is_item, started.map(|s| clock::now().saturating_sub(s)));
        Ok(())
    }

    /// Messages in the queue now.
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    /// Closes the queue: sends fail from now on, and waiting senders return.
    pub(crate) fn close(&self) {
        self.inner.close();
        self.room.closed();
    }

    /// A handle that does not keep the queue open: for closing it on stop, and for starting
    /// lanes later (a resize).
    pub(crate) fn downgrade(&self) -> WeakTx<T> {
        WeakTx {
            inner: self.inner.downgrade(),
            room: self.room.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<T> Rx<T> {
    /// Counts a message taken for the statistics, and makes room for waiting senders.
    #[inline]
    fn received(&self, msg: &Msg<T>, waited: Option<u64>) {
        self.room.taken(|| self.inner.len());
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
    ///
    /// An empty queue is retried for a moment first, within the same adaptive allowance as a
    /// thread's (see [`Spin`]): a lane woken from another thread per item costs that thread
    /// a system call (the runtime's wake-up) and the runtime a park each time, while a
    /// producer in the middle of a burst delivers the next item within microseconds. Lanes
    /// whose input is slow soon stop retrying, so the runtime's other tasks are not held up.
    pub(crate) async fn recv(&self) -> Result<Msg<T>, Closed> {
        if let Some(now) = self.try_recv() {
            return now;
        }
        let spun = self
            .spin
            .run(SPIN_ROUNDS, true, || match self.inner.try_recv() {
                Ok(msg) => Some(Ok(msg)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(Err(Closed)),
            });
        let (result, started) = match spun {
            Ok(result) => (result, None),
            Err(started) => {
                let result = self.inner.recv().await.map_err(|_| Closed);
                self.spin.waited(started);
                (result, Some(started))
            }
        };
        let msg = result?;
        let waited = started
            .filter(|_| self.stats.is_some())
            .map(|s| clock::now().saturating_sub(s));
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

    /// Receives on a plain thread, retrying briefly before blocking (see [`Spin`]); calls
    /// `waits` once if the queue is empty at first (the consumer's wait starts there).
    pub(crate) fn recv_blocking(&self, waits: impl FnOnce()) -> Result<Msg<T>, Closed> {
        if let Some(now) = self.try_recv() {
            return now;
        }
        waits();
        let started = self.stats.is_some().then(clock::now);
        let spun = self
            .spin
            .run(SPIN_ROUNDS, false, || match self.inner.try_recv() {
                Ok(msg) => Some(Ok(msg)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(Err(Closed)),
            });
        let result = spun.unwrap_or_else(|_| self.inner.recv_blocking().map_err(|_| Closed));
        if let Ok(msg) = &result {
            self.received(msg, started.map(|s| clock::now().saturating_sub(s)));
        }
        result
    }

    /// Closes the queue: senders fail from now on; items already in it stay readable.
    pub(crate) fn close(&self) {
        self.inner.close();
        self.room.closed();
    }

    /// The reader is a stage's lanes on the async runtime (see `Room::read_by_async_lanes`).
    pub(crate) fn read_by_async_lanes(&self) {
        self.room.read_by_async_lanes();
    }

    /// The reader pauses (it waits to send its own output): senders waiting for room are
    /// woken for all of it, not only once the queue is half empty.
    pub(crate) fn top_up(&self) {
        self.room.top_up(|| self.inner.len());
    }
}

impl<T> Drop for Rx<T> {
    fn drop(&mut self) {
        // The only reader is gone: senders waiting for room must return now (the channel
        // would close only after this).
        self.close();
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

/// The most rounds a thread retries a queue operation before it blocks ([`Spin`]).
///
/// A thread that parks on an empty or full queue costs a wake-up of tens of microseconds
/// on a busy machine, and with a fast peer it would park again a few items later. Retrying
/// for a few microseconds first (yielding the core to other threads) lets a hand-off that is
/// about to succeed do so without a park.
pub(crate) const SPIN_ROUNDS: u32 = 64;

/// One pause of a spin: a CPU hint at first, then yielding the core.
pub(crate) fn spin_pause(round: u32) {
    if round < SPIN_ROUNDS / 2 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;
    use std::future::Future;
    use std::time::Duration;

    fn item(i: u64) -> Msg<u64> {
        Msg::Item(i, Tag::pos(i))
    }

    /// Waits (up to 10 s) until `n` senders are parked waiting for room.
    fn until_waiting(rx: &Rx<u64>, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rx.room.waiting() != n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rx.room.waiting(), n);
    }

    fn value(msg: Msg<u64>) -> u64 {
        match msg {
            Msg::Item(v, _) => v,
            Msg::EpochEnd => panic!("an item was expected"),
        }
    }

    /// A sender whose recent waits were long (its reader is slow), as [`Spin`] leaves it.
    fn slow_reader_behind(tx: &Tx<u64>) {
        tx.spin.0.store(Spin::MIN, Ordering::Relaxed);
    }

    #[test]
    fn a_blocked_thread_takes_the_first_free_slot() {
        let (tx, rx) = bounded::<u64>(4, None);
        for i in 0..4 {
            tx.send_blocking(item(i)).unwrap();
        }
        let sender = std::thread::spawn(move || tx.send_blocking(item(4)));
        until_waiting(&rx, 1);
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        // Three left, above half: the thread is woken all the same.
        assert_eq!(sender.join().unwrap(), Ok(()));
        let rest: Vec<u64> = std::iter::from_fn(|| rx.try_recv())
            .map_while(|m| m.ok().map(value))
            .collect();
        assert_eq!(rest, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_blocked_thread_feeding_async_lanes_waits_for_half_the_queue() {
        let (tx, rx) = bounded::<u64>(4, None);
        rx.read_by_async_lanes();
        for i in 0..4 {
            tx.send_blocking(item(i)).unwrap();
        }
        let sender = std::thread::spawn(move || tx.send_blocking(item(4)));
        until_waiting(&rx, 1);
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        // Three left, above half: the thread stays parked (a first-free-slot wait would
        // have taken the slot by now).
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.room.waiting(), 1);
        assert_eq!(rx.inner.len(), 3);
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 1);
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(rx.inner.len(), 3);
    }

    #[test]
    fn an_async_sender_behind_a_slow_reader_resumes_once_the_queue_is_half_empty() {
        let (tx, rx) = bounded::<u64>(4, None);
        for i in 0..4 {
            tx.send_blocking(item(i)).unwrap();
        }
        slow_reader_behind(&tx);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut send = Box::pin(tx.send(item(4)));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        // Three left, above half: not woken, so its retry stays parked.
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(rx.room.waiting(), 1);
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 1);
        assert!(send.as_mut().poll(&mut cx).is_ready());
        assert_eq!(rx.inner.len(), 3);
    }

    #[test]
    fn an_async_sender_whose_reader_keeps_up_takes_the_first_free_slot() {
        let (tx, rx) = bounded::<u64>(4, None);
        for i in 0..4 {
            tx.send_blocking(item(i)).unwrap();
        }
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut send = Box::pin(tx.send(item(4)));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        assert!(send.as_mut().poll(&mut cx).is_ready());
        assert_eq!(rx.inner.len(), 4);
    }

    #[test]
    fn a_pausing_reader_lets_a_waiting_sender_fill_the_queue() {
        let (tx, rx) = bounded::<u64>(4, None);
        for i in 0..4 {
            tx.send_blocking(item(i)).unwrap();
        }
        slow_reader_behind(&tx);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut send = Box::pin(tx.send(item(4)));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        assert!(send.as_mut().poll(&mut cx).is_pending());
        rx.top_up();
        assert!(send.as_mut().poll(&mut cx).is_ready());
        assert_eq!(rx.inner.len(), 4);
    }

    #[test]
    fn closing_or_dropping_the_reader_releases_a_waiting_sender() {
        for drop_it in [false, true] {
            let (tx, rx) = bounded::<u64>(1, None);
            tx.send_blocking(item(0)).unwrap();
            let sender = std::thread::spawn(move || tx.send_blocking(item(1)));
            until_waiting(&rx, 1);
            if drop_it {
                drop(rx);
            } else {
                rx.close();
            }
            assert_eq!(sender.join().unwrap(), Err(Closed));
        }
    }

    #[test]
    fn a_cancelled_woken_sender_passes_its_turn_on() {
        let (tx, rx) = bounded::<u64>(2, None);
        tx.send_blocking(item(0)).unwrap();
        tx.send_blocking(item(1)).unwrap();
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut a = Box::pin(tx.send(item(10)));
        let mut b = Box::pin(tx.send(item(11)));
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        // Down to one (half of two): room for one, so only the first waiter is woken.
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 0);
        drop(a);
        assert!(b.as_mut().poll(&mut cx).is_ready());
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 1);
        assert_eq!(value(rx.try_recv().unwrap().unwrap()), 11);
    }

    #[test]
    fn many_async_senders_on_a_small_queue_all_get_through() {
        let (tx, rx) = bounded::<u64>(4, None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut sum = 0;
            while let Ok(msg) = rx.recv_blocking(|| {}) {
                sum += value(msg);
            }
            sum
        });
        runtime.block_on(async move {
            let senders: Vec<_> = (0..500u64)
                .map(|i| {
                    let tx = tx.clone();
                    tokio::spawn(async move { tx.send(item(i)).await })
                })
                .collect();
            drop(tx);
            for s in senders {
                s.await.unwrap().unwrap();
            }
        });
        assert_eq!(reader.join().unwrap(), (0..500).sum::<u64>());
    }
}
