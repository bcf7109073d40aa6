//! The blocking face of one S3 location (`s3://bucket/prefix`): ranged
//! GETs with `If-Match`, HEAD, PUT and multipart upload, run on a private
//! tokio runtime, with object_store's errors turned into sentences.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};

use super::{RemoteOptions, S3_SCHEME};
use crate::{Error, Result};

/// Size of the parts of a multipart upload (S3's minimum is 5 MiB).
const PART_BYTES: usize = 16 << 20;

/// Environment variables that give object_store credentials without
/// instance metadata.
const CREDENTIAL_VARS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// One `s3://bucket/prefix` location.
pub(crate) struct Store {
    runtime: tokio::runtime::Runtime,
    s3: Arc<AmazonS3>,
    bucket: String,
    /// The prefix without slashes at either end; may be empty.
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url())
    }
}

/// `s3://bucket/prefix` as (bucket, prefix without end slashes).
fn parse_url(url: &Path) -> Result<(String, String)> {
    let text = url.to_str().unwrap_or_default();
    let bad = |why: &str| Error::invalid("object-store URL", format!("{text:?}: {why}"));
    let rest = text
        .strip_prefix(S3_SCHEME)
        .ok_or_else(|| bad("does not start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(bad("the prefix has a . or .. segment"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl Store {
    /// Connects to `url` (no request is made yet). Credentials and the
    /// endpoint come from the AWS environment (see the module docs); with
    /// none of the credential variables set, this is an error rather than
    /// a minutes-long probe of the instance metadata service.
    pub(crate) fn connect(url: &Path, options: &RemoteOptions) -> Result<Store> {
        let (bucket, prefix) = parse_url(url)?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let skip_signature = env("AWS_SKIP_SIGNATURE").is_some_and(|v| v == "true" || v == "1");
        if !skip_signature && CREDENTIAL_VARS.iter().all(|k| env(k).is_none()) {
            return Err(Error::invalid(
                "S3 credentials",
                format!(
                    "none found for {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                     (and AWS_ENDPOINT_URL for a server other than AWS), or \
                     AWS_SKIP_SIGNATURE=true for a public bucket",
                    url.display()
                ),
            ));
        }
        if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_none() {
            return Err(Error::invalid(
                "S3 credentials",
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            ));
        }
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| env("AWS_ENDPOINT"));
        let client = ClientOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.request_timeout.min(Duration::from_secs(10)))
            // An http:// endpoint given explicitly is meant (a local server).
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(4),
                base: 2.0,
            },
            // The deadline, not the count, ends the retries.
            max_retries: usize::MAX,
            retry_timeout: options.retry_timeout,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = endpoint {
            // Path-style requests: what local servers (moto, MinIO) expect.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let s3 = builder
            .build()
            .map_err(|e| Error::invalid("S3 configuration", format!("{}: {e}", url.display())))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("metaug-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Pipeline(format!("cannot start the S3 client's runtime: {e}")))?;
        Ok(Store {
            runtime,
            s3: Arc::new(s3),
            bucket,
            prefix,
        })
    }

    /// `s3://bucket/prefix`.
    pub(crate) fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("{S3_SCHEME}{}", self.bucket)
        } else {
            format!("{S3_SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }

    /// `s3://bucket/prefix/name`, for messages.
    pub(crate) fn url_of(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.url()))
    }

    fn key(&self, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs `fut` on the private runtime and waits for it. Safe to call
    /// from any thread, also from inside another tokio runtime (where
    /// `block_on` would panic): the future runs on our runtime's workers
    /// and this thread waits on a channel.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        // The task only ends by sending (the runtime lives as long as self).
        rx.recv().expect("the S3 runtime dropped a request")
    }

    /// Size and ETag of object `name`.
    pub(crate) fn head(&self, name: &str) -> std::result::Result<(u64, Option<String>), String> {
        let (s3, key) = (self.s3.clone(), self.key(name));
        let meta = self
            .run(async move { s3.head(&key).await })
            .map_err(|e| self.describe(e, name))?;
        Ok((meta.size, meta.e_tag))
    }

    /// Bytes `range` of object `name`, exactly (a shorter answer is a
    /// "short read" error); with `If-Match: etag` when given.
    pub(crate) fn get_range(
        &self,
        name: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> std::result::Result<Vec<u8>, String> {
        let want = range.end - range.start;
        if want == 0 {
            return Ok(Vec::new());
        }
        let (s3, key) = (self.s3.clone(), self.key(name));
        let options = GetOptions {
            if_match: etag.map(str::to_string),
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let bytes = self
            .run(async move { s3.get_opts(&key, options).await?.bytes().await })
            .map_err(|e| self.describe(e, name))?;
        if bytes.len() as u64 != want {
            return Err(format!(
                "short read: asked for bytes {}..{} and got {} bytes",
                range.start,
                range.end,
                bytes.len()
            ));
        }
        Ok(bytes.to_vec())
    }

    /// The whole object `name` in one GET, refused when it is over `max`
    /// bytes (at most `max + 1` bytes are asked for).
    pub(crate) fn get_small(&self, name: &str, max: u64) -> std::result::Result<Vec<u8>, String> {
        let (s3, key) = (self.s3.clone(), self.key(name));
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..max + 1)),
            ..Default::default()
        };
        let result = self.run(async move {
            match s3.get_opts(&key, options).await {
                Ok(r) => r.bytes().await,
                // An empty object has no byte 0 to start a range at.
                Err(object_store::Error::Generic { source, .. })
                    if source.to_string().contains("InvalidRange") =>
                {
                    Ok(Default::default())
                }
                Err(e) => Err(e),
            }
        });
        let bytes = result.map_err(|e| self.describe(e, name))?;
        if bytes.len() as u64 > max {
            return Err(format!("over the limit of {max} bytes"));
        }
        Ok(bytes.to_vec())
    }

    /// Whether object `name` exists.
    pub(crate) fn exists(&self, name: &str) -> std::result::Result<bool, String> {
        let (s3, key) = (self.s3.clone(), self.key(name));
        match self.run(async move { s3.head(&key).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { source, .. })
                if !source.to_string().contains("NoSuchBucket") =>
            {
                Ok(false)
            }
            Err(e) => Err(self.describe(e, name)),
        }
    }

    /// Writes `bytes` as object `name` in one PUT.
    pub(crate) fn put(&self, name: &str, bytes: Vec<u8>) -> std::result::Result<(), String> {
        let (s3, key) = (self.s3.clone(), self.key(name));
        self.run(async move { s3.put(&key, bytes.into()).await })
            .map(|_| ())
            .map_err(|e| self.describe(e, name))
    }

    /// Uploads the local file `from` as object `name` with a multipart
    /// upload, reading it part by part (memory: about two parts); an
    /// upload that fails is aborted. `sent` is called with each part's size.
    pub(crate) fn put_file(
        &self,
        name: &str,
        from: &Path,
        sent: &(dyn Fn(u64) + Sync),
    ) -> std::result::Result<(), String> {
        let mut file = std::fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
        let (s3, key) = (self.s3.clone(), self.key(name));
        let upload = self
            .run(async move { s3.put_multipart(&key).await })
            .map_err(|e| self.describe(e, name))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut part = vec![0u8; PART_BYTES];
        loop {
            let n = match read_full(&mut file, &mut part) {
                Ok(n) => n,
                Err(e) => {
                    self.run(async move { writer.abort().await }).ok();
                    return Err(format!("{}: {e}", from.display()));
                }
            };
            if n == 0 {
                break;
            }
            {
                // write() spawns the upload of each full part on the current
                // runtime: enter ours.
                let _runtime = self.runtime.enter();
                writer.write(&part[..n]);
            }
            // Waits while more than 2 parts are in flight: bounded memory.
            let mut w = writer;
            writer = self
                .run(async move { w.wait_for_capacity(2).await.map(|()| w) })
                .map_err(|e| self.describe(e, name))?;
            sent(n as u64);
        }
        self.run(async move { writer.finish().await })
            .map(|_| ())
            .map_err(|e| self.describe(e, name))
    }

    /// Deletes object `name` (no error when it is missing).
    pub(crate) fn delete(&self, name: &str) -> std::result::Result<(), String> {
        let (s3, key) = (self.s3.clone(), self.key(name));
        match self.run(async move { s3.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.describe(e, name)),
        }
    }

    /// A sentence for a failed request on object `name`.
    fn describe(&self, e: object_store::Error, name: &str) -> String {
        use object_store::Error as E;
        match e {
            E::NotFound { source, .. } if source.to_string().contains("NoSuchBucket") => {
                format!("the bucket {:?} does not exist", self.bucket)
            }
            E::NotFound { .. } => format!("missing object {}", self.url_of(name).display()),
            E::Precondition { .. } => {
                "the object was replaced since the dataset was opened (its ETag changed)".into()
            }
            E::PermissionDenied { source, .. } => format!("access denied: {source}"),
            E::Unauthenticated { source, .. } => {
                format!("the credentials were refused: {source}")
            }
            other => {
                let text = other.to_string();
                if text.contains("NoSuchBucket") {
                    format!("the bucket {:?} does not exist", self.bucket)
                } else if text.contains("InvalidAccessKeyId")
                    || text.contains("SignatureDoesNotMatch")
                {
                    format!("the credentials were refused: {text}")
                } else {
                    text
                }
            }
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut at = 0;
    while at < buf.len() {
        match file.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let p = |s: &str| parse_url(Path::new(s));
        assert_eq!(p("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(p("s3://b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(p("s3://b/x/y/").unwrap(), ("b".into(), "x/y".into()));
        assert!(p("s3:///x").is_err());
        assert!(p("s3://b/x/../y").is_err());
        assert!(p("/local").is_err());
    }
}
