//! A worker in this process against hostile clients: every bad request is refused with a
//! status that says why, and the worker goes on serving good ones.

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::FlightData;
use tonic::metadata::MetadataValue;
use tonic::Code;

use super::wire::{self, PROTOCOL_KEY, REGION_KEY, TOKEN_KEY};
use super::{Worker, PROTOCOL_VERSION};
use crate::StageBuilder;

fn double(x: u64) -> u64 {
    x * 2
}
fn doubles(xs: StageBuilder<u64>) -> StageBuilder<u64> {
    xs.pipe(double)
}
crate::__private::register!(region doubles);

fn start_worker() -> String {
    let worker = Worker::bind("127.0.0.1:0", "sesame").expect("bind");
    let addr = worker.local_addr().expect("addr").to_string();
    std::thread::spawn(move || worker.serve());
    addr
}

/// One exchange: `messages` sent, then what came back (or the status it ended with).
async fn exchange(
    addr: &str,
    token: &str,
    version: &str,
    messages: Vec<FlightData>,
) -> Result<Vec<FlightData>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an address")
        .connect()
        .await
        .expect("connect");
    let mut client = FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(futures::stream::iter(messages));
    let meta = request.metadata_mut();
    meta.insert(TOKEN_KEY, MetadataValue::try_from(token).unwrap());
    meta.insert(PROTOCOL_KEY, MetadataValue::try_from(version).unwrap());
    let region = crate::__private::fn_type_name(&doubles);
    meta.insert(REGION_KEY, MetadataValue::try_from(region).unwrap());
    let mut answers = client.do_exchange(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(message) = answers.message().await? {
        out.push(message);
    }
    Ok(out)
}

#[test]
fn a_worker_refuses_bad_requests_clearly_and_serves_good_ones() {
    let addr = start_worker();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = PROTOCOL_VERSION.to_string();
    let schema = wire::schema_message().unwrap();
    let ticket = |id: u64, xs: &[u64]| {
        let items: Vec<Vec<u8>> = xs
            .iter()
            .map(|x| crate::process::encode(x).unwrap())
            .collect();
        wire::encode_batch(id, xs.to_vec(), &items).unwrap()
    };
    runtime.block_on(async {
        let wrong = exchange(&addr, "sesamE", &version, vec![schema.clone()]).await;
        let status = wrong.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(!status.message().contains("sesame"), "{status}");

        let old = exchange(&addr, "sesame", "0", vec![schema.clone()]).await;
        let status = old.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("protocol 1"), "{status}");
        assert!(status.message().contains("\"0\""), "{status}");

        // A batch where the schema should be.
        let no_schema = exchange(&addr, "sesame", &version, vec![ticket(0, &[1])]).await;
        let status = no_schema.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");

        // Garbage after the schema.
        let mut garbage = ticket(1, &[1]);
        garbage.data_header = vec![0x5a; 64].into();
        let bad = exchange(&addr, "sesame", &version, vec![schema.clone(), garbage]).await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

        // Still serving: two tickets, answered whole, each with its number.
        let messages = vec![schema.clone(), ticket(7, &[1, 2, 3]), ticket(8, &[4])];
        let answers = exchange(&addr, "sesame", &version, messages)
            .await
            .expect("a good exchange");
        wire::check_schema(&answers[0]).unwrap();
        let rows: Vec<_> = answers[1..]
            .iter()
            .map(|m| wire::decode_batch(m).unwrap())
            .collect();
        let values = |i: usize| -> Vec<u64> {
            rows[i]
                .items
                .iter()
                .map(|b| crate::process::decode(b).unwrap())
                .collect()
        };
        assert_eq!((rows[0].ticket, values(0)), (7, vec![2, 4, 6]));
        assert_eq!((rows[1].ticket, values(1)), (8, vec![8]));
    });
}
