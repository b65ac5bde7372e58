//! What crosses between a trainer and a worker: gRPC metadata checked before anything is
//! decoded, then Arrow Flight `DoExchange` messages.
//!
//! Each side first sends the schema `{position: UInt64, item: Binary}`, then one record
//! batch per ticket whose `app_metadata` is the ticket's number (8 bytes, little endian).
//! Items are serde (`postcard`) bytes in the `item` column, so a Flight client in another
//! language can read the stream. Going out, `position` is each input's source position;
//! coming back, each output row carries the index in its ticket of the input it stands
//! for (`u64::MAX` for a batch of several), so that the trainer resolves positions one by
//! one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::{Array, BinaryArray, RecordBatch, UInt64Array};
use arrow_flight::utils::{batches_to_flight_data, flight_data_to_arrow_batch};
use arrow_flight::FlightData;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;

/// The version of this exchange; a worker refuses a client of another.
pub const PROTOCOL_VERSION: u32 = 1;

/// gRPC metadata: the shared token.
pub(crate) const TOKEN_KEY: &str = "x-pipeline-token";
/// gRPC metadata: the client's [`PROTOCOL_VERSION`].
pub(crate) const PROTOCOL_KEY: &str = "x-pipeline-protocol";
/// gRPC metadata: the registry name of the region to run.
pub(crate) const REGION_KEY: &str = "x-pipeline-region";
/// gRPC metadata: threads of the worker's nested pipeline (optional).
pub(crate) const THREADS_KEY: &str = "x-pipeline-threads";

/// The largest message either side decodes: bounds what a hostile peer can make us hold.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;
/// HTTP/2 flow-control windows, both ways: the 64 KiB default stalls a stream of
/// large items on every round trip.
pub(crate) const STREAM_WINDOW: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 16 << 20;
/// A ticket closes before its items reach this many bytes (well under [`MAX_MESSAGE`]).
pub(crate) const MAX_TICKET_BYTES: usize = 16 << 20;

/// The schema of every batch, both ways.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("position", DataType::UInt64, false),
        Field::new("item", DataType::Binary, false),
    ]))
}

/// The first message of each side.
pub(crate) fn schema_message() -> Result<FlightData, String> {
    let none: [&RecordBatch; 0] = [];
    let mut messages = batches_to_flight_data(&schema(), none).map_err(|e| e.to_string())?;
    messages.pop().ok_or_else(|| "no schema message".to_owned())
}

/// Checks the peer's first message: the schema above.
pub(crate) fn check_schema(message: &FlightData) -> Result<(), String> {
    let theirs = Schema::try_from(message).map_err(|e| format!("not a schema message: {e}"))?;
    if theirs.fields() != schema().fields() {
        return Err(format!(
            "unexpected schema {theirs:?}; expected {{position: UInt64, item: Binary}}"
        ));
    }
    Ok(())
}

/// One ticket's rows as a message.
pub(crate) fn encode_batch<I: AsRef<[u8]>>(
    ticket: u64,
    positions: Vec<u64>,
    items: &[I],
) -> Result<FlightData, String> {
    // Sized once: a builder left to grow copies its values on every doubling.
    let total: usize = items.iter().map(|i| i.as_ref().len()).sum();
    if i32::try_from(total).is_err() {
        return Err(format!(
            "a ticket's items of {total} bytes exceed a Binary column"
        ));
    }
    let mut column = BinaryBuilder::with_capacity(items.len(), total);
    for item in items {
        column.append_value(item);
    }
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(UInt64Array::from(positions)),
            Arc::new(column.finish()),
        ],
    )
    .map_err(|e| e.to_string())?;
    let messages = batches_to_flight_data(&schema(), [&batch]).map_err(|e| e.to_string())?;
    let message = messages
        .into_iter()
        .last()
        .ok_or_else(|| "no batch message".to_owned())?;
    Ok(message.with_app_metadata(ticket.to_le_bytes().to_vec()))
}

/// A decoded message: a ticket's number, its rows' positions and their items.
#[derive(Debug, PartialEq)]
pub(crate) struct Rows {
    pub(crate) ticket: u64,
    pub(crate) positions: Vec<u64>,
    /// Slices of the message's body, not copies.
    pub(crate) items: Vec<Bytes>,
}

/// A ticket's rows from a message (hostile: every field checked).
pub(crate) fn decode_batch(message: &FlightData) -> Result<Rows, String> {
    let ticket: [u8; 8] =
        message.app_metadata.as_ref().try_into().map_err(|_| {
            "a batch without its ticket number (8 bytes of app_metadata)".to_owned()
        })?;
    let batch = flight_data_to_arrow_batch(message, schema(), &HashMap::new())
        .map_err(|e| format!("not a record batch of the schema: {e}"))?;
    let positions = batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| "column `position` is not UInt64".to_owned())?;
    let items = batch
        .column(1)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| "column `item` is not Binary".to_owned())?;
    if positions.null_count() > 0 || items.null_count() > 0 {
        return Err("null positions or items".to_owned());
    }
    // The column's values share the message's buffer; each item is a slice of them.
    let values = Bytes::from(items.values().clone());
    let mut rows = Vec::with_capacity(items.len());
    for ends in items.value_offsets().windows(2) {
        let (start, end) = (usize::try_from(ends[0]), usize::try_from(ends[1]));
        match (start, end) {
            (Ok(start), Ok(end)) if start <= end && end <= values.len() => {
                rows.push(values.slice(start..end));
            }
            _ => return Err("bad offsets in column `item`".to_owned()),
        }
    }
    Ok(Rows {
        ticket: u64::from_le_bytes(ticket),
        positions: positions.values().to_vec(),
        items: rows,
    })
}

/// Compares tokens in time that does not depend on where they differ.
pub(crate) fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_a_bad_one_is_refused() {
        let items = vec![b"a".to_vec(), vec![0u8; 70_000], Vec::new()];
        let message = encode_batch(7, vec![1, 2, 3], &items).unwrap();
        let rows = decode_batch(&message).unwrap();
        let expected = Rows {
            ticket: 7,
            positions: vec![1, 2, 3],
            items: items.into_iter().map(Bytes::from).collect(),
        };
        assert_eq!(rows, expected);
        check_schema(&schema_message().unwrap()).unwrap();
        assert!(check_schema(&message).is_err());

        let mut no_ticket = message.clone();
        no_ticket.app_metadata = Default::default();
        assert!(decode_batch(&no_ticket)
            .unwrap_err()
            .contains("ticket number"));
        let mut garbage = message;
        garbage.data_header = vec![0xff; 40].into();
        assert!(decode_batch(&garbage).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secreT", b"secret"));
        assert!(!same_token(b"secret!", b"secret"));
        assert!(!same_token(b"", b"secret"));
    }
}
