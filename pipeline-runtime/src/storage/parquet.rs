//! Parquet files as Arrow record batches (feature `parquet`). A file is read by ranges
//! through its store, retried and counted like every read (the footer first, then the column
//! chunks of the row groups it needs), never whole; the row groups are dealt out to the ranks
//! of a distributed job, and only the named columns are read.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_runtime::storage::parquet::{batches, ParquetOptions};
//! use pipeline_runtime::storage::{block_on, Filter, Store};
//! use pipeline_runtime::PipelineBuilder;
//!
//! let store = Store::open("s3://bucket/tables/train")?;
//! let files = block_on(store.list(&Filter::suffix(".parquet")))?;
//! let options = ParquetOptions::new().columns(["id", "caption"]).batch_size(1024);
//! let pipeline = PipelineBuilder::new()
//!     .source(files)
//!     .async_try_flat_pipe(batches(&store, options))
//!     .concurrency(2)
//!     .sink()
//!     .build()?;
//! for batch in pipeline {
//!     println!("{} rows", batch?.num_rows());
//! }
//! # Ok(()) }
//! ```
//!
//! A file whose footer or pages cannot be read fails that file's item with a message naming
//! its URL; the batches read before the failure are delivered, and the other files go on.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// The `arrow-array` crate. The reader yields its [`RecordBatch`]es, and reading a batch's columns means naming
/// its array types (`arrow_array::StringArray`, ...); this is the version they must match.
pub use arrow_array;
use arrow_array::RecordBatch;

use super::error::{StorageError, StorageErrorKind};
use super::listing::Filter;
use super::sharded::{IndexedShard, ShardFormat, ShardIndex};
use super::store::{Object, Store};

/// What to read of each file, and which part of it is this rank's.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    columns: Option<Vec<String>>,
    batch_size: usize,
    rank: usize,
    world: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            columns: None,
            batch_size: 1024,
            rank: 0,
            world: 1,
        }
    }
}

impl ParquetOptions {
    /// Every column, batches of 1024 rows, all row groups (rank 0 of 1).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these top-level columns, in the file's order. A name the file does not have
    /// fails that file, naming the column.
    pub fn columns<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Rows per batch (at least 1; the last batch of a row group may be shorter).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// This process reads row groups `rank`, `rank + world`, `rank + 2·world`, ... of each
    /// file. The rank and world size come from the launcher (the `distributed` module will
    /// read them from its environment); a single process keeps the default, 0 of 1.
    ///
    /// # Panics
    ///
    /// If `world` is 0 or `rank >= world`.
    pub fn rank(mut self, rank: usize, world: usize) -> Self {
        assert!(world > 0 && rank < world, "rank {rank} of world {world}");
        self.rank = rank;
        self.world = world;
        self
    }
}

/// A stage function for [`async_try_flat_pipe`](crate::StageBuilder::async_try_flat_pipe):
/// each listed Parquet file in, its record batches out (see the module docs).
pub fn batches(
    store: &Store,
    options: ParquetOptions,
) -> impl Fn(Object) -> BoxStream<'static, Result<RecordBatch, StorageError>> + Send + Sync + 'static
{
    let store = store.clone();
    move |file: Object| read_file(&store, file, options.clone()).boxed()
}

/// The record batches of one file (see [`batches`]).
pub fn read_file(
    store: &Store,
    file: Object,
    options: ParquetOptions,
) -> impl Stream<Item = Result<RecordBatch, StorageError>> + Send + 'static {
    let url: Arc<str> = store.url_of(&file.path).into();
    let reader = StoreReader {
        store: store.clone(),
        path: file.path,
        size: file.size,
    };
    let corrupt = {
        let url = url.clone();
        move |e: ParquetError| {
            StorageError::new(
                StorageErrorKind::Corrupt,
                format!("parquet file {url}: {e}"),
            )
            .with_source(e)
        }
    };
    futures::stream::once(open(reader, options, url))
        .map_ok(move |batches| batches.map_err(corrupt.clone()))
        .try_flatten()
}

async fn open(
    reader: StoreReader,
    options: ParquetOptions,
    url: Arc<str>,
) -> Result<ParquetRecordBatchStream<StoreReader>, StorageError> {
    let fail =
        |kind, message: String| StorageError::new(kind, format!("parquet file {url}: {message}"));
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| fail(kind_of(&e), format!("cannot read its footer: {e}")))?;
    let groups: Vec<usize> = (0..builder.metadata().num_row_groups())
        .filter(|g| g % options.world == options.rank)
        .collect();
    let builder = builder
        .with_row_groups(groups)
        .with_batch_size(options.batch_size);
    project(builder, options.columns.as_deref(), &url)?
        .build()
        .map_err(|e| fail(StorageErrorKind::Corrupt, e.to_string()))
}

type StreamBuilder = ParquetRecordBatchStreamBuilder<StoreReader>;

/// Reads only the columns `names` (all of them if `None`); a name the file lacks is an
/// error listing the ones it has.
fn project(
    builder: StreamBuilder,
    names: Option<&[String]>,
    url: &str,
) -> Result<StreamBuilder, StorageError> {
    let Some(names) = names else {
        return Ok(builder);
    };
    let schema = builder.parquet_schema();
    let fields = schema.root_schema().get_fields();
    let mut roots = Vec::with_capacity(names.len());
    for name in names {
        match fields.iter().position(|f| f.name() == name) {
            Some(i) => roots.push(i),
            None => {
                let have: Vec<&str> = fields.iter().map(|f| f.name()).collect();
                return Err(StorageError::new(
                    StorageErrorKind::Config,
                    format!(
                        "parquet file {url}: no column `{name}` (it has {})",
                        have.join(", ")
                    ),
                ));
            }
        }
    }
    let mask = ProjectionMask::roots(schema, roots);
    Ok(builder.with_projection(mask))
}

/// Parquet files as shards of rows, for a [`ShardSampler`](super::ShardSampler): each
/// sample is one row, as a one-row [`RecordBatch`] (a slice of a larger one, no copy).
/// Build the dataset's index with [`index_files`]; a run of rows is read from the row
/// groups that hold it, only the named columns.
/// [`ShardSampler::bytes_read`](super::ShardSampler::bytes_read) counts nothing for
/// Parquet: the store's counters have the bytes fetched.
#[derive(Debug, Clone)]
pub struct ParquetRows {
    columns: Option<Vec<String>>,
}

impl ParquetRows {
    /// Every column.
    pub fn new() -> Self {
        Self { columns: None }
    }

    /// Only these columns.
    pub fn columns<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

impl Default for ParquetRows {
    fn default() -> Self {
        Self::new()
    }
}

/// Rows are read from their row groups this many at a time, then handed out one by one.
const ROW_BATCH: usize = 1024;

impl ShardFormat for ParquetRows {
    type Sample = RecordBatch;

    fn read(
        &self,
        store: &Store,
        shard: &IndexedShard,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<RecordBatch, StorageError>> {
        let path = store.path(shard.name());
        let url: Arc<str> = store.url_of(&path).into();
        let reader = StoreReader {
            store: store.clone(),
            path,
            size: shard.bytes(),
        };
        let columns = self.columns.clone();
        let corrupt = {
            let url = url.clone();
            move |e: ParquetError| {
                StorageError::new(
                    StorageErrorKind::Corrupt,
                    format!("parquet file {url}: {e}"),
                )
                .with_source(e)
            }
        };
        futures::stream::once(open_rows(reader, columns, range, url))
            .map_ok(move |batches| batches.map_err(corrupt.clone()))
            .try_flatten()
            .flat_map(|batch| {
                let rows: Vec<Result<RecordBatch, StorageError>> = match batch {
                    Ok(b) => (0..b.num_rows()).map(|i| Ok(b.slice(i, 1))).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(rows)
            })
            .boxed()
    }

    fn bytes(_: &RecordBatch) -> u64 {
        0
    }
}

/// A stream of rows `range` of a file: the row groups that hold them, the rows outside
/// skipped.
async fn open_rows(
    reader: StoreReader,
    columns: Option<Vec<String>>,
    range: Range<u64>,
    url: Arc<str>,
) -> Result<ParquetRecordBatchStream<StoreReader>, StorageError> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| {
            StorageError::new(
                kind_of(&e),
                format!("parquet file {url}: cannot read its footer: {e}"),
            )
        })?;
    let mut groups = Vec::new();
    let mut first_row = None;
    let mut at = 0u64;
    for (g, group) in builder.metadata().row_groups().iter().enumerate() {
        let rows = u64::try_from(group.num_rows()).unwrap_or(0);
        if at < range.end && at + rows > range.start {
            groups.push(g);
            first_row.get_or_insert(at);
        }
        at += rows;
    }
    let first_row = first_row.unwrap_or(range.start);
    let skip = usize::try_from(range.start.saturating_sub(first_row)).unwrap_or(usize::MAX);
    let take = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    let selection = RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(take)]);
    let builder = builder
        .with_row_groups(groups)
        .with_row_selection(selection)
        .with_batch_size(ROW_BATCH);
    project(builder, columns.as_deref(), &url)?
        .build()
        .map_err(|e| {
            StorageError::new(
                StorageErrorKind::Corrupt,
                format!("parquet file {url}: {e}"),
            )
        })
}

/// The index of the Parquet files below `store`'s root that `filter` keeps: each file's
/// row count, from its footer (one ranged read per file, `concurrency` at a time).
pub async fn index_files(
    store: &Store,
    filter: &Filter,
    concurrency: usize,
) -> Result<ShardIndex, StorageError> {
    let objects = store.list(filter).await?;
    let root = store.prefix().as_ref().len();
    let shards: Vec<IndexedShard> = futures::stream::iter(objects)
        .map(|object| async move {
            let url = store.url_of(&object.path);
            let name = object.path.as_ref()[root..]
                .trim_start_matches('/')
                .to_owned();
            let mut reader = StoreReader {
                store: store.clone(),
                path: object.path,
                size: object.size,
            };
            let metadata = reader.get_metadata(None).await.map_err(|e| {
                StorageError::new(
                    kind_of(&e),
                    format!("parquet file {url}: cannot read its footer: {e}"),
                )
            })?;
            let rows = u64::try_from(metadata.file_metadata().num_rows()).map_err(|_| {
                StorageError::new(
                    StorageErrorKind::Corrupt,
                    format!("parquet file {url}: a negative row count"),
                )
            })?;
            IndexedShard::rows(name, object.size, rows)
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    ShardIndex::new(shards)
}

/// A Parquet file read by ranges through a [`Store`], so that its reads are retried and
/// counted like every other.
struct StoreReader {
    store: Store,
    path: Path,
    size: u64,
}

/// How much of the end of a file the first read fetches, hoping to get the whole footer in
/// one request.
const FOOTER_HINT: usize = 64 * 1024;

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            check_chunks(&metadata, size)?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Every column chunk lies within the file. The footer is the file's word: parquet's reader
/// panics on a negative offset or size ("column start and length should not be negative",
/// found by fuzzing), and a chunk past the end is a failed read later; either is a corrupt
/// footer here.
fn check_chunks(metadata: &ParquetMetaData, size: u64) -> parquet::errors::Result<()> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, col) in group.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            let len = col.compressed_size();
            let within = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(start, len)| start.checked_add(len))
                .is_some_and(|end| end <= size);
            if !within {
                return Err(ParquetError::General(format!(
                    "row group {g}, column {c}: the footer puts its {len} bytes at offset \
                     {start}, outside the file's {size} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// A footer that cannot be fetched is the store's failure; one that cannot be parsed is
/// the file's.
fn kind_of(e: &ParquetError) -> StorageErrorKind {
    match e {
        ParquetError::External(inner) => match inner.downcast_ref::<StorageError>() {
            Some(e) => e.kind(),
            None => StorageErrorKind::Corrupt,
        },
        _ => StorageErrorKind::Corrupt,
    }
}

#[cfg(test)]
#[path = "parquet_tests.rs"]
mod tests;
