//! Hostile segment files: a crafted tail that made the search after a bad frame quadratic,
//! a segment too large to read whole, and a compacted header that would have made the start
//! delete the segments it claims to cover. Each is refused quickly, naming the file, and
//! nothing is changed on disk. So are a FIFO named like a segment and a `LOCK` that is a
//! symbolic link, which hung or misled the start and the tools.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use broker::log::frame;
use broker::log::segment::{self, HEADER_LEN, Header};
use serde_json::json;

/// Generous, so a loaded CI machine never flakes: a debug build needs well under a second.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs the binary, killed after `limit`: (exit code, `None` if it had to be killed; stdout;
/// stderr; time taken).
fn run_within(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut exited = false;
    while !exited && started.elapsed() < limit {
        exited = child.try_wait().unwrap().is_some();
        if !exited {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let took = started.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let code = exited.then(|| status.code().unwrap_or(-1));
    (code, out.join().unwrap(), err.join().unwrap(), took)
}

/// The server on `db`, expected to refuse to start (it is killed if it starts after all).
fn start_refused(db: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let db = db.to_str().unwrap();
    let mut args = vec!["--db", db, "--listen", "127.0.0.1", "--port", "0"];
    args.extend(["--ntp", "false"]);
    args.extend(extra);
    let (code, _, err, _) = run_within(&args, &[], LIMIT);
    (code, err)
}

fn verify(db: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let (code, out, _, took) =
        run_within(&["log", "verify", "--db", db.to_str().unwrap()], env, LIMIT);
    (code, out, took)
}

fn segments(db: &Path) -> Vec<PathBuf> {
    segment::list(&db.join("log"))
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Every segment file with its bytes.
fn snapshot(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segments(db)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

/// Regression: `00 80 00 00` after a bad frame offers a candidate frame of 32 KiB or 8 MiB at
/// three offsets in four, and every one was checksummed: hours for 64 MiB.
#[test]
fn a_crafted_64_mib_tail_is_judged_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let path = segment::path(&log, 1);
    let mut bytes = Header::new(1).encode().to_vec();
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    bytes.extend_from_slice(&[b'x'; 16]);
    let pattern = (64 << 20) - bytes.len();
    bytes.extend(
        std::iter::repeat_n([0x00, 0x80, 0x00, 0x00], pattern / 4)
            .flatten()
            .chain(std::iter::repeat_n(0, pattern % 4)),
    );
    assert_eq!(bytes.len(), 64 << 20);
    std::fs::write(&path, &bytes).unwrap();

    let (code, out, took) = verify(dir.path(), &[]);
    eprintln!("broker log verify on the crafted 64 MiB segment: {took:?}");
    assert_eq!(code, Some(1), "verify ran {took:?}: {out}");
    assert!(
        out.contains(&format!("{} @ 48: damage", name(&path))),
        "{out}"
    );

    let started = Instant::now();
    let (code, err) = start_refused(dir.path(), &[]);
    eprintln!("the refused start: {:?}", started.elapsed());
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(
        err.contains(name(&path)) && err.contains("byte offset 48"),
        "{err}"
    );
    // Refused, not cut away as a torn tail: a tail this long cannot be told apart.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// Regression: a segment was read whole whatever its size.
#[test]
fn an_oversized_segment_is_refused_unread_by_the_server_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let path = segment::path(&log, 1);
    std::fs::write(&path, Header::new(1).encode()).unwrap();
    // Sparse: no disk space, yet one byte above what 64 MiB segments allow.
    let len = segment::max_len(segment::DEFAULT_SEGMENT_BYTES) + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();

    let (code, err) = start_refused(dir.path(), &[]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    let needed = segment::segment_bytes_for(len).to_string();
    for part in [
        name(&path),
        &format!("is {len} bytes"),
        "--segment_bytes",
        &needed,
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
    // The limit follows --segment_bytes: a 4096-byte setting refuses far smaller files.
    let (code, err) = start_refused(dir.path(), &["--segment_bytes", "4096"]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(err.contains(&segment::max_len(4096).to_string()), "{err}");

    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(name(&path)) && out.contains(&format!("is {len} bytes")),
        "{out}"
    );
    // With the setting the message asks for, the tools read it, and find in the last segment
    // only zeros after the header: what a killed writer leaves ahead of its records (the
    // server cuts them at its next start), no fault and no record.
    let (code, out, _) = verify(dir.path(), &[("BROKER_SEGMENT_BYTES", &needed)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 segments, 0 records"), "{out}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
}

/// A log of several small segments, written by the server; returns their paths.
async fn small_segments(db: &Path) -> Vec<PathBuf> {
    let mut s = Server::start(db, &["--segment_bytes", "4096"]);
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    let jwt = login(&c, &s, "u", "pw").await;
    for i in 0..120 {
        let (status, _) = insert(&c, &s, &jwt, "e", json!({"i": i, "pad": "x".repeat(40)})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.terminate(), Some(0));
    let all = segments(db);
    assert!(all.len() >= 4, "{} segments", all.len());
    all
}

/// Rewrites `path` with a compacted header covering up to `covers_upto`, over its own frames.
fn flag_compacted(path: &Path, covers_upto: u64, damage: bool) {
    let bytes = std::fs::read(path).unwrap();
    let first = Header::decode(&bytes).unwrap().first_cursor;
    let mut out = Header::compacted(first, covers_upto, covers_upto + 1)
        .encode()
        .to_vec();
    let body = &bytes[HEADER_LEN..];
    assert!(frame::decode(body).is_ok());
    out.extend_from_slice(body);
    if damage {
        let middle = HEADER_LEN + body.len() / 2;
        out[middle] ^= 0x40;
    }
    std::fs::write(path, out).unwrap();
}

/// Regression: a CRC-valid header flagged as compacted made the start delete the segments
/// it claimed to cover, before anything checked the segment behind the header.
#[tokio::test]
async fn a_compacted_header_over_a_damaged_body_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all = small_segments(dir.path()).await;
    let third_first = segment::parse_name(name(&all[2])).unwrap();
    flag_compacted(&all[0], third_first - 1, true);
    let before = snapshot(dir.path());

    let (code, err) = start_refused(dir.path(), &["--segment_bytes", "4096"]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(
        err.contains(name(&all[0])) && err.contains("compacted segment"),
        "{err}"
    );
    assert!(err.contains("they are kept"), "{err}");
    assert_eq!(snapshot(dir.path()), before, "the start changed the log");

    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refuses to start rather than remove them"),
        "{out}"
    );
    assert!(!out.contains("the next start removes it"), "{out}");
}

/// Regression: an intact compacted segment claiming more than a compaction ever replaces —
/// here every later segment, the newest included — deleted them all at start.
#[tokio::test]
async fn a_compacted_header_claiming_the_newest_segment_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all = small_segments(dir.path()).await;
    let newest_first = segment::parse_name(name(all.last().unwrap())).unwrap();
    flag_compacted(&all[0], newest_first + 1_000, false);
    let before = snapshot(dir.path());

    let (code, err) = start_refused(dir.path(), &["--segment_bytes", "4096"]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(
        err.contains(name(&all[0]))
            && err.contains(&format!(
                "no segment starts at cursor {}",
                newest_first + 1_001
            )),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before, "the start changed the log");

    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refuses to start rather than remove them"),
        "{out}"
    );
}

/// Regression: a group commit wrote its whole batch into the active segment, so a burst
/// could carry a segment past the size a reader accepts; now a full segment ends the batch.
#[tokio::test]
async fn a_burst_of_writes_never_carries_a_segment_far_past_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--segment_bytes", "4096"]);
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    let jwt = login(&c, &s, "u", "pw").await;
    let pad = "x".repeat(1000);
    for round in 0..4 {
        let burst = (0..64).map(|i| {
            let (c, s, jwt, pad) = (&c, &s, &jwt, &pad);
            async move { insert(c, s, jwt, "e", json!({"r": round, "i": i, "pad": pad})).await }
        });
        for (status, body) in futures_util::future::join_all(burst).await {
            assert_eq!(status, 200, "{body}");
        }
    }
    drop(s);
    // One insert's frame is about 1.2 KB: a segment ends with at most one past 4096 bytes.
    for path in segments(dir.path()) {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 4096 + 2048, "{} is {len} bytes", name(&path));
    }
}

/// Regression: a segment deleted from the middle (or the first) was not noticed at start: the
/// server served a log without the acknowledged records it held (and `verify` missed a
/// missing first segment).
#[tokio::test]
async fn a_missing_segment_refuses_the_start_with_or_without_a_checkpoint() {
    for (gone, with_checkpoint) in [(1, false), (1, true), (0, false), (0, true)] {
        let dir = tempfile::tempdir().unwrap();
        let all = small_segments(dir.path()).await;
        if !with_checkpoint {
            std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
        }
        std::fs::remove_file(&all[gone]).unwrap();
        let before = snapshot(dir.path());

        let (code, err) = start_refused(dir.path(), &["--segment_bytes", "4096"]);
        let case = format!("segment {gone} gone, checkpoint {with_checkpoint}");
        assert!(
            code.is_some_and(|c| c != 0),
            "{case}: the server started: {err}"
        );
        assert!(err.contains("missing"), "{case}: {err}");
        // The file named is the one after the hole.
        assert!(err.contains(name(&all[gone + 1])), "{case}: {err}");
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{case}: the start changed the log"
        );

        let (code, out, _) = verify(dir.path(), &[]);
        assert_eq!(code, Some(1), "{case}: {out}");
        assert!(out.contains("gap"), "{case}: {out}");
    }
}

/// How long a refusal may take: a debug build needs well under a second; a hang is what this
/// catches.
const PROMPT: Duration = Duration::from_secs(10);

/// Regression: a FIFO named like a segment made the start and every `broker log` tool wait
/// forever in its `open`, without a word (`dump` printed nothing). Each now refuses it at
/// once, naming the file, and leaves it as it was.
#[tokio::test]
async fn a_fifo_named_like_a_segment_is_refused_at_once_by_the_start_and_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(create_user(&client(), &s, "u", "pw", "t").await, 200);
    assert_eq!(s.terminate(), Some(0));
    let fifo = segment::path(&dir.path().join("log"), 2);
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let db = dir.path().to_str().unwrap();

    let started = Instant::now();
    let (code, err) = start_refused(dir.path(), &[]);
    let took = started.elapsed();
    assert!(
        code.is_some_and(|c| c != 0) && took < PROMPT,
        "the start was not refused within {PROMPT:?} ({took:?}): {err}"
    );
    assert!(err.contains(name(&fifo)) && err.contains("FIFO"), "{err}");

    for (tool, extra) in [
        ("verify", &[][..]),
        ("dump", &[][..]),
        ("replay", &[][..]),
        ("compact", &["--retain", "1"][..]),
        ("migrate", &[][..]),
    ] {
        let mut args = vec!["log", tool, "--db", db];
        args.extend(extra);
        let (code, out, err, took) = run_within(&args, &[], PROMPT);
        assert!(
            code.is_some_and(|c| c != 0),
            "`broker log {tool}` exited {code:?} after {took:?}:\n{out}\n{err}"
        );
        let said = out + &err;
        assert!(
            said.contains(name(&fifo)) && said.contains("FIFO"),
            "`broker log {tool}`: {said}"
        );
    }
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind));
}

/// Regression: a dangling symbolic link named `LOCK` in the log directory made the start
/// create the file it points to (anywhere the server may write). It is refused, naming it.
#[test]
fn a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let target = dir.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, log.join("LOCK")).unwrap();

    let (code, err) = start_refused(dir.path(), &[]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(
        err.contains("LOCK") && err.contains("symbolic link"),
        "{err}"
    );
    let db = dir.path().to_str().unwrap();
    for tool in ["compact", "migrate"] {
        let mut args = vec!["log", tool, "--db", db];
        if tool == "compact" {
            args.extend(["--retain", "1"]);
        }
        let (code, out, err, _) = run_within(&args, &[], PROMPT);
        assert!(
            code.is_some_and(|c| c != 0),
            "`broker log {tool}`: {out}{err}"
        );
        assert!(
            err.contains("LOCK") && err.contains("symbolic link"),
            "`broker log {tool}`: {err}"
        );
    }
    assert!(!target.exists(), "the link's target was created");
    assert!(
        std::fs::symlink_metadata(log.join("LOCK"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A segment that is a symbolic link is refused like a FIFO: the start would otherwise read,
/// zero-fill ahead of its records and cut a file outside the log directory.
#[tokio::test]
async fn a_segment_that_is_a_symbolic_link_is_refused_and_its_target_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(create_user(&client(), &s, "u", "pw", "t").await, 200);
    assert_eq!(s.terminate(), Some(0));
    let path = segment::path(&dir.path().join("log"), 1);
    let elsewhere = dir.path().join("elsewhere.seg");
    std::fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let bytes = std::fs::read(&elsewhere).unwrap();

    let (code, err) = start_refused(dir.path(), &[]);
    assert!(code.is_some_and(|c| c != 0), "the server started: {err}");
    assert!(
        err.contains(name(&path)) && err.contains("symbolic link"),
        "{err}"
    );
    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("symbolic link"), "{out}");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), bytes);
}
