//! TLS for `insert --tls`: a self-signed certificate for `localhost`/127.0.0.1 made at start
//! (rcgen), the ceiling's server configuration (ALPN `h2` and `http/1.1`, as Broker offers)
//! and the clients' configuration trusting that certificate alone, with the protocol each
//! client speaks as its only ALPN offer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The name clients verify the certificate against (also in its SANs, with 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// The protocols loaded over TLS, each offered alone by its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// HTTP/1.1: one keep-alive connection per client, `broker-bench`'s own client.
    Http1,
    /// HTTP/2: one connection per client (hyper's client), one request in flight on it.
    H2,
}

impl Protocol {
    /// How rows name it (`ceiling https/1.1`, `broker h2 fsync=always`).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "https/1.1",
            Protocol::H2 => "h2",
        }
    }

    /// Its ALPN identifier.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::H2 => b"h2",
        }
    }
}

/// A self-signed certificate and its key, written as PEM files into a directory.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_path: PathBuf,
    /// The private key (PKCS#8), PEM.
    pub key_path: PathBuf,
    cert: CertificateDer<'static>,
}

impl SelfSigned {
    /// Makes a certificate for `localhost` and 127.0.0.1 and writes it into `dir`.
    pub fn generate(dir: &Path) -> Result<SelfSigned, String> {
        let made =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned(), "127.0.0.1".into()])
                .map_err(|e| format!("making a self-signed certificate: {e}"))?;
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, made.cert.pem())
            .and_then(|()| std::fs::write(&key_path, made.key_pair.serialize_pem()))
            .map_err(|e| format!("writing the certificate into {}: {e}", dir.display()))?;
        Ok(SelfSigned {
            cert_path,
            key_path,
            cert: made.cert.der().clone(),
        })
    }

    /// A client trusting this certificate only, offering `protocol` alone by ALPN.
    pub fn client(&self, protocol: Protocol) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .map_err(|e| format!("trusting the certificate: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![protocol.alpn().to_vec()];
        Ok(Client {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            protocol,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Named, not the process default: nothing here depends on which providers the
    // dependency tree enables.
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The ceiling's TLS configuration from PEM files: ALPN `h2` then `http/1.1`, as Broker's.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Opens TLS connections for one protocol.
#[derive(Clone)]
pub struct Client {
    connector: tokio_rustls::TlsConnector,
    protocol: Protocol,
}

impl Client {
    /// Connects (Nagle off) and handshakes; fails unless the server chose this client's
    /// protocol by ALPN (a server without ALPN, or one that does not offer it, is refused
    /// rather than measured as something it is not).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let tls = self.connector.connect(name, tcp).await?;
        let chosen = tls.get_ref().1.alpn_protocol();
        if chosen != Some(self.protocol.alpn()) {
            return Err(std::io::Error::other(format!(
                "the server did not choose {} by ALPN (chose {:?})",
                self.protocol.label(),
                chosen.map(String::from_utf8_lossy)
            )));
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one TLS handshake with `alpn` offered, on a loopback port.
    async fn one_handshake(cert: &SelfSigned, alpn: &[&[u8]]) -> SocketAddr {
        let mut config = server_config(&cert.cert_path, &cert.key_path).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn clients_trust_the_certificate_and_insist_on_their_protocol() {
        let dir = crate::target::ScratchDir::new(None, "tls-test").unwrap();
        let cert = SelfSigned::generate(&dir.0).unwrap();
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        for protocol in [Protocol::Http1, Protocol::H2] {
            let addr = one_handshake(&cert, both).await;
            let tls = cert.client(protocol).unwrap().connect(addr).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(protocol.alpn()));
        }
        // A server offering only HTTP/1.1 is refused by the HTTP/2 client, not measured.
        let addr = one_handshake(&cert, &[b"http/1.1"]).await;
        assert!(
            cert.client(Protocol::H2)
                .unwrap()
                .connect(addr)
                .await
                .is_err()
        );
        // Another certificate is not trusted.
        let other = crate::target::ScratchDir::new(None, "tls-test").unwrap();
        let other = SelfSigned::generate(&other.0).unwrap();
        let addr = one_handshake(&cert, both).await;
        assert!(
            other
                .client(Protocol::Http1)
                .unwrap()
                .connect(addr)
                .await
                .is_err()
        );
    }
}
