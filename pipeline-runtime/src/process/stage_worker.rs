//! Named stage functions that worker processes can run, and the worker loop that runs them.
//!
//! A closure cannot cross a process boundary, so a process stage is a plain `fn` registered
//! with [`process_fn!`](crate::process_fn), in the one registry of functions a child runs
//! (`registry`), keyed by the function's type name, as a [`CallFn`]. The stage worker also
//! serves process regions: a request naming a registered region hands the channel over to
//! it (see [`region`](super::region)).

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::channel::{decode, encode, Channel};
use super::region::{RegionFn, RegionIo};
use super::registry::{self, Kind};
use crate::sync::panic_message;

/// Entry point name of a stage worker.
pub(crate) const STAGE_WORKER_ENTRY: &str = "pipeline_runtime::stage_worker";

/// A process-stage function as the registry keeps it: encoded input to encoded output.
#[doc(hidden)]
pub type CallFn = fn(&[u8]) -> Result<Vec<u8>, String>;

/// Status byte of a worker's reply, sent last so that the parent drops it in O(1).
pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_ERROR: u8 = 1;
pub(crate) const REPLY_PANIC: u8 = 2;

/// Registers functions as process stages, so that worker processes can run them:
///
/// ```
/// fn checksum(data: Vec<u8>) -> u64 {
///     data.iter().map(|&b| u64::from(b)).sum()
/// }
/// pipeline_runtime::process_fn!(checksum);
/// ```
///
/// Write it at module level, next to the functions. A function's input and output cross
/// the process boundary with serde, so they must be `Deserialize` and `Serialize`
/// respectively (checked here, at compile time).
#[macro_export]
macro_rules! process_fn {
    ($($f:path),+ $(,)?) => {
        $( $crate::__private::register!(stage $f); )+
    };
}

/// Decodes the input, calls `f`, encodes the output (in the worker).
#[doc(hidden)]
pub fn call_process_fn<T, U, F>(f: &F, input: &[u8]) -> Result<Vec<u8>, String>
where
    T: DeserializeOwned,
    U: Serialize,
    F: Fn(T) -> U,
{
    let input: T = decode(input).map_err(|e| e.to_string())?;
    encode(&f(input)).map_err(|e| e.to_string())
}

/// A request: `[name length: u16 LE][name][encoded input]`.
pub(crate) fn request_header(name: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(2 + name.len());
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(name.as_bytes());
    header
}

fn split_request(frame: &[u8]) -> Result<(&str, &[u8]), String> {
    let len = frame
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or("truncated request")?;
    let name = frame.get(2..2 + len).ok_or("truncated request")?;
    let name = std::str::from_utf8(name).map_err(|_| "request name is not UTF-8")?;
    Ok((name, &frame[2 + len..]))
}

/// The stage worker: answers requests until the parent closes the channel.
fn stage_worker(_args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    // Consecutive requests mostly name the same function: look it up once.
    let mut last: Option<(String, CallFn)> = None;
    while let Some(frame) = channel.recv().map_err(|e| e.to_string())? {
        let (name, input) = split_request(&frame)?;
        let call = match &last {
            Some((last_name, call)) if last_name == name => *call,
            _ => match registry::lookup::<CallFn>(name, Kind::Stage) {
                Some(call) => {
                    last = Some((name.to_owned(), call));
                    call
                }
                None if registry::lookup::<RegionFn>(name, Kind::Region).is_some() => {
                    // A process region takes the channel over until its input ends.
                    let run = registry::lookup::<RegionFn>(name, Kind::Region).expect("checked");
                    run(RegionIo(&mut channel), input)?;
                    continue;
                }
                None => {
                    let msg = format!("no process fn `{name}` is registered");
                    channel
                        .send_parts(&[msg.as_bytes(), &[REPLY_ERROR]])
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            },
        };
        let sent = match catch_unwind(AssertUnwindSafe(|| call(input))) {
            Ok(Ok(output)) => channel.send_parts(&[&output, &[REPLY_OK]]),
            Ok(Err(msg)) => channel.send_parts(&[msg.as_bytes(), &[REPLY_ERROR]]),
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                channel.send_parts(&[msg.as_bytes(), &[REPLY_PANIC]])
            }
        };
        sent.map_err(|e| e.to_string())?;
    }
    Ok(())
}
crate::__private::register!(worker STAGE_WORKER_ENTRY => stage_worker);
