//! The worker: an Arrow Flight server whose `DoExchange` runs a registered region on the
//! tickets a trainer sends, one nested pipeline per connection. Every other Flight call is
//! refused.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::runner::{self, Answer, RegionRunner};
use super::tls::ServerTls;
use super::wire::{self, PROTOCOL_KEY, PROTOCOL_VERSION, REGION_KEY, THREADS_KEY, TOKEN_KEY};
use crate::process::region::RegionStart;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A worker bound to its address, ready to [`serve`](Self::serve).
pub struct Worker {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    token: Arc<[u8]>,
    tls: Option<ServerTls>,
}

impl std::fmt::Debug for Worker {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Binds `addr` (`host:port`; port 0 picks a free one). Clients must present `token`.
    /// Give a loopback address (`127.0.0.1:PORT`) unless other machines must reach it.
    pub fn bind(addr: &str, token: &str) -> std::io::Result<Self> {
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a worker needs a non-empty token",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pipeline-remote-worker")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        Ok(Self {
            runtime,
            listener,
            token: token.as_bytes().into(),
            tls: None,
        })
    }

    /// Serves over TLS with this certificate chain and private key (PEM, as read from
    /// their files); trainers then need the CA that signed it
    /// ([`RemoteWorkers::tls_ca`](super::RemoteWorkers::tls_ca)). The token is still
    /// required. Fails if the certificate or key does not parse.
    pub fn tls(mut self, cert_chain_pem: &[u8], key_pem: &[u8]) -> std::io::Result<Self> {
        let tls = ServerTls::new(cert_chain_pem, key_pem)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
        self.tls = Some(tls);
        Ok(self)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends (or the listener fails).
    pub fn serve(self) -> std::io::Result<()> {
        let service = FlightServiceServer::new(Exchange { token: self.token })
            .max_decoding_message_size(wire::MAX_MESSAGE)
            .max_encoding_message_size(wire::MAX_MESSAGE);
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            server = server
                .tls_config(tls.config())
                .map_err(|e| std::io::Error::other(super::tls::chain(&e)))?;
        }
        self.runtime
            .block_on(
                server
                    .initial_stream_window_size(wire::STREAM_WINDOW)
                    .initial_connection_window_size(wire::CONNECTION_WINDOW)
                    .add_service(service)
                    .serve_with_incoming(incoming),
            )
            .map_err(std::io::Error::other)
    }
}

/// Binds `addr` and serves the regions registered in this binary to clients that present
/// `token`, until the process ends: [`Worker::bind`] then [`Worker::serve`].
pub fn serve(addr: &str, token: &str) -> std::io::Result<()> {
    Worker::bind(addr, token)?.serve()
}

struct Exchange {
    token: Arc<[u8]>,
}

/// The text of a metadata entry, or why not.
fn header<'a>(request: &'a Request<Streaming<FlightData>>, key: &str) -> Result<&'a str, Status> {
    request
        .metadata()
        .get(key)
        .ok_or_else(|| Status::invalid_argument(format!("no `{key}` in the request's metadata")))?
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("`{key}` is not text")))
}

impl Exchange {
    /// What a request must show before anything of it is decoded: the token first.
    fn admit(&self, request: &Request<Streaming<FlightData>>) -> Result<RegionStart, Status> {
        let given = request.metadata().get(TOKEN_KEY).map(|v| v.as_bytes());
        if !given.is_some_and(|given| wire::same_token(given, &self.token)) {
            return Err(Status::unauthenticated(
                "wrong or missing token: the worker and the trainer must be given the same one",
            ));
        }
        let theirs = header(request, PROTOCOL_KEY)?;
        if theirs.parse::<u32>().ok() != Some(PROTOCOL_VERSION) {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: this worker speaks remote protocol \
                 {PROTOCOL_VERSION}, the client {theirs:?}; build both from the same version"
            )));
        }
        let threads = match request.metadata().get(THREADS_KEY) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| Status::invalid_argument("bad thread count"))?,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        Ok(RegionStart {
            num_threads: threads,
            queue_capacity: 64,
            continuous: true,
            // Tickets are the remote tier's unit of exactly once; the ledger does not
            // cross it (resume tracking is refused).
            trace: false,
            outputs: false,
        })
    }
}

fn refused<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "a pipeline worker serves DoExchange only, not {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for Exchange {
    type HandshakeStream = Messages<HandshakeResponse>;
    type ListFlightsStream = Messages<FlightInfo>;
    type DoGetStream = Messages<FlightData>;
    type DoPutStream = Messages<PutResult>;
    type DoExchangeStream = Messages<FlightData>;
    type DoActionStream = Messages<arrow_flight::Result>;
    type ListActionsStream = Messages<ActionType>;

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let start = self.admit(&request)?;
        let region = header(&request, REGION_KEY)?.to_owned();
        let (answers, outbox) = tokio::sync::mpsc::unbounded_channel::<Result<Answer, String>>();
        let sink: runner::AnswerSink = Box::new(move |answer| {
            let _ = answers.send(answer);
        });
        let runner =
            RegionRunner::start(&region, &start, sink).map_err(Status::failed_precondition)?;
        let mut inbound = request.into_inner();
        // Reads tickets and hands them to the region; a bad message ends the exchange.
        let (fail, failure) = tokio::sync::oneshot::channel::<Status>();
        tokio::spawn(async move {
            let failed = |why: String| Status::invalid_argument(why);
            let result: Result<(), Status> = async {
                let first = inbound
                    .message()
                    .await?
                    .ok_or_else(|| failed("no schema message".into()))?;
                wire::check_schema(&first).map_err(failed)?;
                while let Some(message) = inbound.message().await? {
                    let rows = wire::decode_batch(&message).map_err(failed)?;
                    let ticket = runner::Ticket {
                        id: rows.ticket,
                        positions: rows.positions,
                        items: rows.items.iter().map(|i| i.to_vec()).collect(),
                    };
                    if !runner.send(Arc::new(ticket)).await {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(status) = result {
                let _ = fail.send(status);
            }
            // Dropping the runner ends the region's input: it answers what it holds.
        });
        let schema = wire::schema_message().map_err(Status::internal)?;
        let answers = futures::stream::unfold(outbox, |mut outbox| async move {
            let answer = outbox.recv().await?;
            let message = answer.map_err(Status::internal).and_then(|a| {
                wire::encode_batch(a.ticket, a.sources, &a.items).map_err(Status::internal)
            });
            Some((message, outbox))
        });
        // A bad inbound message ends the stream with its status.
        let failure = futures::stream::once(failure).filter_map(|r| async move { r.ok().map(Err) });
        let stream = futures::stream::once(async move { Ok(schema) })
            .chain(futures::stream::select(answers, failure));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        refused("Handshake")
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        refused("ListFlights")
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refused("GetFlightInfo")
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        refused("PollFlightInfo")
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        refused("GetSchema")
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        refused("DoGet")
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        refused("DoPut")
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        refused("DoAction")
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        refused("ListActions")
    }
}
