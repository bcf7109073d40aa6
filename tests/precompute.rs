//! `metaug precompute`: atomic and resumable under SIGKILL, splittable into
//! parts whose union is the whole job, and clear about user errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

fn metaug() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metaug"))
}

/// A scratch directory in memory when possible (fsync is free there), else
/// in the system's temporary directory.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Every file of `dir` (name → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn job_args(src: &Path, out: &Path) -> Vec<String> {
    [
        "precompute",
        src.to_str().unwrap(),
        "--policy",
        "default",
        "--copies",
        "3",
        "--size",
        "48x48",
        "--dtype",
        "f32",
        "--shard-images",
        "97",
        "--seed",
        "5",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_ok(args: &[String]) {
    let out = metaug().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn packed_fmnist(dir: &Path) -> PathBuf {
    let src = dir.join("fm");
    common::fmnist_small(&src);
    src
}

#[test]
fn killed_runs_resume_to_byte_identical_output() {
    let tmp = scratch();
    let src = packed_fmnist(tmp.path());
    let whole = tmp.path().join("whole");
    let t = Instant::now();
    run_ok(&job_args(&src, &whole));
    // Kill points are spread over the time an uninterrupted run takes.
    let full_ms = (t.elapsed().as_millis() as u64).max(20);
    let expected = files(&whole);
    assert!(expected.len() > 60, "{} files", expected.len());

    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut round = 0;
    let mut attempts = 0;
    while round < 3 {
        attempts += 1;
        assert!(attempts < 20, "could not interrupt the runs");
        let out = tmp.path().join(format!("killed-{attempts}"));
        let mut kills = 0;
        loop {
            let mut child = metaug()
                .args(job_args(&src, &out))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let delay = Duration::from_millis(rng.random_range(full_ms / 50..full_ms * 4 / 5));
            let t = Instant::now();
            let mut finished = None;
            while t.elapsed() < delay {
                if let Some(status) = child.try_wait().unwrap() {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            match finished {
                Some(status) => {
                    assert!(status.success());
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    // Whatever is there is either complete or not there.
                    assert!(
                        !out.join("index.json").exists() || files(&out).len() == expected.len()
                    );
                }
            }
            assert!(kills < 200, "never finished");
        }
        if kills == 0 {
            continue; // finished before the first kill: not a test of resuming
        }
        assert_eq!(
            files(&out),
            expected,
            "round {round}: after {kills} kills the output differs from an uninterrupted run"
        );
        round += 1;
    }
}

#[test]
fn parts_together_equal_the_whole_run() {
    let tmp = scratch();
    let src = packed_fmnist(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(&job_args(&src, &whole));
    let split = tmp.path().join("split");
    for part in ["2/3", "3/3", "1/3"] {
        let mut args = job_args(&src, &split);
        args.extend(["--part".into(), part.into()]);
        run_ok(&args);
        let done = split.join("index.json").exists();
        assert_eq!(
            done,
            part == "1/3",
            "index.json only once every part is done"
        );
    }
    assert_eq!(files(&split), files(&whole));
}

fn fails_with(args: &[&str], needle: &str) {
    let out = metaug().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{args:?}: {stderr}");
}

#[test]
fn user_errors_are_clear_messages_not_panics() {
    let tmp = scratch();
    let src = packed_fmnist(tmp.path());
    let s = src.to_str().unwrap();
    let out = tmp.path().join("o");
    let o = out.to_str().unwrap();
    let missing = tmp.path().join("missing");
    fails_with(
        &[
            "precompute",
            missing.to_str().unwrap(),
            "--size",
            "8x8",
            "--out",
            o,
        ],
        "missing",
    );
    let not_dataset = tmp.path().join("empty");
    std::fs::create_dir(&not_dataset).unwrap();
    fails_with(
        &[
            "precompute",
            not_dataset.to_str().unwrap(),
            "--size",
            "8x8",
            "--out",
            o,
        ],
        "index.json",
    );
    fails_with(&["precompute", s, "--size", "0x8", "--out", o], "size of 0");
    fails_with(
        &[
            "precompute",
            s,
            "--size",
            "8x8",
            "--out",
            o,
            "--part",
            "3/2",
        ],
        "3/2",
    );
    // A shard is not a policy file.
    let shard = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    fails_with(
        &[
            "precompute",
            s,
            "--size",
            "8x8",
            "--out",
            o,
            "--policy",
            shard.to_str().unwrap(),
        ],
        "policy",
    );
    // An output path under a regular file cannot be created.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(
        &[
            "precompute",
            s,
            "--size",
            "8x8",
            "--out",
            file.join("sub").to_str().unwrap(),
        ],
        "a-file",
    );
    // Another job in the same directory is refused, not mixed in.
    run_ok(&["precompute", s, "--size", "8x8", "--out", o].map(String::from));
    fails_with(
        &["precompute", s, "--size", "9x9", "--out", o],
        "different precompute job",
    );
}

/// Runs `metaug` with its file size limited to `limit` bytes (RLIMIT_FSIZE)
/// and SIGXFSZ ignored, so that a write past it fails with EFBIG, as a full
/// disk fails a write with ENOSPC: the same path through the code, without
/// filling a real disk.
fn run_with_file_size_limit(args: &[String], limit: u64) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = metaug();
    cmd.args(args);
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (setrlimit, signal), touching no
    // memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn a_full_output_disk_is_a_clear_error_and_leaves_no_file_looking_complete() {
    let tmp = scratch();
    let src = packed_fmnist(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(&job_args(&src, &whole));
    let expected = files(&whole);
    let shard_len = expected["aug-000000.safetensors"].len() as u64;

    let out = tmp.path().join("full");
    // Room for job.json and a few shards' worth of bytes in any one file:
    // every shard file is larger than the limit, so the first shard fails.
    let out_output = run_with_file_size_limit(&job_args(&src, &out), shard_len / 3);
    let stderr = String::from_utf8_lossy(&out_output.stderr);
    assert!(!out_output.status.success(), "the run must fail");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.contains("aug-000000"),
        "the error names the file: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing left looks complete: no shard, no index, no temporary.
    let left = files(&out);
    assert!(!left.contains_key("index.json"));
    for name in left.keys() {
        assert!(
            name == "job.json",
            "{name} was left behind by the failed run"
        );
    }
    // Once there is room again the job finishes, byte for byte the same.
    run_ok(&job_args(&src, &out));
    assert_eq!(files(&out), expected);
}
