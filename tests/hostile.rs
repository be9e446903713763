//! Hostile clients against the real binary: slow headers, connections that never read their
//! SSE stream, huge and deeply nested bodies, header floods, too many connections and streams.
//! Normal clients keep being served, within bounded memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A normal client still gets a quick answer.
async fn still_serving(s: &Server) {
    let started = Instant::now();
    let resp = client().get(s.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--request_timeout_secs", "2"]);
    let mut slow = TcpStream::connect(addr(&s)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = [0u8; 64];
    // Trickle a header byte now and then; the server must close before we ever finish.
    let closed = loop {
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
        if slow.write_all(b"X").is_err() {
            break true;
        }
        std::thread::sleep(Duration::from_millis(300));
        slow.set_nonblocking(true).unwrap();
        let read = slow.read(&mut buf);
        slow.set_nonblocking(false).unwrap();
        if matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            break true;
        }
        still_serving(&s).await;
    };
    assert!(closed, "a slow-loris connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn huge_nested_and_flooded_requests_get_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "h", "pw", "t").await;
    let jwt = login(&c, &s, "h", "pw").await;
    // A 100 MB body, declared: refused before it is read.
    let mut raw = TcpStream::connect(addr(&s)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(raw, "POST /insert HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\nContent-Length: 104857600\r\n\r\n").unwrap();
    raw.write_all(&[b'x'; 65536]).unwrap();
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // A 100 MB body, chunked (no length): cut at the limit, not read to the end.
    let mut chunked = TcpStream::connect(addr(&s)).unwrap();
    chunked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(chunked, "POST /insert HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let block = vec![b' '; 1 << 20];
    for _ in 0..100 {
        if write!(chunked, "100000\r\n").is_err()
            || chunked.write_all(&block).is_err()
            || chunked.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let mut head = [0u8; 12];
    if chunked.read_exact(&mut head).is_ok() {
        assert_eq!(&head, b"HTTP/1.1 413");
    }
    // Deeply nested JSON.
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let (status, body) = post_raw(
        &c,
        s.url("/insert"),
        json!({"event": "e"})
            .to_string()
            .replace('}', &format!(",\"data\":{nested}}}")),
        Some(&format!("Bearer {jwt}")),
    )
    .await;
    assert!(status == 400 || status == 413, "{status}: {body}");
    // A header flood.
    let mut flood = TcpStream::connect(addr(&s)).unwrap();
    flood
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..5000 {
        request.push_str(&format!("X-Flood-{i}: {}\r\n", "y".repeat(50)));
    }
    request.push_str("\r\n");
    let _ = flood.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = flood.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    still_serving(&s).await;
    assert_eq!(insert(&c, &s, &jwt, "ok", json!(1)).await.0, 200);
}

#[tokio::test]
async fn connection_and_stream_caps_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--max_connections", "20", "--max_sse_per_user", "3"],
    );
    let c = client();
    create_user(&c, &s, "capped", "pw", "t").await;
    let jwt = login(&c, &s, "capped", "pw").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Sse::open(&s, &jwt, None).await);
    }
    let resp = reqwest::Client::new()
        .get(s.url("/sse"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    drop(streams);
    // Idle connections up to the cap; beyond it they are closed at once.
    let idle: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(addr(&s)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for mut conn in idle.iter() {
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(conn.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 15,
        "only {closed} of 40 connections beyond a cap of 20 were closed"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serving(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_read_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_sse_per_user", "100000"]);
    let c = client();
    create_user(&c, &s, "reader", "pw", "t").await;
    let jwt = login(&c, &s, "reader", "pw").await;
    let base_rss = rss_kib(s.pid());
    // 500 subscribers that send their request and then never read a byte.
    let mut sockets = Vec::new();
    for _ in 0..500 {
        let mut conn = TcpStream::connect(addr(&s)).unwrap();
        write!(
            conn,
            "GET /sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\n\r\n"
        )
        .unwrap();
        sockets.push(conn);
    }
    let payload = "z".repeat(2048);
    let mut rss = Vec::new();
    for round in 0..2 {
        // 600 events of 2 KiB per round: 1.2 MB more that no subscriber reads.
        for i in 0..600 {
            let (status, _) = insert(
                &c,
                &s,
                &jwt,
                &format!("e{}", i % 10),
                json!({"r": round, "i": i, "p": payload}),
            )
            .await;
            assert_eq!(status, 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(s.pid()));
    }
    still_serving(&s).await;
    let mut sse = Sse::open(&s, &jwt, None).await;
    assert_eq!(
        sse.take(10, WAIT).await.len(),
        10,
        "a reading subscriber still gets its snapshot"
    );
    let per_connection = (rss[1].saturating_sub(base_rss)) / 500;
    let second_round = rss[1].saturating_sub(rss[0]);
    eprintln!(
        "500 non-reading streams: server RSS {base_rss} KiB -> {} KiB -> {} KiB ({per_connection} KiB per stream); the second 1.2 MB of unread events added {second_round} KiB",
        rss[0], rss[1]
    );
    // Unread data does not pile up in the server: twice the events, not twice the memory.
    assert!(
        second_round < 50 * 1024,
        "the second round grew RSS by {second_round} KiB"
    );
    assert!(
        per_connection < 1024,
        "{per_connection} KiB per non-reading stream"
    );
    drop(sockets);
}
