//! Datasets in an S3-compatible object store (feature `s3`), against a real
//! local server: `.ci/run` starts moto's `moto_server`, creates a bucket and
//! sets `METAUG_TEST_S3_ENDPOINT`, `METAUG_TEST_S3_BUCKET` and the AWS
//! credentials. Without an endpoint the tests skip with a message (and fail
//! when `METAUG_REQUIRE_S3` is set, as in CI).
//!
//! Run by hand:
//! ```text
//! .venv/bin/moto_server -H 127.0.0.1 -p 5055 &
//! .venv/bin/python -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:5055', \
//!   aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1') \
//!   .create_bucket(Bucket='metaug-test')"
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test METAUG_TEST_S3_ENDPOINT=http://127.0.0.1:5055 \
//!   cargo test --release --features s3 --test s3
//! ```

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use metaug::loader::Loader;
use metaug::pack::{pack_folder, FolderOptions};
use metaug::policy::Policy;
use metaug::remote::{OutputDir, RemoteOptions};
use metaug::shard::{Dataset, OpenOptions};

/// The test server, or `None` (skip).
struct Server {
    endpoint: String,
    bucket: String,
}

fn server() -> Option<Server> {
    let endpoint = std::env::var("METAUG_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        assert!(
            std::env::var_os("METAUG_REQUIRE_S3").is_none(),
            "METAUG_REQUIRE_S3 is set but METAUG_TEST_S3_ENDPOINT is not"
        );
        eprintln!(
            "skipping: no S3 test server (set METAUG_TEST_S3_ENDPOINT; .ci/run starts moto_server)"
        );
        return None;
    };
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
        "METAUG_TEST_S3_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY too"
    );
    let bucket = std::env::var("METAUG_TEST_S3_BUCKET").unwrap_or_else(|_| "metaug-test".into());
    Some(Server { endpoint, bucket })
}

impl Server {
    /// A URL no other test (or earlier run) uses.
    fn url(&self, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("s3://{}/{name}-{}-{nanos}", self.bucket, std::process::id())
    }

    fn options(&self, cache: &Path, limit: u64, block: u64) -> RemoteOptions {
        RemoteOptions {
            endpoint: Some(self.endpoint.clone()),
            cache_dir: Some(cache.to_path_buf()),
            cache_limit: Some(limit),
            block_bytes: block,
            retry_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(10),
        }
    }
}

fn open(url: &str, remote: RemoteOptions) -> metaug::Result<Dataset> {
    Dataset::open_with(
        url,
        OpenOptions {
            remote,
            ..Default::default()
        },
    )
}

/// The 300 JPEG photographs of `../shared/data`, packed in shards of
/// `shard` bytes by `pack` into the directory it is given.
fn pack_photos(dir: &Path, shard: u64, after_shard: Option<metaug::shard::ShardHook>) {
    let options = FolderOptions {
        flat: true,
        shard_size: shard,
        overwrite: true,
        after_shard,
        ..FolderOptions::default()
    };
    pack_folder(&common::shared_data().join("photos-jpeg"), dir, &options)
        .expect("pack the photos");
}

/// Packs the photos locally into `local` and into `url` (staged, uploaded);
/// `edit` may change the staged files before the upload.
fn upload_photos(url: &str, options: &RemoteOptions, shard: u64, edit: impl FnOnce(&Path)) {
    upload_photos_with(url, options, shard, false, edit)
}

/// [`upload_photos`], with `stream`: each shard uploaded as soon as it is
/// written (as `pack` does).
fn upload_photos_with(
    url: &str,
    options: &RemoteOptions,
    shard: u64,
    stream: bool,
    edit: impl FnOnce(&Path),
) {
    let mut target = OutputDir::new(Path::new(url), true, options).unwrap();
    let hook = if stream {
        target.shard_hook().unwrap()
    } else {
        None
    };
    pack_photos(target.local(), shard, hook);
    edit(target.local());
    target.finish(false).unwrap();
}

/// Digests of every batch of `epochs` epochs of `dataset`, in order; stops
/// at the first error and returns it too.
fn digests(dataset: Dataset, epochs: u64) -> (Vec<[u8; 32]>, Option<metaug::Error>) {
    let loader = Loader::builder(dataset)
        .batch_size(16)
        .size(64, 64)
        .channels(3)
        .policy(Policy::default_policy())
        .threads(2)
        .seed(5)
        .epochs(epochs)
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in loader {
        match batch {
            Ok(b) => out.push(common::batch_digest(&b)),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[test]
fn every_batch_from_s3_equals_the_local_dataset() {
    let Some(s3) = server() else { return };
    let local = tempfile::tempdir().unwrap();
    pack_photos(local.path(), 2 << 20, None);
    let expected = digests(Dataset::open(local.path()).unwrap(), 2);
    assert!(expected.1.is_none());
    let cache = tempfile::tempdir().unwrap();
    let url = s3.url("photos");
    upload_photos_with(&url, &s3.options(cache.path(), 0, 1), 2 << 20, true, |_| {});
    let staged = std::fs::read_dir(cache.path().join("uploads")).map_or(0, |d| d.count());
    assert_eq!(
        staged, 0,
        "the staging directory is removed after the upload"
    );

    // A cache far smaller than the dataset (31 MB): blocks are evicted and
    // fetched again all the time.
    let small = s3.options(cache.path(), 6 << 20, 512 << 10);
    let ds = open(&url, small.clone()).unwrap();
    assert_eq!(ds.len(), 300);
    assert_eq!(ds.summary(), Dataset::open(local.path()).unwrap().summary());
    let (got, err) = digests(ds, 2);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected.0, "small cache");
    let on_disk = dir_bytes(cache.path());
    assert!(
        on_disk <= 6 << 20,
        "the cache holds {on_disk} bytes, over its 6 MiB limit"
    );

    // No disk cache: one ranged GET per record.
    let (got, err) = digests(open(&url, s3.options(cache.path(), 0, 1)).unwrap(), 2);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected.0, "no cache");

    // A cache that holds it all: a second open starts warm, and reads every
    // record with the server gone (reached through a proxy, stopped once the
    // dataset is open).
    let big = s3.options(cache.path(), 1 << 30, 4 << 20);
    let (got, err) = digests(open(&url, big.clone()).unwrap(), 1);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected.0[..got.len()], "warming");
    let proxy = Proxy::start(&s3.endpoint);
    let warm = open(
        &url,
        RemoteOptions {
            endpoint: Some(proxy.endpoint()),
            retry_timeout: Duration::from_secs(1),
            ..big
        },
    )
    .unwrap();
    proxy.set_up(false);
    let (mut buf, mut local_buf) = (Vec::new(), Vec::new());
    let local_ds = Dataset::open(local.path()).unwrap();
    for i in 0..warm.len() {
        let a = warm.read_record(i, &mut buf).unwrap().bytes;
        assert_eq!(a, local_ds.read_record(i, &mut local_buf).unwrap().bytes);
    }
}

/// Total bytes of the block files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else if entry.path().extension().is_some_and(|e| e == "blk") {
            total += meta.len();
        }
    }
    total
}

#[test]
fn a_shard_replaced_in_the_store_is_an_error_naming_it() {
    let Some(s3) = server() else { return };
    let cache = tempfile::tempdir().unwrap();
    let options = s3.options(cache.path(), 0, 1);
    let url = s3.url("replaced");
    upload_photos(&url, &options, 2 << 20, |_| {});
    let ds = open(&url, options.clone()).unwrap();
    // Same names, other contents: packed with another shard size (one
    // shard of 31 MB: a multipart upload of two parts).
    upload_photos(&url, &options, 64 << 20, |_| {});
    let err = ds.read_record(0, &mut Vec::new()).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{url}/shard-00000.safetensors")) && err.contains("replaced"),
        "{err}"
    );
    // The new version reads whole.
    let ds = open(&url, options).unwrap();
    assert_eq!((ds.len(), ds.shards().len()), (300, 1));
    let report = ds.verify(|_| Ok(()));
    assert!(report.ok() && report.checked == 300);
}

#[test]
fn missing_bucket_dataset_and_shard_and_a_wrong_size_are_clear_errors() {
    let Some(s3) = server() else { return };
    let cache = tempfile::tempdir().unwrap();
    let options = s3.options(cache.path(), 1 << 30, 1 << 20);
    let err = |url: &str| open(url, options.clone()).unwrap_err().to_string();

    let e = err("s3://metaug-no-such-bucket-4711/x");
    assert!(
        e.contains("bucket \"metaug-no-such-bucket-4711\" does not exist"),
        "{e}"
    );

    let e = err(&s3.url("nothing-here"));
    assert!(e.contains("missing index.json"), "{e}");

    let url = s3.url("missing-shard");
    upload_photos(&url, &options, 4 << 20, |dir| {
        std::fs::remove_file(dir.join("shard-00001.safetensors")).unwrap();
    });
    let e = err(&url);
    assert!(
        e.contains(&format!("missing object {url}/shard-00001.safetensors")),
        "{e}"
    );

    let url = s3.url("short-shard");
    upload_photos(&url, &options, 4 << 20, |dir| {
        let path = dir.join("shard-00002.safetensors");
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 1000).unwrap();
    });
    let e = err(&url);
    assert!(
        e.contains(&format!("{url}/shard-00002.safetensors")) && e.contains("truncated"),
        "{e}"
    );
}

/// The metaug binary with the test server's endpoint in the environment.
fn metaug(s3: &Server, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metaug"));
    cmd.env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("METAUG_CACHE_DIR", cache);
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_packs_to_and_streams_from_s3_and_says_what_is_missing() {
    let Some(s3) = server() else { return };
    let cache = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let url = s3.url("cli");
    let photos = common::shared_data().join("photos-jpeg");
    for out in [local.path().to_str().unwrap(), &url] {
        stdout_of(
            metaug(&s3, cache.path())
                .args([
                    "pack",
                    "folder",
                    "--flat",
                    "--shard-size",
                    "2MiB",
                    "-o",
                    out,
                ])
                .arg(&photos)
                .arg("--force"),
        );
    }
    // Writing over a dataset needs --force.
    let out = metaug(&s3, cache.path())
        .args(["pack", "folder", "--flat", "-o", &url])
        .arg(&photos)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--force"),
        "{stderr}"
    );

    let stream = |dir: &str| {
        let text = stdout_of(metaug(&s3, cache.path()).args([
            "stream",
            dir,
            "--batch",
            "32",
            "--size",
            "48x48",
            "--threads",
            "2",
            "--digest",
        ]));
        text.lines()
            .find(|l| l.starts_with("digest "))
            .unwrap_or_else(|| panic!("no digest in {text}"))
            .to_string()
    };
    assert_eq!(stream(&url), stream(local.path().to_str().unwrap()));

    // No credentials: a clear error, not a wait on instance metadata.
    let out = metaug(&s3, cache.path())
        .args(["inspect", &url])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("S3 credentials"),
        "{stderr}"
    );
}

/// A TCP proxy in front of the S3 server that can be stopped (its port
/// refuses connections and open ones are cut) and started again on the
/// same port: a server outage as the client sees it, with the server's
/// state kept.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("METAUG_TEST_S3_ENDPOINT as http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let quit = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (u, q, a) = (up.clone(), quit.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            let mut listener = Some(listener);
            while !q.load(Ordering::SeqCst) {
                if !u.load(Ordering::SeqCst) {
                    listener = None;
                    for c in conns.lock().unwrap().drain(..) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(addr) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener.insert(l)
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 64 << 10];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy {
            addr,
            up,
            quit,
            accepted,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a thread and waits at most `limit` for it: a hang fails the
/// test instead of stalling it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no result within {limit:?}: the read hangs"))
}

#[test]
fn a_server_outage_mid_epoch_is_retried_or_a_clear_error_never_a_hang_or_a_wrong_batch() {
    let Some(s3) = server() else { return };
    let local = tempfile::tempdir().unwrap();
    pack_photos(local.path(), 2 << 20, None);
    let (expected, _) = digests(Dataset::open(local.path()).unwrap(), 1);
    let cache = tempfile::tempdir().unwrap();
    let url = s3.url("outage");
    upload_photos(&url, &s3.options(cache.path(), 0, 1), 2 << 20, |_| {});

    // Outage of 1.5 s in the middle of the epoch; no disk cache, so every
    // record needs the server.
    let proxy = Proxy::start(&s3.endpoint);
    let mut options = s3.options(cache.path(), 0, 1);
    options.endpoint = Some(proxy.endpoint());
    let ds = open(&url, options.clone()).unwrap();
    let up = proxy.up.clone();
    let outage = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1500));
        up.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    let (got, err) = within(Duration::from_secs(120), move || digests(ds, 1));
    outage.join().unwrap();
    assert!(
        started.elapsed() > Duration::from_millis(1900) || err.is_some(),
        "the epoch ended before the outage did: it did not test anything"
    );
    assert_eq!(
        got,
        expected[..got.len()],
        "a batch differs from the local one"
    );
    match &err {
        None => assert_eq!(got.len(), expected.len()),
        Some(e) => eprintln!("the outage ended the epoch with: {e}"),
    }
    eprintln!(
        "outage: {} of {} batches, then {}",
        got.len(),
        expected.len(),
        if err.is_none() {
            "retried to the end"
        } else {
            "a clear error"
        }
    );

    // A server that stays down: an error once the retry deadline passes.
    options.retry_timeout = Duration::from_secs(2);
    let ds = open(&url, options).unwrap();
    proxy.set_up(false);
    let started = Instant::now();
    let err = within(Duration::from_secs(60), move || {
        ds.read_record(3, &mut Vec::new()).map(|_| ())
    })
    .unwrap_err()
    .to_string();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.contains(&format!("{url}/shard-")) && err.contains("record 3"),
        "{err}"
    );
    assert!(proxy.accepted.load(Ordering::SeqCst) > 0);
}
