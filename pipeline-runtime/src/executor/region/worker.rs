//! The worker's side of a process region: builds the nested pipeline from the registered
//! region `fn`, feeds it the inputs read from the parent on one thread, and sends its
//! outputs back from another, with how many inputs it is done with and, now and then,
//! its stages' counters.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    Progress, RegionIo, RegionStart, CREDIT_EVERY, FROM_DONE, FROM_FAILED, FROM_ITEM, FROM_LOST,
    FROM_READY, FROM_REFUSED, FROM_STATS, FROM_TAKEN, TO_ITEM,
};
use crate::builder::{PipelineBuilder, StageBuilder};
use crate::pipeline::{GetError, Pipeline};
use crate::process::channel::{decode, encode, FrameReader, FrameWriter};
use crate::queue::Msg;
use crate::stats::StageCounters;
use crate::subprocess::RemotePipelineError;
use crate::sync::panic_message;

/// How often a worker sends its counters while it runs.
const STATS_EVERY: Duration = Duration::from_millis(100);

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
    let (items, inputs) = std::sync::mpsc::sync_channel::<In>(1);
    let built = catch_unwind(AssertUnwindSafe(|| {
        f(PipelineBuilder::new().source(inputs))
            .sink()
            .num_threads(start.num_threads)
            .queue_capacity(start.queue_capacity)
            .track_resume(true)
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
    let undecodable = Arc::new(AtomicU64::new(0));
    let writer = Mutex::new(writer);
    std::thread::scope(|s| {
        let bad = undecodable.clone();
        let credit = &writer;
        let feeding = s.spawn(move || feed(reader, Some(items), &bad, Some(credit)));
        let result = send_outputs(&mut pipeline, &writer, &counters, &undecodable);
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
    mut items: Option<SyncSender<In>>,
    undecodable: &AtomicU64,
    credit: Option<&Mutex<&mut FrameWriter>>,
) {
    let mut taken = 0u64;
    while let Ok(Some(frame)) = reader.recv() {
        if frame.first() == Some(&TO_ITEM) {
            taken += 1;
        }
        match frame.split_first() {
            Some((&TO_ITEM, bytes)) => match decode::<In>(bytes) {
                Ok(item) => {
                    if let Some(tx) = &items {
                        if tx.send(item).is_err() {
                            items = None; // the nested pipeline ended: drain
                        }
                    }
                }
                Err(e) => {
                    eprintln!("process region: an input was dropped: {e}");
                    undecodable.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ => break, // the end of inputs
        }
        if taken % CREDIT_EVERY == 0 {
            if let Some(writer) = credit {
                let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                // A broken pipe: the parent is gone, and the next read says so.
                let _ = writer.send_parts(&[&[FROM_TAKEN], &taken.to_le_bytes()]);
            }
        }
    }
}

/// The nested pipeline could not be built: says why, then drains the inputs.
fn refuse(reader: &mut FrameReader, writer: &mut FrameWriter, why: &str) -> Result<(), String> {
    writer
        .send_parts(&[&[FROM_REFUSED], why.as_bytes()])
        .map_err(|e| e.to_string())?;
    feed::<()>(reader, None, &AtomicU64::new(0), None);
    Ok(())
}

fn progress(pipeline: &Pipeline<impl Send + 'static>, counters: &[Arc<StageCounters>], bad: u64) -> Progress {
    Progress {
        resolved: pipeline.resolved_inputs() + bad,
        // The worker's own source stands for the region's input, which the parent counts.
        stages: counters.iter().skip(1).map(|c| c.export()).collect(),
    }
}

/// Sends the nested pipeline's outputs to the parent until it ends.
fn send_outputs<Out: Serialize + Send + 'static>(
    pipeline: &mut Pipeline<Out>,
    writer: &Mutex<&mut FrameWriter>,
    counters: &[Arc<StageCounters>],
    undecodable: &AtomicU64,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let send = |parts: &[&[u8]]| {
        let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.send_parts(parts).map_err(io)
    };
    let mut last_stats = Instant::now();
    loop {
        let bad = undecodable.load(Ordering::Relaxed);
        match pipeline.next_msg(Some(Instant::now() + STATS_EVERY)) {
            Ok(Some(Msg::Item(out, _))) => {
                let resolved = (pipeline.resolved_inputs() + bad).to_le_bytes();
                match encode(&out) {
                    Ok(bytes) => send(&[&[FROM_ITEM], &resolved, &bytes])?,
                    Err(e) => send(&[&[FROM_LOST], e.to_string().as_bytes()])?,
                }
            }
            // Epoch boundaries do not enter a region (the builder refuses continuous chains).
            Ok(Some(Msg::EpochEnd)) => {}
            Ok(None) | Err(GetError::Finished) => {
                let last = encode(&progress(pipeline, counters, bad)).map_err(io)?;
                return send(&[&[FROM_DONE], &last]);
            }
            Err(GetError::Timeout) => {}
            Err(GetError::Failed(e)) => {
                let remote = encode(&RemotePipelineError::from(&e)).map_err(io)?;
                return send(&[&[FROM_FAILED], &remote]);
            }
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            let now = encode(&progress(pipeline, counters, bad)).map_err(io)?;
            send(&[&[FROM_STATS], &now])?;
        }
    }
}
