//! The worker's side of a process region: builds the nested pipeline from the registered
//! region `fn`, feeds it the inputs read from the parent on one thread, and sends its
//! outputs back from another, with how many inputs it is done with and, now and then,
//! its stages' counters.
//!
//! After a continuous source, the nested source is continuous too: each of its passes ends
//! at an epoch boundary from the parent, and the nested pipeline's own boundary (every
//! output of the epoch is out) goes back to the parent.
//!
//! When the parent keeps a ledger, the nested pipeline's positions (the order its source
//! took the inputs in) are mapped back to the parent's input ids: each output names the
//! inputs it stands for, and the inputs its ledger resolved are reported after the outputs
//! that carried them, and before an epoch boundary or the end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::channel::{decode, encode, FrameReader, FrameWriter};
use super::region::{
    outcome_byte, read_pairs, write_pairs, write_resolved, Progress, RegionIo, RegionStart,
    CREDIT_EVERY, FROM_DONE, FROM_EPOCH, FROM_FAILED, FROM_ITEM, FROM_LOST, FROM_READY,
    FROM_REFUSED, FROM_RESOLVED, FROM_STATS, FROM_TAKEN, TO_EPOCH, TO_ITEM, WHOLE,
};
use crate::builder::{PipelineBuilder, StageBuilder};
use crate::failure::RemotePipelineError;
use crate::pipeline::{GetError, Pipeline};
use crate::queue::Msg;
use crate::resume::fanout::IndexSet;
use crate::resume::ledger::Ledger;
use crate::stats::StageCounters;
use crate::sync::{lock, panic_message};
use std::collections::HashMap;

/// How often a worker sends its counters while it runs.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// What the feeding thread tells the thread that sends outputs.
#[derive(Default)]
struct Fed {
    /// Inputs that did not decode (dropped, and counted as resolved).
    undecodable: AtomicU64,
    /// Epoch boundaries received from the parent.
    boundaries: AtomicU64,
    /// The parent's end of inputs has come.
    ended: AtomicBool,
    /// The parent's id of each input passed on and not yet resolved, by its position in
    /// the nested pipeline (the order its source takes them in); kept only when the parent
    /// traces (see `RegionStart::trace`).
    ids: Option<Mutex<HashMap<u64, u64>>>,
    /// The nested ledger, told which outputs of an input were resolved before a resume
    /// (when the parent tracks outputs one by one).
    seed: Option<Arc<Ledger>>,
}

impl Fed {
    fn new(trace: bool) -> Self {
        Self {
            ids: trace.then(Mutex::default),
            ..Self::default()
        }
    }
}

/// What the nested source reads: an input, or an epoch boundary.
enum Frame<In> {
    Item(In),
    Boundary,
}

/// The nested source: each pass reads inputs until an epoch boundary (continuous mode) or
/// until the parent's end of inputs.
struct Inputs<In>(Arc<Mutex<Receiver<Frame<In>>>>);

impl<In> Clone for Inputs<In> {
    fn clone(&self) -> Self {
        Inputs(self.0.clone())
    }
}

impl<In> Iterator for Inputs<In> {
    type Item = In;
    fn next(&mut self) -> Option<In> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(Frame::Item(item)) => Some(item),
            Ok(Frame::Boundary) | Err(_) => None,
        }
    }
}

/// Runs region `f` over `io` until the parent's inputs end (in the worker).
#[doc(hidden)]
pub fn run_region<In, Out, F>(f: &F, io: RegionIo<'_>, args: &[u8]) -> Result<(), String>
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
    F: Fn(StageBuilder<In>) -> StageBuilder<Out>,
{
    let start: RegionStart = decode(args).map_err(|e| format!("bad region start: {e}"))?;
    let (reader, writer) = io.0.halves();
    // The nested source reads what the feeding thread decodes; the feeding thread tells the
    // parent what it has passed on, which is the region's backpressure (see `WINDOW`).
    let (items, inputs) = std::sync::mpsc::sync_channel::<Frame<In>>(1);
    let inputs = Inputs(Arc::new(Mutex::new(inputs)));
    let built = catch_unwind(AssertUnwindSafe(|| {
        let source = if start.continuous {
            PipelineBuilder::new().continuous_source(inputs)
        } else {
            PipelineBuilder::new().source(inputs)
        };
        let sink = f(source)
            .sink()
            .num_threads(start.num_threads)
            .queue_capacity(start.queue_capacity)
            .track_resume(true);
        match start.trace {
            true => sink.in_region(start.outputs),
            false => sink,
        }
        .build()
    }));
    let mut pipeline = match built {
        Ok(Ok(pipeline)) => pipeline,
        Ok(Err(e)) => return refuse(reader, writer, &e.to_string()),
        Err(panic) => {
            let message = format!("the region's fn panicked: {}", panic_message(&*panic));
            return refuse(reader, writer, &message);
        }
    };
    if let Err(e) = pipeline.start() {
        return refuse(reader, writer, &e.to_string());
    }
    let counters = pipeline.stage_counters();
    writer.send(&[FROM_READY]).map_err(|e| e.to_string())?;
    let mut fed = Fed::new(start.trace);
    if start.outputs {
        fed.seed = pipeline.ledger();
    }
    let writer = Mutex::new(writer);
    std::thread::scope(|s| {
        let (fed_ref, credit) = (&fed, &writer);
        let feeding = s.spawn(move || feed(reader, Some(items), fed_ref, Some(credit)));
        let result = send_outputs(&mut pipeline, &writer, &counters, &fed);
        // Ended (or failed): stop the nested pipeline; the feeding thread reads on until
        // the parent's end of inputs.
        let _ = pipeline.stop();
        let _ = feeding.join();
        result
    })
}

/// Reads the parent's frames until its end of inputs (or until the parent is gone),
/// passing each input on while the nested pipeline takes them, and telling the parent
/// (through `credit`) how many it has passed on.
fn feed<In: DeserializeOwned>(
    reader: &mut FrameReader,
    mut items: Option<SyncSender<Frame<In>>>,
    fed: &Fed,
    credit: Option<&Mutex<&mut FrameWriter>>,
) {
    let mut taken = 0u64;
    // Inputs passed on: the next one's position in the nested pipeline.
    let mut passed = 0u64;
    let pass_on = |frame: Frame<In>, items: &mut Option<SyncSender<Frame<In>>>| {
        if let Some(tx) = items.as_ref() {
            if tx.send(frame).is_err() {
                *items = None; // the nested pipeline ended: drain
            }
        }
    };
    while let Ok(Some(frame)) = reader.recv() {
        match frame.split_first() {
            Some((&TO_ITEM, body)) => {
                taken += 1;
                let parts = body.split_at_checked(8).and_then(|(id, rest)| {
                    let (done, bytes) = read_pairs(rest)?;
                    let done = IndexSet::from_ranges(done).ok()?;
                    Some((u64::from_le_bytes(id.try_into().ok()?), done, bytes))
                });
                let Some((id, done, bytes)) = parts else {
                    eprintln!("process region: a malformed input frame; taken as the end");
                    break;
                };
                match decode::<In>(bytes) {
                    Ok(item) => {
                        if let Some(ids) = &fed.ids {
                            lock(ids).insert(passed, id);
                        }
                        if let Some(ledger) = &fed.seed {
                            ledger.seed_fan_out(passed, done);
                        }
                        passed += 1;
                        pass_on(Frame::Item(item), &mut items);
                    }
                    Err(e) => {
                        eprintln!("process region: an input was dropped: {e}");
                        fed.undecodable.fetch_add(1, Ordering::Relaxed);
                        if let (Some(_), Some(writer)) = (&fed.ids, credit) {
                            let mut frame = Vec::new();
                            let failed = outcome_byte(crate::resume::accounts::Outcome::Failed);
                            write_resolved(&mut frame, &[(id, failed)]);
                            let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                            let _ = writer.send_parts(&[&[FROM_RESOLVED], &frame]);
                        }
                    }
                }
            }
            Some((&TO_EPOCH, _)) => {
                // Counted first: the boundary the nested pipeline passes on is then known.
                fed.boundaries.fetch_add(1, Ordering::AcqRel);
                pass_on(Frame::Boundary, &mut items);
                continue;
            }
            _ => break, // the end of inputs
        }
        if taken.is_multiple_of(CREDIT_EVERY) {
            if let Some(writer) = credit {
                let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                // A broken pipe: the parent is gone, and the next read says so.
                let _ = writer.send_parts(&[&[FROM_TAKEN], &taken.to_le_bytes()]);
            }
        }
    }
    // Before the nested source sees its input close, so that the boundary it then passes
    // on reads as the end.
    fed.ended.store(true, Ordering::Release);
    drop(items);
}

/// The nested pipeline could not be built: says why, then drains the inputs.
fn refuse(reader: &mut FrameReader, writer: &mut FrameWriter, why: &str) -> Result<(), String> {
    writer
        .send_parts(&[&[FROM_REFUSED], why.as_bytes()])
        .map_err(|e| e.to_string())?;
    feed::<()>(reader, None, &Fed::default(), None);
    Ok(())
}

fn progress(
    pipeline: &Pipeline<impl Send + 'static>,
    counters: &[Arc<StageCounters>],
    fed: &Fed,
) -> Progress {
    Progress {
        resolved: pipeline.resolved_inputs() + fed.undecodable.load(Ordering::Relaxed),
        // The worker's own source stands for the region's input, which the parent counts.
        stages: counters.iter().skip(1).map(|c| c.export()).collect(),
    }
}

/// Sends the nested pipeline's outputs to the parent until it ends.
fn send_outputs<Out: Serialize + Send + 'static>(
    pipeline: &mut Pipeline<Out>,
    writer: &Mutex<&mut FrameWriter>,
    counters: &[Arc<StageCounters>],
    fed: &Fed,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let send = |parts: &[&[u8]]| {
        let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.send_parts(parts).map_err(io)
    };
    let done = |pipeline: &Pipeline<Out>| {
        let last = encode(&progress(pipeline, counters, fed)).map_err(io)?;
        send(&[&[FROM_DONE], &last])
    };
    let mut last_stats = Instant::now();
    let mut boundaries_out = 0u64;
    // The inputs resolved since the last report (after every output that carried them),
    // as their parent's ids.
    let resolved_ids = |pipeline: &Pipeline<Out>| -> Vec<(u64, u8)> {
        let Some(ids) = &fed.ids else {
            return Vec::new();
        };
        let resolved = pipeline.take_resolved();
        let mut ids = lock(ids);
        resolved
            .into_iter()
            .filter_map(|(pos, outcome)| Some((ids.remove(&pos)?, outcome_byte(outcome))))
            .collect()
    };
    let report_resolved = |pipeline: &Pipeline<Out>| {
        let resolved = resolved_ids(pipeline);
        if resolved.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(4 + resolved.len() * 9);
        write_resolved(&mut frame, &resolved);
        send(&[&[FROM_RESOLVED], &frame])
    };
    let done = |pipeline: &Pipeline<Out>| {
        report_resolved(pipeline)?;
        done(pipeline)
    };
    loop {
        match pipeline.next_msg(Some(Instant::now() + STATS_EVERY)) {
            Ok(Some(Msg::Item(out, _))) => {
                let resolved = pipeline.resolved_inputs() + fed.undecodable.load(Ordering::Relaxed);
                let mut sources = Vec::new();
                if let Some(ids) = &fed.ids {
                    let ids = lock(ids);
                    sources.extend(
                        pipeline
                            .sources()
                            .iter()
                            .filter_map(|&(p, k)| Some([*ids.get(&p)?, k.unwrap_or(WHOLE)])),
                    );
                }
                let mut header = resolved.to_le_bytes().to_vec();
                write_pairs(&mut header, &sources);
                match encode(&out) {
                    Ok(bytes) => {
                        // With the output, the inputs it was the last of (and any other
                        // resolved by now).
                        write_resolved(&mut header, &resolved_ids(pipeline));
                        send(&[&[FROM_ITEM], &header, &bytes])?
                    }
                    Err(e) => {
                        let mut lost = Vec::new();
                        write_pairs(&mut lost, &sources);
                        send(&[&[FROM_LOST], &lost, e.to_string().as_bytes()])?;
                        report_resolved(pipeline)?;
                    }
                }
            }
            Ok(Some(Msg::EpochEnd)) => {
                report_resolved(pipeline)?;
                if boundaries_out < fed.boundaries.load(Ordering::Acquire) {
                    // Every output of the epoch is out: say so.
                    boundaries_out += 1;
                    send(&[&[FROM_EPOCH]])?;
                } else if fed.ended.load(Ordering::Acquire) {
                    // The pass that the end of inputs closed: everything is out.
                    return done(pipeline);
                }
            }
            Ok(None) | Err(GetError::Finished) => return done(pipeline),
            Err(GetError::Timeout) => report_resolved(pipeline)?,
            Err(GetError::Failed(e)) => {
                let remote = encode(&RemotePipelineError::from(&e)).map_err(io)?;
                return send(&[&[FROM_FAILED], &remote]);
            }
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            let now = encode(&progress(pipeline, counters, fed)).map_err(io)?;
            send(&[&[FROM_STATS], &now])?;
        }
    }
}
