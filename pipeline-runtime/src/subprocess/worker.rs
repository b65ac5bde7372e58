//! The child's side: run the initialiser and the factory, then stream the output to the
//! parent through an [`Emitter`].

use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::factory::{InitFn, StartFn};
use super::output::{writer_loop, Emitter, Source, Step};
use super::shm::ShmRing;
use super::wire::{self, Setup};
use crate::process::channel::{decode, encode, Channel};
use crate::process::registry::{self, Kind};

fn send_init_failed(channel: &mut Channel, step: &str, message: &str) -> Result<(), String> {
    let payload = encode(&(step, message)).map_err(|e| e.to_string())?;
    channel
        .send_parts(&[&[wire::INIT_FAILED], &payload])
        .map_err(|e| e.to_string())
}

/// The worker entry point of every subprocess pipeline or iterator.
fn run(args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    let setup: Setup = decode(&args).map_err(|e| e.to_string())?;
    // The ring first, before any user code: mapping it unlinks its file (or closes the
    // inherited memfd), so a parent killed while the initialiser or factory runs leaves
    // nothing behind.
    let shm = match &setup.shm {
        Some(spec) => {
            let ring = ShmRing::open(spec);
            spec.close_inherited();
            match ring {
                Ok(ring) => Some(ring),
                Err(e) => {
                    let message = format!("cannot map the shared memory: {e}");
                    return send_init_failed(&mut channel, "transport", &message);
                }
            }
        }
        None => None,
    };
    if let Some((name, args)) = &setup.initializer {
        let init = registry::lookup::<InitFn>(name, Kind::Init)
            .ok_or_else(|| format!("`{name}` is not a registered initialiser"));
        if let Err(message) = init.and_then(|init| init(args)) {
            return send_init_failed(&mut channel, "initializer", &message);
        }
    }
    let start = registry::lookup::<StartFn>(&setup.factory, Kind::Pipeline)
        .or_else(|| registry::lookup::<StartFn>(&setup.factory, Kind::Iter))
        .ok_or_else(|| {
            format!(
                "`{}` is not a registered pipeline or iterator factory",
                setup.factory
            )
        });
    let mut source = match start.and_then(|start| start(&setup.factory_args)) {
        Ok(source) => source,
        Err(message) => return send_init_failed(&mut channel, "factory", &message),
    };
    channel.send(&[wire::READY]).map_err(|e| e.to_string())?;

    let (mut reader, writer) = channel.split();
    // The parent never sends anything after the setup: the end of its stream means it
    // dropped its handle or exited, and the output has no reader any more.
    spawn_named("subprocess-watchdog", move || {
        while let Ok(Some(_)) = reader.recv() {}
        std::process::exit(0);
    })?;
    let (frames_tx, frames_rx) = sync_channel(4);
    let (spare_tx, spare_rx) = sync_channel(4);
    let writer_idle = Arc::new(AtomicBool::new(true));
    let idle = writer_idle.clone();
    let writer_thread = spawn_named("subprocess-writer", move || {
        writer_loop(writer, frames_rx, spare_tx, idle)
    })?;
    let mut out = Emitter {
        batch: Vec::with_capacity(setup.batch_bytes + 64),
        batch_bytes: setup.batch_bytes,
        shm,
        shm_threshold: setup.shm_threshold,
        next_slot: 0,
        frames: frames_tx,
        spare: spare_rx,
        writer_idle,
    };
    let result = catch_unwind(AssertUnwindSafe(|| produce(&mut *source, &mut out)));
    // Whatever was produced reaches the parent, even before a panic is reported.
    let _ = out.flush();
    let Emitter { frames, .. } = out;
    drop(frames);
    let _ = writer_thread.join();
    match result {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => resume_unwind(panic),
    }
}

fn produce(source: &mut dyn Source, out: &mut Emitter) -> io::Result<()> {
    loop {
        match source.step(out)? {
            Step::Item => {}
            Step::EpochEnd => out.record(wire::EPOCH_END, &[])?,
            Step::Finished => return out.record(wire::FINISHED, &[]),
            Step::Failed(e) => return out.record(wire::FAILED, &encode(&e)?),
        }
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
}

crate::__private::register!(worker wire::ENTRY => run);
