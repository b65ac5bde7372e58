//! How a store is configured beyond its URL: endpoint, region, credentials, plain HTTP, and
//! the two retry policies. Anything left unset comes from the environment (for S3:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), then from the client's defaults.

use std::time::Duration;

use super::retry::Retry;

/// Options for [`Store::open_with`](super::Store::open_with). Explicit options win over
/// environment variables.
#[derive(Clone, Default)]
pub struct StoreOptions {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) credentials: Option<(String, String, Option<String>)>,
    pub(crate) allow_http: Option<bool>,
    pub(crate) anonymous: bool,
    pub(crate) retry: Retry,
    pub(crate) http_retry: Option<Retry>,
    pub(crate) http_retry_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
}

impl std::fmt::Debug for StoreOptions {
    /// Shows everything but the secret key and the session token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.credentials.as_ref().map(|(id, _, _)| id),
            )
            .field("allow_http", &self.allow_http)
            .field("anonymous", &self.anonymous)
            .field("retry", &self.retry)
            .field("http_retry", &self.http_retry)
            .field("http_retry_timeout", &self.http_retry_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl StoreOptions {
    /// The defaults: everything from the URL and the environment, [`Retry::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The service's address (`http://127.0.0.1:9000` for a local S3-compatible server);
    /// overrides `AWS_ENDPOINT_URL`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The region; overrides `AWS_REGION` (S3's default is `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An access key and its secret; overrides `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn credentials(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = Some((key_id.into(), secret.into(), None));
        self
    }

    /// Temporary credentials: a key, its secret and a session token.
    pub fn session_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        self.credentials = Some((key_id.into(), secret.into(), Some(token.into())));
        self
    }

    /// Unsigned requests, for public buckets.
    pub fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// Allows `http://` endpoints (off by default: only HTTPS); overrides `AWS_ALLOW_HTTP`.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// Our retry policy around every read (whole gets, range gets, and a stream that breaks
    /// off, re-opened where it stopped). Default: [`Retry::default`].
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The HTTP client's own retries of each request (object_store's `RetryConfig`), and the
    /// longest it keeps trying one request. Default: 3 retries within 30 s. Cloud stores only.
    pub fn http_retry(mut self, retry: Retry, timeout: Duration) -> Self {
        self.http_retry = Some(retry);
        self.http_retry_timeout = Some(timeout);
        self
    }

    /// The longest one HTTP request may take, body included (default 30 s). Cloud stores only.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }
}
