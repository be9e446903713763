//! Shared test support: start the real `broker` binary on a loopback port with a fresh data
//! directory, speak its HTTP API, and read raw SSE frames.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod tools;

/// The admin token every test server gets (unless a test names its own): long and not the
/// well-known default, which a server behind a proxy refuses.
pub const ADMIN: &str = "test-admin-9f86d081884c7d659a2feaa0c55ad015";
/// The JWT secret every test server gets (unless a test names its own).
pub const JWT_SECRET: &str = "test-jwt-3a7bd3e2360a3d29eea436fcfb7e44c7";

/// A running server process.
pub struct Server {
    child: Child,
    pub base: String,
    pub db: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Runs the binary with `args` to completion and returns (exit code, stdout, stderr). A
/// run past a minute (a server that started where it should have refused) is killed and
/// returns code -1.
pub fn run_broker(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run broker");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for broker") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

/// `--jwt_secret` and `--admin_token` for a test server, each unless `extra` or `env` set it.
fn secret_flags(extra: &[&str], env: &[(&str, &str)], launch: Launch) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if launch.as_documented {
        return flags;
    }
    for (flag, var, value) in [
        ("--jwt_secret", "BROKER_JWT_SECRET", JWT_SECRET),
        ("--admin_token", "BROKER_ADMIN_TOKEN", ADMIN),
    ] {
        if !extra.contains(&flag) && !env.iter().any(|(k, _)| *k == var) {
            flags.extend([flag, value]);
        }
    }
    flags
}

/// How a test server is started, beyond its flags.
#[derive(Clone, Copy)]
struct Launch {
    /// Whether `--listen 127.0.0.1` is named (else the default address is used).
    name_listen: bool,
    /// Whether the secrets stay at their well-known defaults, as a user's first run has them.
    as_documented: bool,
}

impl Launch {
    const TEST: Launch = Launch {
        name_listen: true,
        as_documented: false,
    };
    const DOCUMENTED: Launch = Launch {
        name_listen: false,
        as_documented: true,
    };
}

impl Server {
    /// Starts a server on `db` (kept across restarts by the caller) with extra flags.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        Self::try_start(db, extra)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// Starts a server, or returns everything it printed to stderr if it exits instead.
    // The child is waited for on every path: here on failure, in `Drop` otherwise.
    #[allow(clippy::zombie_processes)]
    pub fn try_start(db: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_env(db, extra, &[])
    }

    /// Like [`Server::try_start`], with extra environment variables.
    #[allow(clippy::zombie_processes)]
    pub fn try_start_env(
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        Self::spawn(db, extra, env, Launch::TEST)
    }

    /// Starts a server without naming `--listen`: where the default puts it.
    pub fn start_default_listen(db: &Path) -> Server {
        Self::spawn(db, &[], &[], Launch::DOCUMENTED)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// Starts another build of the server (the release binary) on `db` with extra flags.
    pub fn start_binary(binary: &Path, db: &Path, extra: &[&str]) -> Server {
        Self::spawn_binary(binary, db, extra, &[], Launch::TEST, None)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// Like [`Server::start_binary`], with the secrets left at their defaults, as the
    /// README's walk-throughs run it (on loopback, named by `--listen`).
    pub fn start_binary_with_default_secrets(binary: &Path, db: &Path, extra: &[&str]) -> Server {
        let launch = Launch {
            name_listen: true,
            as_documented: true,
        };
        Self::spawn_binary(binary, db, extra, &[], launch, None)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    fn spawn(
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Result<Server, String> {
        Self::spawn_binary(
            Path::new(env!("CARGO_BIN_EXE_broker")),
            db,
            extra,
            env,
            launch,
            None,
        )
    }

    /// A server that may write no file larger than `bytes` (`RLIMIT_FSIZE`, as `ulimit -f`
    /// or systemd's `LimitFSIZE=` set it): a disk that refuses to grow the log.
    pub fn start_with_file_size_limit(db: &Path, extra: &[&str], bytes: u64) -> Server {
        Self::spawn_binary(
            Path::new(env!("CARGO_BIN_EXE_broker")),
            db,
            extra,
            &[],
            Launch::TEST,
            Some(bytes),
        )
        .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    #[allow(clippy::zombie_processes)]
    fn spawn_binary(
        binary: &Path,
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        launch: Launch,
        file_size_limit: Option<u64>,
    ) -> Result<Server, String> {
        let mut command = Command::new(binary);
        if let Some(bytes) = file_size_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit(2), which is async-signal-safe, on a limit struct on its stack.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .arg("--db")
            .arg(db)
            .args(if launch.name_listen {
                &["--listen", "127.0.0.1"][..]
            } else {
                &[][..]
            })
            .args(if extra.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            // Test traffic stays on this machine: no NTP to public pools unless a test
            // points it at its own responder.
            .args(if extra.contains(&"--ntp_servers") {
                &[][..]
            } else {
                &["--ntp", "false"][..]
            })
            // Secrets as an operator sets them, unless the test names its own or starts
            // the server as the README does.
            .args(secret_flags(extra, env, launch))
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // Let the stderr thread drain.
                std::thread::sleep(Duration::from_millis(100));
                return Err(stderr.lock().unwrap().join("\n"));
            }
            if let Some(url) = line.trim().strip_prefix("broker listening on ") {
                let base = url.to_owned();
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while out.read_line(&mut sink).unwrap_or(0) > 0 {
                        sink.clear();
                    }
                });
                return Ok(Server {
                    child,
                    base,
                    db: db.to_owned(),
                    stderr,
                });
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Everything the server printed to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a server with extra environment variables.
    pub fn start_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::try_start_env(db, extra, env)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POST `body` (as JSON text) and return status and parsed JSON body.
pub async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    post_raw(c, url, body.to_string(), None).await
}

/// POST raw text with an optional Authorization header.
pub async fn post_raw(
    c: &reqwest::Client,
    url: String,
    body: String,
    auth: Option<&str>,
) -> (u16, Value) {
    let mut req = c.post(url).body(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub async fn create_user(
    c: &reqwest::Client,
    s: &Server,
    username: &str,
    password: &str,
    tenant: &str,
) -> u16 {
    post(
        c,
        s.url("/create_user"),
        json!({"username": username, "password": password, "admin_token": ADMIN, "tenant_name": tenant}),
    )
    .await
    .0
}

pub async fn login(c: &reqwest::Client, s: &Server, username: &str, password: &str) -> String {
    let (status, body) = post(
        c,
        s.url("/login"),
        json!({"username": username, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "login failed: {body}");
    body["jwt"].as_str().unwrap().to_owned()
}

/// Inserts an event; returns (status, body).
pub async fn insert(
    c: &reqwest::Client,
    s: &Server,
    jwt: &str,
    event: &str,
    data: Value,
) -> (u16, Value) {
    post_raw(
        c,
        s.url("/insert"),
        json!({"event": event, "data": data}).to_string(),
        Some(&format!("Bearer {jwt}")),
    )
    .await
}

/// The newest durable cursor, as the admin reads it (`/server_stats`).
pub async fn admin_cursor(c: &reqwest::Client, s: &Server) -> u64 {
    let (status, stats) = post(c, s.url("/server_stats"), json!({"admin_token": ADMIN})).await;
    assert_eq!(status, 200, "{stats}");
    stats["cursor"].as_u64().unwrap()
}

/// GET `path` with the admin token (`X-Admin-Token`); its JSON answer.
pub async fn get_admin_json(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    c.get(s.url(path))
        .header("X-Admin-Token", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET path` with `jwt` as its bearer token; the answer's JSON, whatever its status.
pub async fn get_json(c: &reqwest::Client, s: &Server, path: &str, jwt: &str) -> Value {
    c.get(s.url(path))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One SSE frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
    pub retry: Option<String>,
}

impl Frame {
    pub fn cursor(&self) -> u64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// A raw SSE reader over one HTTP response.
pub struct Sse {
    pub resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Opens `/sse` with a bearer token and optional `Last-Event-ID`.
    pub async fn open(s: &Server, jwt: &str, last_event_id: Option<&str>) -> Sse {
        let c = reqwest::Client::new();
        let mut req = c
            .get(s.url("/sse"))
            .header("authorization", format!("Bearer {jwt}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("sse request");
        assert_eq!(resp.status(), 200, "sse refused");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// Wraps a response already obtained.
    pub fn from_response(resp: reqwest::Response) -> Sse {
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next frame (comments included), or None on end of stream or after `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        frame.comment = true;
                    } else if let Some((field, value)) = line.split_once(": ") {
                        match field {
                            "id" => frame.id = Some(value.to_owned()),
                            "event" => frame.event = Some(value.to_owned()),
                            "data" => data.push(value.to_owned()),
                            "retry" => frame.retry = Some(value.to_owned()),
                            other => panic!("unknown SSE field {other:?} in {block:?}"),
                        }
                    }
                }
                frame.data = data.join("\n");
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => self
                    .buf
                    .push_str(std::str::from_utf8(&bytes).expect("utf-8 sse")),
                _ => return None,
            }
        }
    }

    /// The next event frame (skipping comments and `retry:`), or None after `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let frame = self.next_frame(wait).await?;
            if frame.comment || (frame.event.is_none() && frame.id.is_none()) {
                continue;
            }
            return Some(frame);
        }
    }

    /// Collects `n` events, failing the test if they do not arrive within `wait` each.
    pub async fn take(&mut self, n: usize, wait: Duration) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match self.next_event(wait).await {
                Some(f) => out.push(f),
                None => panic!("only {i} of {n} events arrived: {out:?}"),
            }
        }
        out
    }
}

/// A loopback port that was free a moment ago (for tests that restart on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the QR code of a base64 PNG and returns the text it encodes.
pub fn read_qr(base64_png: &str) -> String {
    use base64::Engine as _;
    let png_bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_png)
        .unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code");
    grids[0].decode().unwrap().1
}

/// Waits (bounded) until the server's stderr contains `needle`.
pub async fn wait_for_log(s: &Server, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if s.stderr().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub const WAIT: Duration = Duration::from_secs(10);

/// A `/metrics` gauge or counter of a server started with `--metrics_token m`.
pub async fn metric(s: &Server, name: &str) -> f64 {
    let text = metrics_text(s).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// `/metrics` of a server started with `--metrics_token m`, as text.
pub async fn metrics_text(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .bearer_auth("m")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The claims of a JWT, decoded without checking the signature.
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// An HS256 JWT over `claims`, signed with `secret` (as an attacker who knows it would).
pub fn forge_jwt(secret: &[u8], claims: Value) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}
