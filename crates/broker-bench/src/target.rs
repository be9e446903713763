//! The server under load: a `broker` (or baseline) process this run starts on a loopback
//! port with a fresh data directory, or one already running that the operator points at.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{ClientError, Conn};

/// The admin token of servers this run starts.
pub const ADMIN_TOKEN: &str = "bench-admin-token";
/// The password of users this run creates or seeds.
pub const PASSWORD: &str = "bench-password-7c1e";

/// A directory removed when dropped (the run's data directories).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// A new empty directory under `base` (the system temp dir by default).
    pub fn new(base: Option<&Path>, label: &str) -> std::io::Result<ScratchDir> {
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "broker-bench-{label}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        // Owner-only, as the server wants its data directory (it warns otherwise).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server to load.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for /proc readings.
    pub pid: Option<u32>,
    /// The admin token for `/create_user`.
    pub admin_token: String,
    /// Set when this run started the process (it is stopped on drop).
    child: Option<Child>,
}

impl Target {
    /// A server the operator started.
    pub fn external(addr: SocketAddr, pid: Option<u32>, admin_token: String) -> Target {
        Target {
            addr,
            pid,
            admin_token,
            child: None,
        }
    }

    /// Starts `program args…`, waiting for its "listening on http://ADDR" (or https) line.
    pub fn spawn(program: &Path, args: &[String]) -> Result<Target, String> {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                return Err(format!("{} did not start listening", program.display()));
            }
        };
        Ok(Target {
            addr,
            pid: Some(child.id()),
            admin_token: ADMIN_TOKEN.to_owned(),
            child: Some(child),
        })
    }

    /// Starts `program args…` that will listen on `addr`, without waiting for it (the
    /// caller times how long it takes to serve).
    pub fn spawn_unwaited(
        program: &Path,
        args: &[String],
        addr: SocketAddr,
    ) -> Result<Target, String> {
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(Target {
            addr,
            pid: Some(child.id()),
            admin_token: ADMIN_TOKEN.to_owned(),
            child: Some(child),
        })
    }

    /// Asks the process to stop (SIGTERM: a graceful shutdown that writes a checkpoint) and
    /// waits for it.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("the server did not stop within 60 s of SIGTERM".into())
    }

    /// Creates a user (admin API) and returns a JWT for it.
    pub async fn user_jwt(&self, username: &str, tenant: &str) -> Result<String, ClientError> {
        let mut conn = Conn::connect(self.addr).await?;
        self.user_jwt_over(&mut conn, username, tenant).await
    }

    /// Creates a user (admin API) over `conn` and returns a JWT for it.
    pub async fn user_jwt_over<S>(
        &self,
        conn: &mut Conn<S>,
        username: &str,
        tenant: &str,
    ) -> Result<String, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        conn.post_json(
            "/create_user",
            None,
            &serde_json::json!({
                "username": username, "password": PASSWORD,
                "admin_token": self.admin_token, "tenant_name": tenant,
            }),
        )
        .await?;
        self.login(conn, username).await
    }

    /// Logs an existing user in.
    pub async fn login<S>(&self, conn: &mut Conn<S>, username: &str) -> Result<String, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let reply = conn
            .post_json(
                "/login",
                None,
                &serde_json::json!({"username": username, "password": PASSWORD}),
            )
            .await?;
        reply["jwt"]
            .as_str()
            .map(str::to_owned)
            .ok_or(ClientError::Protocol("login reply without jwt"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address of a "… listening on http://ADDR" or "… listening on https://ADDR" line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let addr = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))?;
    addr.trim().parse().ok()
}

/// The flags of a `broker` this run starts: loopback, its own data directory, no NTP, and
/// limits opened wide enough for the scenario's connection counts.
pub fn broker_args(db: &Path, fsync: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--ntp",
        "false",
        "--auto_cert",
        "false",
        "--admin_token",
        ADMIN_TOKEN,
        "--max_sse_per_user",
        "1000000",
        "--max_connections",
        "100000",
        "--fsync",
        fsync,
        "--db",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(db.display().to_string());
    args.extend(extra.iter().cloned());
    args
}

/// The `broker` binary beside this one (cargo builds both into one directory).
pub fn default_broker() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("broker-bench"));
    me.with_file_name("broker")
}

/// Reads a /proc figure of a process: `VmRSS` in bytes, CPU ticks, open descriptors.
pub mod proc {
    /// Resident set size in bytes.
    pub fn rss_bytes(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// User + system CPU time in clock ticks (USER_HZ, 100 on Linux).
    pub fn cpu_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    /// Open file descriptors.
    pub fn fds(pid: u32) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address_over_http_and_https() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        for line in [
            "broker listening on http://127.0.0.1:4321",
            "broker listening on https://127.0.0.1:4321",
            "ceiling listening on https://127.0.0.1:4321 ",
        ] {
            assert_eq!(listening_addr(line), Some(addr), "{line}");
        }
        for line in [
            "listening on ftp://127.0.0.1:4321",
            "listening on https://localhost:4321",
            "listening on 127.0.0.1:4321",
            "broker ready",
        ] {
            assert_eq!(listening_addr(line), None, "{line}");
        }
    }
}
