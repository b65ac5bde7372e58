//! Worker processes: this program's executable run again as a worker. Process stages and
//! process regions run on a [`ProcessPool`] of such workers, and subprocesses
//! ([`subprocess`](crate::subprocess)) are built on them too; what a program calls here is
//! [`init`], first thing in `main` (or the [`#[pipeline_runtime::main]`](crate::main)
//! attribute calls it). A worker's failure reaches the caller as a [`ProcessError`] or an
//! [`ExitReport`].
//!
//! Everything that re-executes the binary as a worker lives in this folder:
//!
//! * `pool.rs`: the [`ProcessPool`] (one worker per caller thread) and its builder;
//! * `stage_worker.rs`: the worker's side of a process stage, the loop that calls the
//!   registered `fn` ([`process_fn!`](crate::process_fn)); the body its lanes run in the
//!   parent is the `pipe` stage's business (`stage::pipe::process_body`);
//! * `region.rs` and `region_worker.rs`: a process region's wire and
//!   [`process_region!`](crate::process_region), and the worker that runs its nested
//!   pipeline (the region's lanes in the parent are a stage's business);
//! * `registry.rs`: the one registry of named functions a child runs, which names none of
//!   its clients' types;
//! * `child.rs`, `worker.rs`, `channel.rs`, `protocol.rs`, `exit.rs`: the plumbing both
//!   sides share, described below; `tests.rs` tests it with real children.
//!
//! [`subprocess`](crate::subprocess) depends on this module, never the other way round.
//!
//! The plumbing underneath is crate-private:
//!
//! * **Entry points.** A worker runs one named function, `fn(args, Channel) ->
//!   Result<(), String>`, found in the crate's registry of functions a child runs.
//! * **Spawning.** `ChildProcess::spawn` re-runs [`std::env::current_exe`] with the
//!   argument `--pipeline-runtime-worker` and the variable `PIPELINE_RUNTIME_WORKER`, waits
//!   for the child's handshake (bounded by a timeout), then sends which entry point to run
//!   and its serialized arguments.
//! * **Worker mode.** The child reaches its entry point through [`init`]. A child that does
//!   not call it (it runs `main` instead) never answers the handshake, and the parent reports
//!   that clearly; a worker never starts workers of its own.
//! * **Messages.** A `Channel` carries length-prefixed frames both ways, raw bytes or values
//!   encoded with serde (`postcard`). Inside the child the protocol runs on private copies of
//!   stdin and stdout; the worker's own prints go to stderr, which the parent forwards to its
//!   stderr, line by line, prefixed with the worker's name and pid.
//! * **Supervision.** Dropping a `ChildProcess` kills and reaps the child; a `ChildKiller`
//!   kills it from another thread (e.g. to unblock a reader); `ChildProcess::wait` gives an
//!   [`ExitReport`]: exit code or signal, whether it ran out of memory, and its last stderr
//!   lines. A child dies with its parent: on Linux `PR_SET_PDEATHSIG` (`SIGKILL`) is set
//!   between fork and exec, every child being forked by one thread that lives as long as
//!   the process (the signal follows the forking thread); elsewhere its input channel
//!   closes, and the entry points of this crate return then.

pub(crate) mod channel;
pub(crate) mod child;
mod exit;
pub(crate) mod pool;
pub(crate) mod protocol;
pub(crate) mod region;
pub(crate) mod region_worker;
pub(crate) mod registry;
pub(crate) mod stage_worker;
pub(crate) mod worker;

pub(crate) use channel::{decode, encode};
pub use child::ProcessError;
pub use exit::ExitReport;
pub use pool::{ProcessPool, ProcessPoolBuilder};
pub use worker::init;

#[cfg(test)]
mod tests;
