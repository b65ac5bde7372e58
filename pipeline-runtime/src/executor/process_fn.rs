//! Named stage functions that worker processes can run, and the worker loop that runs them.
//!
//! A closure cannot cross a process boundary, so a process stage is a plain `fn` registered
//! with [`process_fn!`](crate::process_fn). The registry lives in the binary itself (parent
//! and workers are the same executable), keyed by the function's type name, which both
//! sides compute the same way.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::process::{decode, encode, Channel};
use crate::sync::panic_message;

/// Entry point name of a stage worker.
pub(crate) const STAGE_WORKER_ENTRY: &str = "pipeline_runtime::stage_worker";

/// Status byte of a worker's reply, sent last so that the parent drops it in O(1).
pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_ERROR: u8 = 1;
pub(crate) const REPLY_PANIC: u8 = 2;

type CallFn = fn(&[u8]) -> Result<Vec<u8>, String>;

/// A registered process stage function. Made by [`process_fn!`](crate::process_fn).
#[derive(Debug)]
pub struct ProcessFn {
    name: fn() -> &'static str,
    call: CallFn,
}

impl ProcessFn {
    #[doc(hidden)]
    pub const fn new(name: fn() -> &'static str, call: CallFn) -> Self {
        Self { name, call }
    }
}

inventory::collect!(ProcessFn);

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
        $(
            $crate::__private::inventory::submit! {
                $crate::__private::ProcessFn::new(
                    || $crate::__private::fn_type_name(&$f),
                    |input| $crate::__private::call_process_fn(&$f, input),
                )
            }
        )+
    };
}

/// The registry key of a function: its type name.
#[doc(hidden)]
pub fn fn_type_name<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
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

pub(crate) fn is_registered(name: &str) -> bool {
    find(name).is_some()
}

fn find(name: &str) -> Option<&'static ProcessFn> {
    inventory::iter::<ProcessFn>().find(|f| (f.name)() == name)
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
    let mut last: Option<&'static ProcessFn> = None;
    while let Some(frame) = channel.recv().map_err(|e| e.to_string())? {
        let (name, input) = split_request(&frame)?;
        let f = match last {
            Some(f) if (f.name)() == name => f,
            _ => match find(name) {
                Some(f) => {
                    last = Some(f);
                    f
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
        let sent = match catch_unwind(AssertUnwindSafe(|| (f.call)(input))) {
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
crate::register_worker_entry!(STAGE_WORKER_ENTRY, stage_worker);
