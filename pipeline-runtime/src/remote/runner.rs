//! A registered region run in this process on tickets: the engine under a worker's
//! connection and under each local lane of a `remote_region`.
//!
//! It reuses the process region's worker ([`run_region`](crate::process::region_worker)) and
//! its wire unchanged, over a socket pair inside this process: a ticket goes in as its
//! inputs followed by an epoch boundary, and the nested pipeline passes the boundary back
//! only after every output of the ticket, so the outputs between two boundaries are that
//! ticket's answer, whole.
//!
//! The region runs traced: each input goes in under its index in the ticket, and each
//! output comes back naming the input it stands for ([`Answer::sources`]), so that the
//! trainer's ledger can resolve positions one by one when the answer is delivered.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::failure::RemotePipelineError;
use crate::process::channel::{decode, encode, Channel, FrameReader, FrameWriter};
use crate::process::region::{
    read_pairs, read_resolved, write_pairs, RegionFn, RegionIo, RegionStart, FROM_DONE, FROM_EPOCH,
    FROM_FAILED, FROM_ITEM, FROM_LOST, FROM_READY, FROM_REFUSED, FROM_RESOLVED, FROM_STATS,
    FROM_TAKEN, TO_END, TO_EPOCH, TO_ITEM,
};
use crate::process::registry::{self, Kind};
use crate::sync::lock;

/// Inputs of one ticket, encoded with serde, with their source positions.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub(crate) id: u64,
    pub(crate) positions: Vec<u64>,
    pub(crate) items: Vec<Vec<u8>>,
}

/// The outputs of one ticket, encoded (each a slice of the frame it came in).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) ticket: u64,
    pub(crate) items: Vec<Bytes>,
    /// Per output, the index in the ticket of the input it stands for, or [`SEVERAL`].
    pub(crate) sources: Vec<u64>,
}

/// The source of an output made of several inputs (a batch made inside the region).
pub(crate) const SEVERAL: u64 = u64::MAX;

/// Where a runner's answers go (called on its reading thread); an `Err` ends the runner.
pub(crate) type AnswerSink = Box<dyn FnMut(Result<Answer, String>) + Send>;

/// A region running on tickets. Dropping it ends the region's input; its threads finish
/// what they hold and end by themselves.
pub(crate) struct RegionRunner {
    tickets: tokio::sync::mpsc::Sender<Arc<Ticket>>,
}

impl std::fmt::Debug for RegionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionRunner")
    }
}

/// Tickets a runner holds before its region takes them.
const QUEUED: usize = 2;

impl RegionRunner {
    /// Starts the region registered as `key` with `start`'s settings; its answers go to
    /// `sink`. Fails if no region is registered under that name.
    pub(crate) fn start(key: &str, start: &RegionStart, sink: AnswerSink) -> Result<Self, String> {
        registry::check(key, Kind::Region)?;
        let run = registry::lookup::<RegionFn>(key, Kind::Region)
            .ok_or_else(|| format!("`{key}` is not registered as a region"))?;
        // Traced, so that outputs name their inputs; inputs carry no resolved outputs
        // (fan-outs are not tracked through the tier).
        let start = RegionStart {
            trace: true,
            outputs: false,
            ..start.clone()
        };
        let args = encode(&start).map_err(|e| e.to_string())?;
        let (region_end, our_end) =
            UnixStream::pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
        let clone = |s: &UnixStream| {
            s.try_clone()
                .map_err(|e| format!("cannot clone a socket: {e}"))
        };
        let region_reader = clone(&region_end)?;
        let our_reader = clone(&our_end)?;
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let order: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        let (tickets, mut inbox) = tokio::sync::mpsc::channel::<Arc<Ticket>>(QUEUED);

        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(body)
                .map(drop)
                .map_err(|e| format!("cannot start a thread: {e}"))
        };
        {
            let failed = failed.clone();
            spawn(
                "pipeline-remote-region",
                Box::new(move || {
                    let mut channel = Channel::new(
                        FrameReader::new(region_reader),
                        FrameWriter::new(region_end),
                    );
                    if let Err(e) = run(RegionIo(&mut channel), &args) {
                        *lock(&failed) = Some(e);
                    }
                }),
            )?;
        }
        {
            let order = order.clone();
            let writer = clone(&our_end)?;
            spawn(
                "pipeline-remote-feed",
                Box::new(move || {
                    let mut writer = FrameWriter::new(writer);
                    let mut feed = || -> std::io::Result<()> {
                        while let Some(ticket) = inbox.blocking_recv() {
                            lock(&order).push_back(ticket.id);
                            for (id, item) in (0u64..).zip(&ticket.items) {
                                // Its id is its index in the ticket; no outputs of it were
                                // resolved before (fan-outs are not tracked here).
                                let mut header = id.to_le_bytes().to_vec();
                                write_pairs(&mut header, &[]);
                                writer.send_parts(&[&[TO_ITEM], &header, item])?;
                            }
                            writer.send(&[TO_EPOCH])?;
                        }
                        writer.send(&[TO_END])
                    };
                    // A broken pipe: the region ended, and the reading thread says why.
                    let _ = feed();
                }),
            )?;
        }
        spawn(
            "pipeline-remote-answers",
            Box::new(move || {
                let mut reader = FrameReader::new(our_reader);
                collect(&mut reader, &order, &failed, sink);
                // Unblocks the feeding thread if the region ended early.
                let _ = our_end.shutdown(std::net::Shutdown::Both);
            }),
        )?;
        Ok(Self { tickets })
    }

    /// Hands a ticket to the region, waiting while it holds [`QUEUED`] already (from a
    /// plain thread). False if the region has ended.
    pub(crate) fn send_blocking(&self, ticket: Arc<Ticket>) -> bool {
        self.tickets.blocking_send(ticket).is_ok()
    }

    /// [`send_blocking`](Self::send_blocking) from async code.
    pub(crate) async fn send(&self, ticket: Arc<Ticket>) -> bool {
        self.tickets.send(ticket).await.is_ok()
    }
}

/// Reads the region's frames, gathering each ticket's outputs until its boundary, until
/// the region is done or fails.
fn collect(
    reader: &mut FrameReader,
    order: &Mutex<VecDeque<u64>>,
    failed: &Mutex<Option<String>>,
    mut sink: AnswerSink,
) {
    let (mut outputs, mut sources) = (Vec::new(), Vec::new());
    loop {
        let frame = match reader.recv() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let why = lock(failed).take();
                let why = why.unwrap_or_else(|| "its channel closed".to_owned());
                return sink(Err(format!("the region ended early: {why}")));
            }
            Err(e) => return sink(Err(format!("the region's channel broke: {e}"))),
        };
        let Some((&tag, body)) = frame.split_first() else {
            return sink(Err("an empty frame from the region".to_owned()));
        };
        match tag {
            FROM_READY | FROM_STATS | FROM_TAKEN | FROM_RESOLVED => {}
            // After the count of inputs resolved: the inputs it stands for and those
            // resolved with it (the ticket's boundary resolves every input here), then
            // the item.
            FROM_ITEM => match body
                .get(8..)
                .and_then(read_pairs)
                .and_then(|(ids, rest)| read_resolved(rest).map(|(_, bytes)| (ids, bytes)))
            {
                // The item is the frame's tail: keep the frame, not a copy.
                Some((ids, item)) => {
                    let start = frame.len() - item.len();
                    outputs.push(Bytes::from(frame).slice(start..));
                    sources.push(match ids[..] {
                        [[id, _]] => id,
                        _ => SEVERAL,
                    });
                }
                None => return sink(Err("a truncated output from the region".to_owned())),
            },
            FROM_EPOCH => match lock(order).pop_front() {
                Some(ticket) => sink(Ok(Answer {
                    ticket,
                    items: std::mem::take(&mut outputs),
                    sources: std::mem::take(&mut sources),
                })),
                None => return sink(Err("a boundary for no ticket".to_owned())),
            },
            FROM_DONE => return,
            FROM_REFUSED => {
                let why = String::from_utf8_lossy(body);
                return sink(Err(format!("the region failed: {why}")));
            }
            FROM_LOST => {
                let why = read_pairs(body).map_or(body, |(_, message)| message);
                let why = String::from_utf8_lossy(why);
                return sink(Err(format!("the region failed: {why}")));
            }
            FROM_FAILED => {
                let why = match decode::<RemotePipelineError>(body) {
                    Ok(e) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return sink(Err(format!("the region's pipeline failed: {why}")));
            }
            _ => return sink(Err(format!("an unknown frame ({tag}) from the region"))),
        }
    }
}
