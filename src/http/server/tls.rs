//! TLS: one acceptor for both ways of getting a certificate.
//!
//! Each TCP connection is handshaken in its own task (bounded by a timeout, so a silent
//! client cannot hold the accept loop): the ClientHello is read first, an ACME TLS-ALPN-01
//! validation gets the challenge certificate, everyone else gets the served certificate —
//! from files (reloaded when they change or on SIGHUP) or from ACME (rustls-acme, which
//! orders, caches under `--certs` and renews).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::limits::{Admission, Limited};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often certificate files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// How long before its expiry a served certificate is warned about, daily.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A certificate and key read from PEM files, swapped in place when the files change.
pub struct FileCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    // std RwLock: read once per handshake, written only on reload.
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
    /// The served leaf certificate's `notAfter`, Unix seconds (0: unreadable).
    not_after: AtomicI64,
    /// The day (Unix seconds / 86,400) of the last expiry warning, so it comes once a day.
    warned_on: AtomicI64,
}

/// The leaf certificate's `notAfter` in Unix seconds, if it parses as X.509.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// What to say about a certificate expiring at `not_after` (Unix seconds) at `now`: nothing
/// while it has more than [`EXPIRY_WARNING`] left.
pub fn expiry_warning(not_after: i64, now: i64) -> Option<String> {
    let left = not_after.saturating_sub(now);
    if left <= 0 {
        Some(format!(
            "the served TLS certificate expired {} day(s) ago: clients refuse it; replace the files (a SIGHUP or the next check within 5 s picks them up)",
            left.unsigned_abs() / 86_400
        ))
    } else if left <= EXPIRY_WARNING.as_secs() as i64 {
        Some(format!(
            "the served TLS certificate expires in {} day(s): renew it and replace the files",
            left / 86_400
        ))
    } else {
        None
    }
}

/// Unix seconds now: certificate validity, as clients judge it, by the machine's clock.
fn unix_now() -> i64 {
    crate::coarse_clock::unix_ms() / 1000
}

impl fmt::Debug for FileCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCert")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn modified(paths: [&Path; 2]) -> Option<SystemTime> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

/// The largest PEM file `--cert_path` or `--key_path` may name: a chain of a few certificates
/// and a key take a few KiB, so this is generous, and a file that is not PEM cannot make a
/// reload read it whole.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads the PEM file `flag` names, refusing anything but a regular file of at most
/// [`MAX_PEM_BYTES`] (the error names the flag and the file).
///
/// Why: a FIFO put in place of the certificate blocked the reload's `open` forever. The open
/// follows links (certbot's `live/` names are links) but never waits (`O_NONBLOCK`: a FIFO's
/// open returns at once; Linux ignores it for a regular file), and the type and size are
/// checked on the open descriptor.
fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| format!("{flag} {}: {why}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "it is {}, not a regular file; nothing was read from it",
            crate::log::segment::file_kind(&meta.file_type())
        )));
    }
    let too_large = |len: u64| {
        fail(format!(
            "it is {len} bytes, more than the {MAX_PEM_BYTES} a PEM certificate chain or key may be; nothing was used from it"
        ))
    };
    if meta.len() > MAX_PEM_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a PEM chain and a PEM key (PKCS#8, PKCS#1 RSA or SEC1 EC) into a certified key.
///
/// Blocking (file reads): [`FileCert::watch`] runs it on the blocking pool.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let chain = read_pem("--cert_path", cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--cert_path {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--cert_path {}: no PEM certificate in it",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem("--key_path", key_path)?)
        .map_err(|e| format!("--key_path {}: {e}", key_path.display()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!(
            "{} and {} do not make a usable certificate: {e}",
            cert_path.display(),
            key_path.display()
        )
    })
}

impl FileCert {
    /// Loads the files; an error names the file and the problem.
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<Self>, String> {
        let key = load_certified_key(&cert_path, &key_path)?;
        let stamp = modified([&cert_path, &key_path]);
        let files = Arc::new(FileCert {
            not_after: AtomicI64::new(not_after(&key).unwrap_or(0)),
            warned_on: AtomicI64::new(i64::MIN),
            cert_path,
            key_path,
            current: RwLock::new((Arc::new(key), stamp)),
        });
        files.check_expiry(unix_now());
        Ok(files)
    }

    /// The served leaf certificate's `notAfter` (Unix seconds; 0 when it could not be read).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Warns (once a day) when the served certificate has expired or expires within
    /// [`EXPIRY_WARNING`]: rustls serves an expired certificate as any other, and only the
    /// clients would say so.
    fn check_expiry(&self, now: i64) {
        let not_after = self.not_after();
        if not_after == 0 {
            return;
        }
        let Some(warning) = expiry_warning(not_after, now) else {
            return;
        };
        let today = now.div_euclid(86_400);
        if self.warned_on.swap(today, Ordering::Relaxed) != today {
            tracing::warn!(cert = %self.cert_path.display(), not_after, "{warning}");
        }
    }

    /// Re-reads the files if they changed (or always, with `force`). A broken new pair (no
    /// regular file, too large, no usable PEM) is reported and the served certificate kept.
    ///
    /// Blocking (file reads): [`Self::watch`] runs it on the blocking pool.
    pub fn reload(&self, force: bool) {
        let stamp = modified([&self.cert_path, &self.key_path]);
        if !force && stamp == self.current.read().expect("cert lock").1 {
            self.check_expiry(unix_now());
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                self.not_after
                    .store(not_after(&key).unwrap_or(0), Ordering::Relaxed);
                *self.current.write().expect("cert lock") = (Arc::new(key), stamp);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                // A new pair is judged at once, not on the day's next check.
                self.warned_on.store(i64::MIN, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; still serving the previous one")
            }
        }
        self.check_expiry(unix_now());
    }

    /// Watches the files (and SIGHUP) for the life of the process. Each reload runs on the
    /// blocking pool: on a runtime worker, a read that blocked (a FIFO put in place of the
    /// certificate did, before [`read_pem`]) stalled the tasks queued behind it, so HTTPS
    /// requests timed out, and the stop waited for that worker forever.
    pub fn watch(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let forced = match hangup.as_mut() {
                    Some(signal) => tokio::select! {
                        _ = signal.recv() => true,
                        _ = tokio::time::sleep(RELOAD_EVERY) => false,
                    },
                    None => {
                        tokio::time::sleep(RELOAD_EVERY).await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tokio::time::sleep(RELOAD_EVERY).await;
                    false
                };
                let files = Arc::clone(&me);
                if let Err(e) = tokio::task::spawn_blocking(move || files.reload(forced)).await {
                    tracing::warn!(error = %e, "TLS certificate reload failed; still serving the previous one");
                }
            }
        });
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().expect("cert lock").0))
    }
}

/// Where certificates come from.
#[derive(Clone)]
pub enum CertSource {
    /// PEM files.
    Files(Arc<FileCert>),
    /// ACME: the certificate resolver and the TLS-ALPN-01 challenge configuration.
    Acme {
        /// Serves the obtained certificate.
        resolver: Arc<dyn ResolvesServerCert>,
        /// Answers validation handshakes.
        challenge: Arc<ServerConfig>,
    },
}

/// How long a start waits for a cached certificate to be loaded before it serves.
const CACHED_CERT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts ACME for `domains`: orders or loads a cached certificate, renews it, forever.
/// With a certificate in the cache, it returns once that one is deployed (at most
/// [`CACHED_CERT_WAIT`]): a handshake before then found no certificate and was refused, so a
/// restart briefly refused its clients.
pub async fn acme(
    domains: &[String],
    directory: &str,
    email: Option<&str>,
    cache: &Path,
    ca_file: Option<&Path>,
) -> Result<CertSource, String> {
    let mut config = rustls_acme::AcmeConfig::new(domains).directory(directory);
    if let Some(email) = email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    if let Some(ca_file) = ca_file {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("--acme_ca_file {}: {e}", ca_file.display()))?
        {
            let cert = cert.map_err(|e| format!("--acme_ca_file {}: {e}", ca_file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--acme_ca_file {}: {e}", ca_file.display()))?;
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config = config.client_tls_config(Arc::new(client));
    }
    let mut state = config
        .cache(rustls_acme::caches::DirCache::new(cache.to_owned()))
        .state();
    let resolver = state.resolver();
    let challenge = state.challenge_rustls_config();
    let cached = std::fs::read_dir(cache).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("cached_cert_"))
    });
    let (first, first_event) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first = Some(first);
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, "ACME"),
                Err(err) => tracing::warn!(error = %err, "ACME"),
            }
            // The cache is read first: the first event says whether its certificate is in use.
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        }
    });
    if cached
        && tokio::time::timeout(CACHED_CERT_WAIT, first_event)
            .await
            .is_err()
    {
        tracing::warn!("ACME: the cached certificate was not loaded within 5 s; serving anyway");
    }
    Ok(CertSource::Acme {
        resolver,
        challenge,
    })
}

/// A TLS stream over an admitted TCP connection.
pub type Stream = TlsStream<Limited<TcpStream>>;

/// A poem acceptor yielding TLS streams handshaken by background tasks. Connections are
/// admitted under the limits at TCP accept, before the handshake: a handshake in progress
/// holds a connection slot, so silent clients cannot pile up handshakes past the caps.
pub struct TlsAcceptor {
    incoming: mpsc::Receiver<(Stream, SocketAddr)>,
    local: SocketAddr,
}

impl TlsAcceptor {
    /// Accepts on `listener` under `admission`, serving certificates from `source`.
    pub fn new(
        listener: TcpListener,
        source: CertSource,
        admission: Admission,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let resolver: Arc<dyn ResolvesServerCert> = match &source {
            CertSource::Files(files) => Arc::clone(files) as Arc<dyn ResolvesServerCert>,
            CertSource::Acme { resolver, .. } => Arc::clone(resolver),
        };
        let mut served = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        served.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let served = Arc::new(served);
        let challenge = match source {
            CertSource::Acme { challenge, .. } => Some(challenge),
            CertSource::Files(_) => None,
        };
        let (tx, incoming) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let Some(tcp) = admission.admit(tcp, Some(peer.ip())) else {
                    continue;
                };
                let (tx, served, challenge) = (tx.clone(), Arc::clone(&served), challenge.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, served, challenge))
                        .await
                    {
                        Ok(Ok(Some(stream))) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsAcceptor { incoming, local })
    }
}

async fn handshake(
    tcp: Limited<TcpStream>,
    served: Arc<ServerConfig>,
    challenge: Option<Arc<ServerConfig>>,
) -> io::Result<Option<Stream>> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    if let Some(challenge) = challenge
        && rustls_acme::is_tls_alpn_challenge(&start.client_hello())
    {
        let mut tls = start.into_stream(challenge).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut tls).await?;
        return Ok(None);
    }
    start.into_stream(served).await.map(Some)
}

impl Acceptor for TlsAcceptor {
    type Io = Stream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![LocalAddr(self.local.into())]
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        match self.incoming.recv().await {
            Some((io, peer)) => Ok((
                io,
                LocalAddr(self.local.into()),
                RemoteAddr(peer.into()),
                Scheme::HTTPS,
            )),
            None => Err(io::Error::other("the TLS accept loop stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warnings_start_fourteen_days_ahead_and_name_the_days() {
        let now = 1_800_000_000;
        let day = 86_400;
        assert_eq!(expiry_warning(now + 15 * day, now), None);
        assert_eq!(expiry_warning(now + 14 * day + 1, now), None);
        let soon = expiry_warning(now + 14 * day, now).unwrap();
        assert!(soon.contains("expires in 14 day(s)"), "{soon}");
        let soon = expiry_warning(now + 1, now).unwrap();
        assert!(soon.contains("expires in 0 day(s)"), "{soon}");
        let gone = expiry_warning(now, now).unwrap();
        assert!(gone.contains("expired 0 day(s) ago"), "{gone}");
        let gone = expiry_warning(now - 3 * day - 5, now).unwrap();
        assert!(gone.contains("expired 3 day(s) ago"), "{gone}");
        // No overflow at the extremes.
        assert!(expiry_warning(i64::MIN, i64::MAX).is_some());
        assert_eq!(expiry_warning(i64::MAX, i64::MIN), None);
    }
}
