//! Remote workers: a region's preprocessing on other machines, over Arrow Flight, with the
//! trainer's own cores first and every item delivered exactly once.
//!
//! A **worker** is a plain process of the user's binary that calls [`serve`] (or
//! [`Worker::bind`] then [`Worker::serve`]); whatever starts processes in the cluster
//! (SLURM, Kubernetes, a shell loop) gives it an address. It runs only regions registered
//! in its binary with [`process_region!`](crate::process_region), found by name; it checks
//! the shared token in the request's metadata before decoding anything, and refuses a
//! client of another [`PROTOCOL_VERSION`].
//!
//! The **trainer's side** is a stage, [`StageBuilder::remote_region`](crate::StageBuilder::remote_region),
//! configured by [`RemoteWorkers`]: its inputs go out as *tickets* (up to
//! [`ticket_size`](RemoteWorkers::ticket_size) inputs, closed early by an epoch boundary or
//! a pause of the input) to local lanes first (the same region run in this process) and to
//! remote workers only while the consumer waits for data with no local lane free.
//!
//! **Exactly once.** A ticket's outputs are delivered whole, once: the first answer for a
//! ticket wins, a later one (from a worker that was thought hung) is dropped and counted.
//! A worker that dies, disconnects or holds a ticket past the
//! [`timeout`](RemoteWorkers::timeout) has its unanswered tickets replayed on another lane.
//! With `Order::Input` tickets are delivered in input order (and inside a ticket, in the
//! order the region gives).
//!
//! **TLS** when certificates are given: [`Worker::tls`] (its certificate chain and key) and
//! [`RemoteWorkers::tls_ca`] (the CA that signed them); otherwise plain HTTP/2.
//!
//! Files: `wire.rs` (the Flight messages and metadata), `tls.rs` (TLS settings), `runner.rs` (a region run on
//! tickets in this process, under both a worker and a local lane), `worker.rs` (the Flight
//! server), `schedule.rs` (the books: tickets, replays, delivery), `lanes.rs` (local and
//! remote lanes), `stage.rs` (the builder method and its launch).

mod lanes;
mod runner;
mod schedule;
mod stage;
mod tls;
mod wire;
mod worker;

#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use wire::PROTOCOL_VERSION;
pub use worker::{serve, Worker};

use schedule::{Counts, LaneCounts};

/// Where a `remote_region` sends work, and how: the workers' addresses, the shared token,
/// local lanes, ticket size and timeouts. Its [`stats`](Self::stats) count the runs of
/// every pipeline built with it.
#[derive(Clone)]
pub struct RemoteWorkers {
    pub(crate) addrs: Vec<String>,
    pub(crate) token: Arc<str>,
    pub(crate) local_lanes: usize,
    pub(crate) ticket_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) give_up: Duration,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) protocol: u32,
    pub(crate) tls_ca: Option<Arc<[u8]>>,
    pub(crate) tls_domain: Option<String>,
    pub(crate) books: Arc<Books>,
}

impl std::fmt::Debug for RemoteWorkers {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWorkers")
            .field("addrs", &self.addrs)
            .field("local_lanes", &self.local_lanes)
            .field("ticket_size", &self.ticket_size)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// The counters a [`RemoteWorkers`] shares with the pipelines built with it.
#[derive(Debug, Default)]
pub(crate) struct Books {
    pub(crate) counts: Arc<Counts>,
    /// Per lane of the last pipeline built: `None` for a local lane, else the worker.
    pub(crate) lanes: Mutex<Vec<(Option<String>, Arc<LaneCounts>)>>,
}

impl RemoteWorkers {
    /// Workers at `addrs` (`host:port`), which must have been given `token` (printable
    /// ASCII; read it from the environment rather than a command line where you can).
    /// Defaults: 1 local lane, tickets of 64 inputs, a 10 s timeout, and a worker given up
    /// on after 10 s without a connection.
    pub fn new<A: Into<String>>(addrs: impl IntoIterator<Item = A>, token: &str) -> Self {
        Self {
            addrs: addrs.into_iter().map(Into::into).collect(),
            token: token.into(),
            local_lanes: 1,
            ticket_size: 64,
            timeout: Duration::from_secs(10),
            give_up: Duration::from_secs(10),
            worker_threads: None,
            protocol: PROTOCOL_VERSION,
            tls_ca: None,
            tls_domain: None,
            books: Arc::default(),
        }
    }

    /// Local lanes: copies of the region in this process, which take work first (0: only
    /// remote workers).
    pub fn local_lanes(mut self, n: usize) -> Self {
        self.local_lanes = n;
        self
    }

    /// Inputs per ticket, at most (a multiple of an `aggregate`'s size inside the region
    /// keeps its batches full: each ticket ends the region's epoch).
    pub fn ticket_size(mut self, n: usize) -> Self {
        self.ticket_size = n.max(1);
        self
    }

    /// How long a worker may hold a ticket before it is replayed elsewhere (also the
    /// connection timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a worker may stay unreachable before it counts as gone (with no local
    /// lanes and every worker gone, the pipeline fails).
    pub fn give_up_after(mut self, give_up: Duration) -> Self {
        self.give_up = give_up;
        self
    }

    /// Threads of each worker's nested pipeline (default: the worker's cores).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = Some(n.max(1));
        self
    }

    /// Speaks TLS to every worker, trusting only the CA certificate `ca_pem` (PEM, as read
    /// from its file): the one that signed the workers' certificates ([`Worker::tls`]). A
    /// worker whose certificate it did not sign, or one without TLS, is refused.
    pub fn tls_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(ca_pem.into().into());
        self
    }

    /// With [`tls_ca`](Self::tls_ca): the name the workers' certificates must carry, when it
    /// is not the host of their addresses (say, workers reached by IP with certificates for
    /// a DNS name). Without `tls_ca` it does nothing.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// The TLS settings of each connection, if any.
    pub(crate) fn client_tls(&self) -> Option<Arc<tls::ClientTls>> {
        let ca_pem = self.tls_ca.clone()?;
        Some(Arc::new(tls::ClientTls {
            ca_pem,
            domain: self.tls_domain.clone(),
        }))
    }

    /// Claims another protocol version (to test a worker's refusal).
    #[doc(hidden)]
    pub fn protocol_version(mut self, version: u32) -> Self {
        self.protocol = version;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> RemoteStats {
        let counts = &self.books.counts;
        let mut stats = RemoteStats {
            delivered: counts.delivered.load(Ordering::Relaxed),
            replayed: counts.replayed.load(Ordering::Relaxed),
            late_dropped: counts.late_dropped.load(Ordering::Relaxed),
            ..RemoteStats::default()
        };
        for (worker, lane) in lane_list(&self.books).iter() {
            let items = lane.items.load(Ordering::Relaxed);
            match worker {
                None => stats.local += items,
                Some(addr) => {
                    stats.remote += items;
                    stats.per_worker.push(WorkerStats {
                        addr: addr.clone(),
                        items,
                        tickets: lane.tickets.load(Ordering::Relaxed),
                    });
                }
            }
        }
        stats
    }
}

fn lane_list(books: &Books) -> Vec<(Option<String>, Arc<LaneCounts>)> {
    crate::sync::lock(&books.lanes).clone()
}

/// What a remote region did: outputs by where they were made, and its exactly-once books.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Outputs delivered downstream.
    pub delivered: u64,
    /// Outputs delivered that local lanes made.
    pub local: u64,
    /// Outputs delivered that remote workers made.
    pub remote: u64,
    /// Inputs sent again because the lane that held them died, disconnected or hung.
    pub replayed: u64,
    /// Outputs of an answer that came after its ticket was answered elsewhere (dropped).
    pub late_dropped: u64,
    /// Per worker, in the order of the addresses.
    pub per_worker: Vec<WorkerStats>,
}

/// One worker's share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's address, as given.
    pub addr: String,
    /// Outputs delivered that it made.
    pub items: u64,
    /// Its tickets delivered.
    pub tickets: u64,
}
