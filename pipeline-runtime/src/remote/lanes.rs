//! The lanes of a `remote_region` on the trainer's side: local lanes run the region in
//! this process; a remote lane holds one Flight `DoExchange` with its worker, reconnecting
//! when the worker goes away and giving up after a while without one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::FlightData;
use tonic::Code;

use super::runner::{AnswerSink, RegionRunner};
use super::schedule::{Schedule, POLL};
use super::tls::{self, ClientTls};
use super::wire::{self, PROTOCOL_KEY, REGION_KEY, THREADS_KEY, TOKEN_KEY};
use crate::process::region::RegionStart;
use crate::sync::lock;

/// A local lane: the region in this process, fed tickets until the tier finishes.
pub(crate) fn run_local(
    schedule: Arc<Schedule>,
    lane: usize,
    key: &str,
    start: &RegionStart,
    deficit: &dyn Fn() -> bool,
) {
    let answers = schedule.clone();
    let sink: AnswerSink = Box::new(move |answer| match answer {
        Ok(a) => answers.answer(lane, a.ticket, a.items, a.sources),
        // The same region fails the same way anywhere: not a lane's bad luck.
        Err(why) => answers.fail(format!("local lane {lane}: {why}")),
    });
    let runner = match RegionRunner::start(key, start, sink) {
        Ok(runner) => runner,
        Err(why) => return schedule.fail(format!("local lane {lane}: {why}")),
    };
    while !schedule.finished() {
        if let Some(ticket) = schedule.take(lane, deficit) {
            if !runner.send_blocking(ticket) {
                break;
            }
        }
    }
}

/// How a remote lane reaches its worker.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) addr: String,
    pub(crate) token: Arc<str>,
    pub(crate) key: &'static str,
    pub(crate) threads: Option<usize>,
    pub(crate) protocol: u32,
    pub(crate) timeout: Duration,
    pub(crate) give_up: Duration,
    pub(crate) tls: Option<Arc<ClientTls>>,
}

/// Why a connection could not be made.
enum ConnectError {
    /// The worker answered and refused (token, version, region): trying again is useless.
    Refused(String),
    /// Not reachable now.
    Unreachable(String),
}

/// A live exchange with a worker.
struct Connection {
    tickets: tokio::sync::mpsc::Sender<FlightData>,
    /// Set, with why, when the answers' stream ends or breaks.
    broken: Arc<AtomicBool>,
    why: Arc<Mutex<String>>,
}

/// A remote lane: connects, sends tickets while the tier is in deficit, reads answers on
/// the runtime, and replays what it held when the connection breaks or hangs.
pub(crate) fn run_remote(
    schedule: Arc<Schedule>,
    lane: usize,
    peer: &Peer,
    runtime: &tokio::runtime::Handle,
    deficit: &dyn Fn() -> bool,
) {
    let mut last_ok = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut gone = false;
    while !schedule.finished() {
        match connect(schedule.clone(), lane, peer, runtime) {
            Err(ConnectError::Refused(why)) => {
                // Said once: the lane is off for the run.
                eprintln!(
                    "remote region: worker {} refused the trainer: {why}",
                    peer.addr
                );
                schedule.set_alive(lane, false, &format!("{}: {why}", peer.addr));
                return;
            }
            Err(ConnectError::Unreachable(why)) => {
                if !gone && last_ok.elapsed() > peer.give_up {
                    gone = true;
                    schedule.set_alive(lane, false, &format!("{}: {why}", peer.addr));
                }
                sleep_unless_finished(&schedule, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Ok(connection) => {
                if gone {
                    gone = false;
                    schedule.set_alive(lane, true, "");
                }
                backoff = Duration::from_millis(50);
                exchange(&schedule, lane, peer, &connection, deficit);
                if !schedule.finished() {
                    schedule.lane_failed(lane);
                }
                last_ok = Instant::now();
            }
        }
    }
}

fn sleep_unless_finished(schedule: &Schedule, total: Duration) {
    let until = Instant::now() + total;
    while Instant::now() < until && !schedule.finished() {
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

/// Sends tickets over `connection` until it breaks or the tier finishes.
fn exchange(
    schedule: &Schedule,
    lane: usize,
    peer: &Peer,
    connection: &Connection,
    deficit: &dyn Fn() -> bool,
) {
    let mut suspect_since = None;
    while !schedule.finished() && !connection.broken.load(Ordering::Acquire) {
        if let Some(ticket) = schedule.take(lane, deficit) {
            let message =
                match wire::encode_batch(ticket.id, ticket.positions.clone(), &ticket.items) {
                    Ok(message) => message,
                    Err(why) => return schedule.fail(format!("cannot encode a ticket: {why}")),
                };
            if connection.tickets.blocking_send(message).is_err() {
                break;
            }
        }
        if schedule.check_hang(lane, peer.timeout) {
            eprintln!(
                "remote region: worker {} held a ticket past {:?}; replaying it elsewhere",
                peer.addr, peer.timeout
            );
            suspect_since = Some(Instant::now());
        }
        if !schedule.is_suspect(lane) {
            suspect_since = None;
        } else if suspect_since.is_some_and(|since| since.elapsed() > 2 * peer.timeout) {
            // Still silent: drop the connection, and reconnect (or count it gone) as for
            // a worker that died. Its late answers, until now, were dropped and counted.
            eprintln!(
                "remote region: worker {} is still silent; reconnecting",
                peer.addr
            );
            return;
        }
    }
    if connection.broken.load(Ordering::Acquire) && !schedule.finished() {
        eprintln!(
            "remote region: lost worker {}: {}",
            peer.addr,
            lock(&connection.why)
        );
    }
}

fn connect(
    schedule: Arc<Schedule>,
    lane: usize,
    peer: &Peer,
    runtime: &tokio::runtime::Handle,
) -> Result<Connection, ConnectError> {
    let unreachable = |e: &dyn std::fmt::Display| ConnectError::Unreachable(e.to_string());
    let schema = wire::schema_message().map_err(ConnectError::Refused)?;
    let mut request_meta = tonic::metadata::MetadataMap::new();
    let text = |v: &str| {
        v.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
            .map_err(|_| ConnectError::Refused("the token must be printable ASCII".to_owned()))
    };
    request_meta.insert(TOKEN_KEY, text(&peer.token)?);
    request_meta.insert(PROTOCOL_KEY, text(&peer.protocol.to_string())?);
    request_meta.insert(REGION_KEY, text(peer.key)?);
    if let Some(n) = peer.threads {
        request_meta.insert(THREADS_KEY, text(&n.to_string())?);
    }
    let timeout = peer.timeout;
    let addr = peer.addr.clone();
    let tls = peer.tls.clone();
    runtime.block_on(async move {
        let tls_on = tls.is_some();
        let scheme = if tls_on { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ConnectError::Refused(format!("bad worker address: {e}")))?
            .connect_timeout(timeout)
            .initial_stream_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::CONNECTION_WINDOW)
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.config()).map_err(|e| {
                ConnectError::Refused(format!("the trainer's TLS settings: {}", tls::chain(&e)))
            })?;
        }
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| connect_failed(&e, tls_on))?;
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(wire::MAX_MESSAGE)
            .max_encoding_message_size(wire::MAX_MESSAGE);
        let (tickets, outbox) = tokio::sync::mpsc::channel::<FlightData>(2);
        let first = futures::stream::once(async move { schema });
        let rest = futures::stream::unfold(outbox, |mut outbox| async move {
            outbox.recv().await.map(|m| (m, outbox))
        });
        let mut request = tonic::Request::new(futures::StreamExt::chain(first, rest));
        *request.metadata_mut() = request_meta;
        let response = tokio::time::timeout(timeout, client.do_exchange(request))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|status| match status.code() {
                Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::InvalidArgument
                | Code::NotFound
                | Code::Unimplemented => ConnectError::Refused(status.message().to_owned()),
                // A TLS worker's answer to plain HTTP/2 reads as a protocol error, a reset or
                // a broken pipe, depending on timing: any of them may mean TLS.
                _ if !tls_on => ConnectError::Unreachable(format!(
                    "{status} (if the worker serves TLS, give the trainer its CA certificate)"
                )),
                _ => ConnectError::Unreachable(status.to_string()),
            })?;
        let broken = Arc::new(AtomicBool::new(false));
        let why = Arc::new(Mutex::new(String::new()));
        let mut answers = response.into_inner();
        let (broken_flag, why_text) = (broken.clone(), why.clone());
        tokio::spawn(async move {
            let ended = read_answers(&schedule, lane, &mut answers).await;
            *lock(&why_text) = ended;
            broken_flag.store(true, Ordering::Release);
        });
        Ok(Connection {
            tickets,
            broken,
            why,
        })
    })
}

/// Why a connection failed, with its causes; a failed TLS handshake is a refusal (a
/// certificate the trainer does not trust, or a worker that does not speak TLS).
fn connect_failed(e: &tonic::transport::Error, tls: bool) -> ConnectError {
    let why = tls::chain(e);
    match (tls, tls::handshake_failed(e)) {
        (true, true) => ConnectError::Refused(format!(
            "the TLS handshake failed ({why}); is the worker serving TLS with a certificate \
             that the trainer's CA signed, for this address or the trainer's TLS domain?"
        )),
        _ => ConnectError::Unreachable(why),
    }
}

/// Reads a worker's answers until its stream ends; says why it ended.
async fn read_answers(
    schedule: &Schedule,
    lane: usize,
    answers: &mut tonic::Streaming<FlightData>,
) -> String {
    let mut schema_seen = false;
    loop {
        match answers.message().await {
            Ok(Some(message)) if !schema_seen => {
                if let Err(why) = wire::check_schema(&message) {
                    return why;
                }
                schema_seen = true;
            }
            Ok(Some(message)) => match wire::decode_batch(&message) {
                Ok(rows) => schedule.answer(lane, rows.ticket, rows.items, rows.positions),
                Err(why) => return format!("a bad answer: {why}"),
            },
            Ok(None) => return "the worker ended the exchange".to_owned(),
            Err(status) => return status.to_string(),
        }
    }
}
