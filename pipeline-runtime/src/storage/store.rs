//! A [`Store`]: one object store (a local directory, memory, an S3 bucket, ...) opened from a
//! URL, with the reads a data loader needs (list, get, range get, a streamed read that picks
//! up where it broke off), each retried by the store's [`Retry`] policy and counted.
//!
//! Every method is async and runs on whatever tokio runtime polls it: inside a pipeline,
//! the pipeline's own; outside, [`block_on`](super::block_on). No thread waits on the
//! network.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use super::counters::StoreCounters;
use super::error::{StorageError, StorageErrorKind};
use super::listing::Filter;
use super::options::StoreOptions;
use super::retry::{is_transient, Retry};

/// An object store and a prefix inside it, opened from a URL. Cheap to clone (clones share
/// the client, its connections and the counters).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// `scheme://authority/`, to turn a path back into a URL.
    base: String,
    prefix: Path,
    retry: Retry,
    counters: StoreCounters,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url())
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Object {
    /// Its path in the store (from the store's root, not from the prefix).
    pub path: Path,
    /// Its size in bytes, as listed.
    pub size: u64,
}

impl Store {
    /// Opens `url` with the options from the environment: `file:///abs/dir` or a plain
    /// path, `memory://` (an empty store), and with their features `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`. Opening does not talk to the service:
    /// the first listing or read does.
    pub fn open(url: &str) -> Result<Store, StorageError> {
        Self::open_with(url, StoreOptions::default())
    }

    /// Opens `url` with explicit options, which win over the environment.
    pub fn open_with(url: &str, options: StoreOptions) -> Result<Store, StorageError> {
        let parsed = parse_url(url)?;
        let config = |message: String| StorageError::new(StorageErrorKind::Config, message);
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| config(format!("{url}: not a local path")))?;
                let prefix = Path::from_absolute_path(&dir)
                    .map_err(|e| StorageError::from_store(url, e.into()))?;
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    prefix,
                )
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                url_path(&parsed, url)?,
            ),
            "s3" | "s3a" => (cloud::s3(&parsed, &options)?, url_path(&parsed, url)?),
            "gs" => (cloud::gcs(&parsed, &options)?, url_path(&parsed, url)?),
            "az" | "abfs" | "abfss" | "azure" => {
                (cloud::azure(&parsed, &options)?, url_path(&parsed, url)?)
            }
            other => {
                return Err(config(format!(
                "{url}: unknown scheme `{other}` (use file://, memory://, s3://, gs:// or az://)"
            )))
            }
        };
        let base = format!("{}://{}/", parsed.scheme(), parsed.host_str().unwrap_or(""));
        Ok(Self::from_parts(store, base, prefix, options.retry))
    }

    /// A store over an object store built by hand (any `object_store` implementation, e.g.
    /// with a custom credential provider). `base` is the URL of its root, used in messages.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        base: impl Into<String>,
        prefix: Path,
        retry: Retry,
    ) -> Store {
        let mut base = base.into();
        if !base.ends_with('/') {
            base.push('/');
        }
        Self::from_parts(store, base, prefix, retry)
    }

    fn from_parts(store: Arc<dyn ObjectStore>, base: String, prefix: Path, retry: Retry) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                base,
                prefix,
                retry,
                counters: StoreCounters::default(),
            }),
        }
    }

    /// The URL of the store's prefix.
    pub fn url(&self) -> String {
        self.url_of(&self.inner.prefix)
    }

    /// The URL of `path`, for messages.
    pub fn url_of(&self, path: &Path) -> String {
        format!("{}{}", self.inner.base, path)
    }

    /// The prefix the store was opened at.
    pub fn prefix(&self) -> &Path {
        &self.inner.prefix
    }

    /// The path of `name` below the prefix (`name` may contain `/`).
    pub fn path(&self, name: &str) -> Path {
        name.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.inner.prefix.clone(), |p, part| p.join(part))
    }

    /// The underlying `object_store` client.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The retry policy of reads.
    pub fn retry_policy(&self) -> Retry {
        self.inner.retry
    }

    /// The store's counters: requests, bytes, retries, failures.
    pub fn counters(&self) -> &StoreCounters {
        &self.inner.counters
    }

    /// The objects below the prefix that `filter` keeps, sorted by path. A missing bucket,
    /// refused credentials or an unreachable service fail here, naming the URL: list first,
    /// and a wrong configuration shows before the pipeline starts.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Object>, StorageError> {
        self.inner.counters.list();
        let prefix = &self.inner.prefix;
        // A local store lists a missing directory as empty: say it is missing instead.
        if self.inner.base == "file:///" && !std::path::Path::new(&format!("/{prefix}")).exists() {
            return Err(StorageError::new(
                StorageErrorKind::NotFound,
                format!("list {}: no such directory", self.url()),
            ));
        }
        let listed: Vec<_> = self
            .inner
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| StorageError::from_store(format!("list {}", self.url()), e))?;
        let skip = prefix.as_ref().len();
        let mut objects: Vec<Object> = listed
            .into_iter()
            .filter(|meta| {
                let relative = meta.location.as_ref()[skip..].trim_start_matches('/');
                filter.keeps(relative)
            })
            .map(|meta| Object {
                path: meta.location,
                size: meta.size,
            })
            .collect();
        objects.sort();
        Ok(objects)
    }

    /// The whole object at `path`.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        self.with_retry(format!("get {}", self.url_of(path)), || async {
            self.inner.store.get(path).await?.bytes().await
        })
        .await
    }

    /// Bytes `range` of the object at `path`.
    pub async fn get_range(&self, path: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        let what = format!(
            "get bytes {}..{} of {}",
            range.start,
            range.end,
            self.url_of(path)
        );
        self.with_retry(what, || self.inner.store.get_range(path, range.clone()))
            .await
    }

    /// Writes `data` to `path` (for preparing datasets and tests; not retried).
    pub async fn put(&self, path: &Path, data: Bytes) -> Result<(), StorageError> {
        self.inner
            .store
            .put(path, PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_store(format!("put {}", self.url_of(path)), e))
    }

    /// The object at `path` as a stream of chunks, as they arrive (never the whole object
    /// first). A transient error, when opening or midway, re-opens the read at the byte where
    /// it stopped, up to the retry policy; the re-opened read insists on the same version
    /// of the object (its ETag), so a changed object fails instead of mixing two versions.
    pub fn read_stream(
        &self,
        path: Path,
    ) -> impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
        self.read_stream_range(path, 0..u64::MAX)
    }

    /// Bytes `range` of the object at `path` as a stream of chunks, read as
    /// [`read_stream`](Self::read_stream) reads (re-opened where it stopped on a transient
    /// error). A range that runs past the object's end stops at the end.
    pub fn read_stream_range(
        &self,
        path: Path,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
        let state = ReadState {
            store: self.clone(),
            path,
            offset: range.start,
            end: range.end,
            e_tag: None,
            body: None,
            failed_tries: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next_chunk().await?;
            Some((item, state))
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent.
    async fn with_retry<F, Fut>(&self, what: String, attempt: F) -> Result<Bytes, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = object_store::Result<Bytes>>,
    {
        let counters = &self.inner.counters;
        let retry = self.inner.retry;
        let mut tries = 0u32;
        loop {
            counters.request();
            match attempt().await {
                Ok(out) => {
                    counters.bytes(out.len());
                    return Ok(out);
                }
                Err(e) if is_transient(&e) && tries < retry.max_retries => {
                    tries += 1;
                    counters.retry();
                    tracing::debug!(target: "pipeline::storage", "{what}: {e}; retry {tries}");
                    tokio::time::sleep(retry.backoff(tries)).await;
                }
                Err(e) => {
                    counters.failure();
                    let what = if tries > 0 {
                        format!("{what} (after {tries} retries)")
                    } else {
                        what
                    };
                    return Err(StorageError::from_store(what, e));
                }
            }
        }
    }
}

/// A streamed read in progress.
struct ReadState {
    store: Store,
    path: Path,
    /// Where the next byte comes from: where a re-opened read starts.
    offset: u64,
    /// Where the read stops (`u64::MAX`: at the object's end).
    end: u64,
    e_tag: Option<String>,
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    /// Consecutive failed tries; reset by every chunk that arrives.
    failed_tries: u32,
    done: bool,
}

impl ReadState {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, StorageError>> {
        if self.done || self.offset >= self.end {
            return None;
        }
        let counters = self.store.inner.counters.clone();
        let retry = self.store.inner.retry;
        loop {
            let error = match self.body.as_mut() {
                None => match self.open().await {
                    Ok(body) => {
                        self.body = Some(body);
                        continue;
                    }
                    Err(e) => e,
                },
                Some(body) => match body.next().await {
                    Some(Ok(chunk)) => {
                        self.offset += chunk.len() as u64;
                        self.failed_tries = 0;
                        counters.bytes(chunk.len());
                        return Some(Ok(chunk));
                    }
                    Some(Err(e)) => {
                        self.body = None;
                        e
                    }
                    None => {
                        self.done = true;
                        return None;
                    }
                },
            };
            if is_transient(&error) && self.failed_tries < retry.max_retries {
                self.failed_tries += 1;
                counters.retry();
                tracing::debug!(
                    target: "pipeline::storage",
                    "read {} at byte {}: {error}; retry {}",
                    self.store.url_of(&self.path),
                    self.offset,
                    self.failed_tries
                );
                tokio::time::sleep(retry.backoff(self.failed_tries)).await;
                continue;
            }
            counters.failure();
            self.done = true;
            let mut what = format!(
                "read {} at byte {}",
                self.store.url_of(&self.path),
                self.offset
            );
            if self.failed_tries > 0 {
                what.push_str(&format!(" (after {} retries)", self.failed_tries));
            }
            return Some(Err(StorageError::from_store(what, error)));
        }
    }

    async fn open(
        &mut self,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        self.store.inner.counters.request();
        let options = GetOptions {
            range: match (self.offset, self.end) {
                (0, u64::MAX) => None,
                (start, u64::MAX) => Some(GetRange::Offset(start)),
                (start, end) => Some(GetRange::Bounded(start..end)),
            },
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let result = self.store.inner.store.get_opts(&self.path, options).await?;
        if self.e_tag.is_none() {
            self.e_tag = result.meta.e_tag.clone();
        }
        Ok(result.into_stream())
    }
}

fn parse_url(url: &str) -> Result<url::Url, StorageError> {
    let config = |message: String| StorageError::new(StorageErrorKind::Config, message);
    if !url.contains("://") {
        // A plain path: a local directory, relative to the current one if not absolute.
        let abs = std::path::absolute(url).map_err(|e| config(format!("{url}: {e}")))?;
        return url::Url::from_directory_path(&abs)
            .map_err(|()| config(format!("{url}: not a usable local path")));
    }
    url::Url::parse(url).map_err(|e| config(format!("{url}: not a URL: {e}")))
}

/// The object path of a cloud or memory URL (`s3://bucket/a/b` → `a/b`).
fn url_path(parsed: &url::Url, url: &str) -> Result<Path, StorageError> {
    let decoded = percent_decode(parsed.path());
    Path::parse(decoded.trim_matches('/')).map_err(|e| StorageError::from_store(url, e.into()))
}

/// `%xx` escapes decoded (URL paths of object keys with spaces and the like).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cloud clients, each behind its feature; without it, a clear error naming the feature.
mod cloud {
    use std::sync::Arc;

    use object_store::ObjectStore;

    use super::super::error::{StorageError, StorageErrorKind};
    use super::super::options::StoreOptions;

    #[allow(dead_code)]
    fn missing(url: &url::Url, feature: &str) -> StorageError {
        StorageError::new(
            StorageErrorKind::Config,
            format!(
                "{url}: this build cannot read `{}://` URLs: enable the `{feature}` feature \
                 of pipeline-runtime",
                url.scheme()
            ),
        )
    }

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn retry_config(options: &StoreOptions) -> object_store::RetryConfig {
        let retry = options.http_retry.unwrap_or(super::Retry {
            max_retries: 3,
            ..super::Retry::default()
        });
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: retry.initial_backoff,
                max_backoff: retry.max_backoff,
                base: 2.0,
            },
            max_retries: retry.max_retries as usize,
            retry_timeout: options
                .http_retry_timeout
                .unwrap_or(std::time::Duration::from_secs(30)),
        }
    }

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn client_options(options: &StoreOptions) -> object_store::ClientOptions {
        let mut client = object_store::ClientOptions::new();
        if let Some(timeout) = options.request_timeout {
            client = client.with_timeout(timeout);
        }
        if let Some(allow) = options.allow_http {
            client = client.with_allow_http(allow);
        }
        client
    }

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn built<T: ObjectStore>(
        url: &url::Url,
        built: object_store::Result<T>,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        built
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| StorageError::from_store(format!("open {url}"), e))
    }

    #[cfg(feature = "s3")]
    pub(super) fn s3(
        url: &url::Url,
        options: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        use object_store::aws::AmazonS3Builder;
        let mut b = AmazonS3Builder::from_env()
            .with_url(url.as_str())
            .with_retry(retry_config(options));
        // `from_env` reads AWS_ALLOW_HTTP into the client options, which
        // `with_client_options` would replace: apply it on top.
        let mut client = client_options(options);
        if options.allow_http.is_none() {
            if let Ok(v) = std::env::var("AWS_ALLOW_HTTP") {
                client = client.with_allow_http(matches!(v.as_str(), "true" | "1" | "TRUE"));
            }
        }
        b = b.with_client_options(client);
        if let Some(e) = &options.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &options.region {
            b = b.with_region(r);
        }
        if let Some((id, secret, token)) = &options.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        if options.anonymous {
            b = b.with_skip_signature(true);
        }
        built(url, b.build())
    }

    #[cfg(not(feature = "s3"))]
    pub(super) fn s3(
        url: &url::Url,
        _: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        Err(missing(url, "s3"))
    }

    #[cfg(feature = "gcs")]
    pub(super) fn gcs(
        url: &url::Url,
        options: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        use object_store::gcp::GoogleCloudStorageBuilder;
        let b = GoogleCloudStorageBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry_config(options))
            .with_client_options(client_options(options));
        built(url, b.build())
    }

    #[cfg(not(feature = "gcs"))]
    pub(super) fn gcs(
        url: &url::Url,
        _: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        Err(missing(url, "gcs"))
    }

    #[cfg(feature = "azure")]
    pub(super) fn azure(
        url: &url::Url,
        options: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        use object_store::azure::MicrosoftAzureBuilder;
        let mut b = MicrosoftAzureBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry_config(options))
            .with_client_options(client_options(options));
        if let Some(e) = &options.endpoint {
            b = b.with_endpoint(e.clone());
        }
        built(url, b.build())
    }

    #[cfg(not(feature = "azure"))]
    pub(super) fn azure(
        url: &url::Url,
        _: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        Err(missing(url, "azure"))
    }
}

/// Credentials given as options never show: not in the `Debug` of the store or its options,
/// not in the errors of a failing request (`Display`, `Debug`, their sources), not in the
/// counters.
#[cfg(feature = "s3")]
#[cfg(test)]
mod secret_tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::*;
    use crate::storage::{block_on, Filter, Retry};

    const SECRET: &str = "SECRET-abc123";
    const TOKEN: &str = "TOKEN-SECRET-xyz789";

    fn assert_hidden(what: &str, text: &str) {
        assert!(
            !text.contains(SECRET) && !text.contains(TOKEN),
            "{what} shows a secret: {text}"
        );
    }

    /// All that an error says, through its chain of sources.
    fn everything(e: &StorageError) -> String {
        let mut out = format!("{e}\n{e:?}\n");
        let mut source = e.source();
        while let Some(s) = source {
            out += &format!("{s}\n{s:?}\n");
            source = s.source();
        }
        out
    }

    #[test]
    fn credentials_never_show_in_debug_errors_or_counters() {
        // A loopback port that nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let options = StoreOptions::new()
            .endpoint(format!("http://127.0.0.1:{port}"))
            .region("us-east-1")
            .allow_http(true)
            .session_credentials("AKID-visible", SECRET, TOKEN)
            .retry(Retry::NONE)
            .http_retry(Retry::NONE, Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2));
        let options_debug = format!("{options:?}");
        assert_hidden("StoreOptions", &options_debug);
        assert!(options_debug.contains("AKID-visible"), "{options_debug}");
        let store = Store::open_with("s3://bucket/prefix", options).unwrap();
        assert_hidden("Store", &format!("{store:?}"));

        let listed = block_on(store.list(&Filter::suffix(".tar"))).unwrap_err();
        assert_hidden("a failed listing", &everything(&listed));
        let got = block_on(store.get(&store.path("a.tar"))).unwrap_err();
        assert_hidden("a failed get", &everything(&got));
        let ranged = block_on(store.get_range(&store.path("a.tar"), 0..10)).unwrap_err();
        assert_hidden("a failed ranged get", &everything(&ranged));
        let put = block_on(store.put(&store.path("b.tar"), Bytes::from_static(b"x"))).unwrap_err();
        assert_hidden("a failed put", &everything(&put));

        assert_hidden("the counters", &format!("{:?}", store.counters()));
        assert_hidden("the counts", &format!("{:?}", store.counters().snapshot()));
        // The errors do name what failed.
        assert!(
            listed.to_string().contains("s3://bucket/prefix"),
            "{listed}"
        );
    }
}
