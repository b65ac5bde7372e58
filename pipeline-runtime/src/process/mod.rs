//! Child-process plumbing: re-executing the current binary as a worker and talking to it.
//!
//! This is the foundation of [process stages](crate::ProcessPool) and of anything else that
//! runs work in a child process. The pieces:
//!
//! * **Entry points.** A worker runs one named function, registered with
//!   [`register_worker_entry!`](crate::register_worker_entry): `fn(args, Channel) ->
//!   Result<(), String>`.
//! * **Spawning.** [`ChildProcess::spawn`] re-runs [`std::env::current_exe`] with the
//!   argument [`WORKER_ARG`] and the variable [`WORKER_ENV`], waits for the child's
//!   handshake (bounded by a timeout), then sends which entry point to run and its
//!   serialized arguments.
//! * **Worker mode.** The child reaches its entry point through [`init`], which the
//!   program's `main` calls first thing. A child that does not (it runs `main` instead)
//!   never answers the handshake, and the parent reports that clearly; a worker never
//!   starts workers of its own.
//! * **Messages.** A [`Channel`] carries length-prefixed frames both ways, raw bytes or
//!   values encoded with serde (`postcard`). Inside the child the protocol runs on private
//!   copies of stdin and stdout; the worker's own prints go to stderr, which the parent
//!   forwards to its stderr, line by line, prefixed with the worker's name and pid.
//! * **Supervision.** Dropping a [`ChildProcess`] kills and reaps the child; a
//!   [`ChildKiller`] kills it from another thread (e.g. to unblock a reader);
//!   [`ChildProcess::wait`] gives an [`ExitReport`]: exit code or signal, whether it ran
//!   out of memory, and its last stderr lines. A worker's input channel closes when its
//!   parent dies, and the entry points of this crate return then.

pub(crate) mod channel;
mod child;
mod exit;
pub(crate) mod protocol;
mod worker;

pub use channel::{decode, encode, Channel, FrameReader, FrameWriter};
pub use child::{ChildKiller, ChildProcess, ProcessError, SpawnOptions};
pub use exit::ExitReport;
pub use protocol::{MAX_FRAME, PROTOCOL_VERSION, WORKER_ARG, WORKER_ENV};
pub use worker::{init, is_worker, EXIT_ENTRY_FAILED, EXIT_NO_ENTRY, EXIT_PANIC, EXIT_PROTOCOL};

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_args: Vec<u8>, _channel: Channel) -> Result<(), String> {
        Ok(())
    }
    crate::register_worker_entry!("pipeline_runtime::tests::noop", noop);

    /// A libtest binary has no `init()` in its `main`: the re-run child rejects the worker
    /// argument and exits, and the parent says why instead of hanging.
    #[test]
    fn a_libtest_child_fails_the_handshake_clearly() {
        let err = ChildProcess::spawn("pipeline_runtime::tests::noop", b"", &SpawnOptions::new())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("did not enter worker mode"), "{text}");
        assert!(text.contains("process::init()"), "{text}");
        let exit = err.exit_report().expect("the child was reaped");
        assert_ne!(exit.code(), Some(0), "{exit}");
    }
}
