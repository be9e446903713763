//! Operations against the real binary: SIGTERM loses nothing and leaves a clean log, SSE
//! streams get a final frame, HTTPS with a given certificate (curl as the client) and its
//! reload (a FIFO in place of the file stalls nothing), the clock following a skewed SNTP
//! server, `/metrics` parsed as Prometheus text, JSON logs without secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_inserts_loses_nothing_and_leaves_a_clean_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "w", "pw", "t").await;
    let jwt = login(&c, &s, "w", "pw").await;
    let mut stream = Sse::open(&s, &jwt, None).await;
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut writers = Vec::new();
    for n in 0..8 {
        let (c, url, jwt, acked) = (client(), s.url("/insert"), jwt.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let tag = format!("{n}-{i}");
                let body = json!({"event": "e", "data": tag}).to_string();
                let (status, reply) =
                    post_raw(&c, url.clone(), body, Some(&format!("Bearer {jwt}"))).await;
                if status != 200 {
                    return;
                }
                acked
                    .lock()
                    .unwrap()
                    .insert(reply["cursor"].as_u64().unwrap(), tag);
            }
        }));
    }
    // SIGTERM lands while inserts are in flight: once some are acknowledged (bounded wait).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.terminate(),
        Some(0),
        "exit code after SIGTERM:\n{}",
        s.stderr()
    );
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    // The stream ended with a frame that says so and carries a resume cursor.
    let mut last = None;
    while let Some(frame) = stream.next_frame(Duration::from_secs(5)).await {
        last = Some(frame);
    }
    let last = last.expect("frames before the end");
    assert_eq!(last.event.as_deref(), Some("broker.closed"), "{last:?}");
    assert_eq!(last.json()["reason"], "shutdown", "{last:?}");
    assert!(last.id.is_some());

    // Clean: verify finds nothing, and the next start cuts no tail.
    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let s = Server::start(dir.path(), &[]);
    assert!(!s.stderr().contains("torn tail"), "{}", s.stderr());
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} inserts before SIGTERM",
        acked.len()
    );
    let jwt = login(&c, &s, "w", "pw").await;
    let mut sse = Sse::open(&s, &jwt, Some("0")).await;
    let newest = *acked.keys().last().unwrap();
    let mut present = BTreeMap::new();
    while present.keys().last().is_none_or(|c| *c < newest) {
        let f = sse
            .next_event(WAIT)
            .await
            .expect("every acknowledged insert");
        present.insert(f.cursor(), f.json().as_str().unwrap().to_owned());
    }
    for (cursor, tag) in &acked {
        assert_eq!(
            present.get(cursor),
            Some(tag),
            "acknowledged cursor {cursor} lost"
        );
    }
}

/// A CA and a leaf certificate for `localhost` signed by it, written as PEM files.
fn make_cert(dir: &Path, name: &str) -> std::path::PathBuf {
    make_cert_until(dir, name, None)
}

/// [`make_cert`], the leaf valid until `not_after` (year, month, day) when given.
fn make_cert_until(dir: &Path, name: &str, not_after: Option<(i32, u8, u8)>) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    if let Some((y, m, d)) = not_after {
        leaf_params.not_before = rcgen::date_time_ymd(y - 1, m, d);
        leaf_params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}-chain.pem")),
        leaf.pem() + &ca.pem(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{name}-key.pem")),
        leaf_key.serialize_pem(),
    )
    .unwrap();
    dir.join(format!("{name}-ca.pem"))
}

/// `curl` over HTTPS to `localhost:<port>` trusting only `ca`; returns (exit code, body).
fn curl(port: u16, path: &str, ca: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl must be installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn https_with_a_given_certificate_and_its_reload() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca1 = make_cert(certs.path(), "one");
    let ca2 = make_cert(certs.path(), "two");
    let (chain, key) = (certs.path().join("chain.pem"), certs.path().join("key.pem"));
    std::fs::copy(certs.path().join("one-chain.pem"), &chain).unwrap();
    std::fs::copy(certs.path().join("one-key.pem"), &key).unwrap();

    let secure = |chain: &Path, key: &Path| {
        vec![
            "--secure".to_owned(),
            "true".to_owned(),
            "--auto_cert".to_owned(),
            "false".to_owned(),
            "--cert_path".to_owned(),
            chain.display().to_string(),
            "--key_path".to_owned(),
            key.display().to_string(),
            "--jwt_secret".to_owned(),
            "a-long-test-secret".to_owned(),
            "--admin_token".to_owned(),
            "test-admin".to_owned(),
        ]
    };
    // A missing key is a clear error at start.
    let missing = secure(&chain, &certs.path().join("nope.pem"));
    let err = Server::try_start(
        dir.path(),
        &missing.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .err()
    .expect("must refuse");
    assert!(
        err.contains("--key_path") && err.contains("nope.pem"),
        "{err}"
    );

    let flags = secure(&chain, &key);
    let s = Server::start(
        dir.path(),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let (code, body) = curl(port, "/", &ca1, &[]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (code, body) = curl(
        port,
        "/create_user",
        &ca1,
        &[
            "-d",
            r#"{"username":"tls","password":"pw","admin_token":"test-admin","tenant_name":"t"}"#,
        ],
    );
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"id\""), "{body}");
    let (code, _) = curl(port, "/", &ca2, &[]);
    assert_ne!(
        code, 0,
        "a client trusting only the second CA must refuse the first certificate"
    );

    // Replace the files and send SIGHUP: the second certificate is served, without a restart.
    std::fs::copy(certs.path().join("two-chain.pem"), &chain).unwrap();
    std::fs::copy(certs.path().join("two-key.pem"), &key).unwrap();
    let pid = s.pid().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let mut switched = false;
    for _ in 0..100 {
        if curl(port, "/", &ca2, &[]).0 == 0 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        switched,
        "the new certificate was not picked up:\n{}",
        s.stderr()
    );
    assert!(s.stderr().contains("TLS certificate reloaded"));
}

/// Regression: a FIFO put in place of the certificate file blocked the reload in its `open`,
/// on a runtime worker, forever: HTTPS requests timed out and SIGTERM no longer stopped the
/// server. The reload now refuses it at once (off the runtime) and keeps the served one.
#[tokio::test]
async fn a_fifo_in_place_of_the_certificate_stalls_neither_serving_nor_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = make_cert(certs.path(), "one");
    let (chain, key) = (certs.path().join("chain.pem"), certs.path().join("key.pem"));
    std::fs::copy(certs.path().join("one-chain.pem"), &chain).unwrap();
    std::fs::copy(certs.path().join("one-key.pem"), &key).unwrap();
    // A key others may read is warned about (an attack review: 0644 went unremarked).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (chain_flag, key_flag) = (chain.display().to_string(), key.display().to_string());
    let mut s = Server::start(
        dir.path(),
        &[
            "--secure",
            "true",
            "--auto_cert",
            "false",
            "--cert_path",
            &chain_flag,
            "--key_path",
            &key_flag,
            "--jwt_secret",
            "a-long-test-secret",
            "--admin_token",
            "test-admin",
        ],
    );
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(curl(port, "/", &ca, &[]).0, 0);
    assert!(
        s.stderr()
            .contains("the TLS private key is readable or writable by group or others"),
        "{}",
        s.stderr()
    );

    std::fs::remove_file(&chain).unwrap();
    let made = Command::new("mkfifo").arg(&chain).status().expect("mkfifo");
    assert!(made.success());
    // SIGHUP reloads at once; the periodic check (every 5 s) comes within the wait too.
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..3 {
        let (code, body) = curl(port, "/", &ca, &[]);
        assert_eq!(
            code,
            0,
            "HTTPS stalled after the reload: {body}\n{}",
            s.stderr()
        );
        assert!(body.contains("\"status\":\"ok\""), "{body}");
    }
    assert_eq!(
        s.terminate(),
        Some(0),
        "SIGTERM did not stop it:\n{}",
        s.stderr()
    );
    let err = s.stderr();
    assert!(
        err.contains("not reloaded") && err.contains("FIFO") && err.contains("chain.pem"),
        "the reload did not refuse the FIFO: {err}"
    );
}

/// An HTTPS server in `db` on the `name` pair of [`make_cert`] in `certs`, with `extra`
/// flags, and its port.
fn start_tls(db: &Path, certs: &Path, name: &str, extra: &[&str]) -> (Server, u16) {
    let chain = certs
        .join(format!("{name}-chain.pem"))
        .display()
        .to_string();
    let key = certs.join(format!("{name}-key.pem")).display().to_string();
    let mut flags = vec![
        "--secure",
        "true",
        "--auto_cert",
        "false",
        "--cert_path",
        &chain,
        "--key_path",
        &key,
        "--jwt_secret",
        "a-long-test-secret",
        "--admin_token",
        "test-admin",
    ];
    flags.extend(extra);
    let s = Server::start(db, &flags);
    let port = s.base.rsplit(':').next().unwrap().parse().unwrap();
    (s, port)
}

/// The `Strict-Transport-Security` values of a curl `-D -` dump (one per answer).
fn hsts_values(dump: &str) -> Vec<String> {
    dump.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("strict-transport-security"))
        .map(|(_, value)| value.trim().to_owned())
        .collect()
}

/// Every answer over Broker's own TLS carries HSTS (this host only): the router's, an
/// error, the direct SSE path's refusal, HTTP/2; plain HTTP never does (a browser ignores
/// it there, and behind a TLS proxy the proxy says what it serves), and 0 turns it off.
#[tokio::test]
async fn answers_over_our_own_tls_carry_hsts_and_plain_http_does_not() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_cert(certs.path(), "one");
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_tls(dir.path(), certs.path(), "one", &[]);
    for (path, extra) in [
        ("/", vec!["--http1.1"]),
        ("/", vec!["--http2"]),
        ("/no-such-route", vec!["--http1.1"]),
        ("/sse", vec!["--http1.1"]),
        ("/sse", vec!["--http2"]),
    ] {
        let mut args = vec!["-D", "-", "-o", "/dev/null"];
        args.extend(extra.iter().copied());
        let (code, dump) = curl(port, path, &ca, &args);
        assert_eq!(code, 0, "{path} {extra:?}: {dump}");
        assert_eq!(
            hsts_values(&dump),
            vec!["max-age=31536000".to_owned()],
            "{path} {extra:?}: {dump}"
        );
    }

    let off = tempfile::tempdir().unwrap();
    let (_server, port) = start_tls(
        off.path(),
        certs.path(),
        "one",
        &["--hsts_max_age_secs", "0"],
    );
    let (code, dump) = curl(port, "/", &ca, &["-D", "-", "-o", "/dev/null"]);
    assert_eq!(code, 0, "{dump}");
    assert!(hsts_values(&dump).is_empty(), "{dump}");

    let plain = tempfile::tempdir().unwrap();
    let s = Server::start(plain.path(), &[]);
    for path in ["/", "/sse"] {
        let resp = client().get(s.url(path)).send().await.unwrap();
        assert!(
            !resp.headers().contains_key("strict-transport-security"),
            "{path}: {:?}",
            resp.headers()
        );
    }
    let err = Server::try_start(plain.path(), &["--hsts_max_age_secs", "999999999999"])
        .err()
        .expect("a huge max-age must be refused");
    assert!(err.contains("--hsts_max_age_secs"), "{err}");
}

/// An expired certificate from files is served as rustls serves any (clients refuse it),
/// but the start says so in the log, and `/metrics` shows every served certificate's
/// `notAfter` for alerting; a certificate with years left gets no warning.
#[tokio::test]
async fn an_expired_certificate_is_warned_about_and_every_expiry_is_a_metric() {
    let certs = tempfile::tempdir().unwrap();
    for (name, until, warned) in [("one", Some((2021, 1, 1)), true), ("two", None, false)] {
        let ca = make_cert_until(certs.path(), name, until);
        let dir = tempfile::tempdir().unwrap();
        let (s, port) = start_tls(
            dir.path(),
            certs.path(),
            name,
            &["--metrics_token", "scrape-me"],
        );
        let expired = wait_for_log(&s, "expired", Duration::from_millis(500)).await;
        assert_eq!(expired, warned, "{name}: {}", s.stderr());
        // The expired one is refused by curl; the metric is read past the check.
        let insecure: &[&str] = if warned { &["-k"] } else { &[] };
        let mut args = vec!["-H", "Authorization: Bearer scrape-me"];
        args.extend(insecure);
        let (code, text) = curl(port, "/metrics", &ca, &args);
        assert_eq!(code, 0, "{text}");
        let shown: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("broker_tls_certificate_not_after_seconds "))
            .unwrap_or_else(|| panic!("no expiry metric: {text}"))
            .trim()
            .parse()
            .unwrap();
        match until {
            // 2021-01-01T00:00:00Z
            Some(_) => assert_eq!(shown, 1_609_459_200.0, "{text}"),
            // rcgen's default: 4096-01-01.
            None => assert!(shown > 4e10, "{text}"),
        }
        if warned {
            let (code, _) = curl(port, "/", &ca, &[]);
            assert_ne!(code, 0, "curl accepted an expired certificate");
        }
    }
}

/// A certificate file grown past 1 MiB is not read whole on reload: the served pair stays
/// and the log says why.
#[tokio::test]
async fn an_oversized_certificate_file_is_not_reloaded() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_cert(certs.path(), "one");
    let dir = tempfile::tempdir().unwrap();
    let (s, port) = start_tls(dir.path(), certs.path(), "one", &[]);
    assert_eq!(curl(port, "/", &ca, &[]).0, 0);

    // A valid chain followed by 1 MiB of comment lines: still PEM, but too large.
    let chain = certs.path().join("one-chain.pem");
    let mut grown = std::fs::read_to_string(&chain).unwrap();
    grown.push_str(&"# padding padding padding padding padding padding padding\n".repeat(20_000));
    assert!(grown.len() > 1024 * 1024);
    std::fs::write(&chain, grown).unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        wait_for_log(&s, "more than the 1048576", Duration::from_secs(10)).await,
        "the reload did not refuse the large file:\n{}",
        s.stderr()
    );
    let (code, body) = curl(port, "/", &ca, &[]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(
        !s.stderr().contains("TLS certificate reloaded"),
        "{}",
        s.stderr()
    );
}

/// A minimal SNTP server on a loopback UDP port that reports local time + `skew_s`.
async fn skewed_sntp_server(skew_s: u64) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 128];
        // Bounded: enough answers for any test, then the task ends.
        for _ in 0..1000 {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            if n < 48 {
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let secs = (now.as_secs() + skew_s + 2_208_988_800) as u32;
            let frac = ((now.subsec_nanos() as u64) << 32) / 1_000_000_000;
            let mut stamp = [0u8; 8];
            stamp[..4].copy_from_slice(&secs.to_be_bytes());
            stamp[4..].copy_from_slice(&(frac as u32).to_be_bytes());
            let mut reply = [0u8; 48];
            reply[0] = 0x24; // LI 0, version 4, mode 4 (server)
            reply[1] = 1; // stratum 1
            reply[12..16].copy_from_slice(b"TEST");
            reply[16..24].copy_from_slice(&stamp);
            reply[24..32].copy_from_slice(&buf[40..48]); // origin = the client's transmit time
            reply[32..40].copy_from_slice(&stamp);
            reply[40..48].copy_from_slice(&stamp);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

fn local_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_clock_follows_a_skewed_sntp_server() {
    // Inside the 5-minute bound, and 5 TOTP steps away: a code of local time is outside the
    // server's ±1 step window.
    let skew = 150;
    let ntp = skewed_sntp_server(skew).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--ntp_servers", &ntp]);
    assert!(
        wait_for_log(&s, "clock synchronised", Duration::from_secs(10)).await,
        "{}",
        s.stderr()
    );
    let c = client();
    let body = json!({"username": "tick", "password": "pw", "admin_token": ADMIN, "tenant_name": "t", "two_factor": true});
    assert_eq!(post(&c, s.url("/create_user"), body).await.0, 200);
    let (_, qr) = post(
        &c,
        s.url("/create_qr"),
        json!({"username": "tick", "issuer": "T", "admin_token": ADMIN}),
    )
    .await;
    let app = totp_rs::Totp::from_url(read_qr(qr["qr"].as_str().unwrap())).unwrap();
    let local_now = local_now_s();
    let login = |code: String| json!({"username": "tick", "password": "pw", "totp": code});
    let (status, _) = post(
        &c,
        s.url("/login"),
        login(app.generate(local_now).to_string()),
    )
    .await;
    assert_eq!(status, 401, "a code of the local time is refused");
    let (status, reply) = post(
        &c,
        s.url("/login"),
        login(app.generate(local_now + skew).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let claims = jwt_claims(reply["jwt"].as_str().unwrap());
    let iat = claims["iat"].as_u64().unwrap();
    assert!(
        iat.abs_diff(local_now + skew) <= 5,
        "iat {iat} does not follow the skewed clock (local {local_now})"
    );
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 86_400);
}

#[tokio::test]
async fn an_ntp_offset_beyond_five_minutes_is_not_applied() {
    let day = 86_400;
    let ntp = skewed_sntp_server(day).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--ntp_servers", &ntp]);
    let warning = "NTP offset beyond ±5 minutes not applied";
    assert!(
        wait_for_log(&s, warning, Duration::from_secs(10)).await,
        "{}",
        s.stderr()
    );
    let c = client();
    assert_eq!(create_user(&c, &s, "tock", "pw", "t").await, 200);
    let jwt = login(&c, &s, "tock", "pw").await;
    let local_now = local_now_s();
    let iat = jwt_claims(&jwt)["iat"].as_u64().unwrap();
    assert!(
        iat.abs_diff(local_now) <= 5,
        "iat {iat} is not local time {local_now}: the one-day offset was applied"
    );
    let logs = s.stderr();
    assert!(!logs.contains("clock synchronised"), "{logs}");
    assert_eq!(logs.matches(warning).count(), 1, "{logs}");
    let line = logs.lines().find(|l| l.contains(warning)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    let offset: i64 = line
        .split("offset_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the offset is named: {line}"));
    assert!((offset - 86_400_000).abs() < 2_000, "{line}");
}

#[tokio::test]
async fn unreachable_ntp_servers_warn_once_and_do_not_block_requests() {
    // A loopback port with nothing behind it: ICMP port-unreachable, at once.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--ntp_servers", &closed, "--ntp_interval_secs", "16"],
    );
    assert!(
        wait_for_log(&s, "no NTP server answered", Duration::from_secs(10)).await,
        "{}",
        s.stderr()
    );
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    login(&c, &s, "u", "pw").await;
    assert_eq!(s.stderr().matches("no NTP server answered").count(), 1);
}

/// Parses a Prometheus text exposition into (metric name with labels) → value.
fn scrape(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_protected_parse_as_prometheus_text_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let s = Server::start(
        dir.path(),
        &[
            "--metrics_token",
            "scrape-me",
            "--metrics_addr",
            &metrics_addr,
        ],
    );
    let c = client();
    let resp = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let get = |auth: bool| {
        let mut req = c.get(s.url("/metrics"));
        if auth {
            req = req.bearer_auth("scrape-me");
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let before = scrape(&get(true).await);
    create_user(&c, &s, "m", "pw", "t").await;
    let jwt = login(&c, &s, "m", "pw").await;
    let _stream = Sse::open(&s, &jwt, None).await;
    for i in 0..3 {
        insert(&c, &s, &jwt, "x", json!(i)).await;
    }
    post(
        &c,
        s.url("/login"),
        json!({"username": "m", "password": "wrong"}),
    )
    .await;
    let after = scrape(&get(true).await);
    let v = |m: &BTreeMap<String, f64>, k: &str| {
        *m.get(k).unwrap_or_else(|| panic!("{k} missing from {m:?}"))
    };
    assert_eq!(
        v(&after, "broker_inserts_total{}") - v(&before, "broker_inserts_total{}"),
        3.0
    );
    assert_eq!(
        v(
            &after,
            "broker_http_requests_total{route=/insert,status=200}"
        ),
        3.0
    );
    assert_eq!(v(&after, "broker_auth_failures_total{}"), 1.0);
    assert_eq!(v(&after, "broker_sse_subscribers{}"), 1.0);
    assert_eq!(v(&after, "broker_users{}"), 1.0);
    assert!(v(&after, "broker_log_cursor{}") >= 4.0);
    assert!(v(&after, "broker_log_bytes{}") > 0.0);
    assert_eq!(v(&after, "broker_log_segments{}"), 1.0);
    assert!(
        after.keys().any(|k| k.starts_with("broker_fsync_seconds")),
        "no fsync histogram"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("broker_commit_batch_records")),
        "no batch histogram"
    );
    // The separate listener asks for the token too (an attack review: it served anyone
    // who reached it, while operators took --metrics_token to guard metrics).
    let separate = format!("http://{metrics_addr}/metrics");
    let bare = reqwest::get(&separate).await.unwrap();
    assert_eq!(bare.status(), 401);
    let scraped = c
        .get(&separate)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scrape(&scraped.text().await.unwrap()).contains_key("broker_inserts_total{}"));
    drop(s);
    // Without a token it is open, which only a loopback address may be.
    let open_addr = format!("127.0.0.1:{}", free_port());
    let s = Server::start(&dir.path().join("open"), &["--metrics_addr", &open_addr]);
    let open = reqwest::get(format!("http://{open_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    drop(s);
    let (code, _, stderr) = run_broker(&[
        "--db",
        dir.path().join("exposed").to_str().unwrap(),
        "--ntp",
        "false",
        "--port",
        "0",
        "--metrics_addr",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--metrics_token"), "{stderr}");
}

#[tokio::test]
async fn json_logs_carry_requests_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_env(
        dir.path(),
        &["--log_format", "json"],
        &[("RUST_LOG", "debug,hyper=info,poem=info")],
    );
    let c = client();
    create_user(&c, &s, "logged", "hunter2-secret", "t").await;
    let jwt = login(&c, &s, "logged", "hunter2-secret").await;
    post(
        &c,
        s.url("/login"),
        json!({"username": "logged", "password": "wrong-secret-pw"}),
    )
    .await;
    insert(&c, &s, &jwt, "e", json!(1)).await;
    assert_eq!(s.terminate(), Some(0));
    let logs = s.stderr();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["route"] == "/insert" && l["fields"]["status"] == 200),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["fields"]["status"] == 401),
        "{logs}"
    );
    for secret in [
        "hunter2-secret",
        "wrong-secret-pw",
        "$argon2",
        jwt.as_str(),
        ADMIN,
        JWT_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret reached the log: {secret}");
    }
}

/// The scheduling policy of the server's writer thread (`/proc/<pid>/task/<tid>/stat`
/// field 41): 0 is SCHED_OTHER, 3 SCHED_BATCH.
fn writer_policy(pid: u32) -> u32 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != "broker-writer" {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        // Fields after the command name, which is in parentheses: field 3 is the first.
        let (_, after) = stat.rsplit_once(')').unwrap();
        let fields: Vec<&str> = after.split_whitespace().collect();
        return fields[41 - 3].parse().unwrap();
    }
    panic!("no broker-writer thread in {pid}");
}

#[test]
fn the_writer_yields_to_requests_only_when_nothing_waits_for_an_fsync() {
    for (fsync, policy) in [("never", 3), ("always", 0), ("interval:100", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(dir.path(), &["--fsync", fsync]);
        assert_eq!(writer_policy(s.pid()), policy, "--fsync {fsync}");
    }
}
