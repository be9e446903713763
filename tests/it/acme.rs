//! Automatic certificates end to end against pebble, the ACME test server, all on loopback:
//! the server obtains a certificate, a TLS client trusting pebble's chain completes a
//! request, the cache under `--certs` is owner-only, and a restart serves the cached
//! certificate with pebble gone.
//!
//! Needs pebble: a plain `cargo nextest run` lists this test as skipped, and `scripts/test.sh`
//! installs it and runs it (`common::tools`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

struct Pebble {
    child: Child,
    directory: String,
    management: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts pebble with a TLS certificate for its API signed by a CA written to `ca_path`.
#[allow(clippy::zombie_processes)]
fn start_pebble(dir: &Path, ca_path: &Path) -> Pebble {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer equals its subject looks self-signed to OpenSSL.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble API test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(ca_path, ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    let (api, management) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{api}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": free_port(),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let mut child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        // Challenges are not validated (everything is on loopback), no random delays or
        // nonce rejections: the test checks Broker's side of ACME, deterministically.
        .env("PEBBLE_VA_ALWAYS_VALID", "1")
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("ACME directory available") || line.contains("Listening on") {
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return Pebble {
                child,
                directory: format!("https://127.0.0.1:{api}/dir"),
                management: format!("https://127.0.0.1:{management}"),
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("pebble did not start: {line}");
}

/// curl to `https://broker.test:<port>/` trusting only `ca`.
fn curl_broker(port: u16, ca: &Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("broker.test:{port}:127.0.0.1")])
        .arg(format!("https://broker.test:{port}/"))
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
#[ignore = "needs pebble (scripts/test.sh installs it and runs this)"]
fn a_certificate_from_pebble_is_served_and_cached_across_restarts() {
    crate::common::tools::pebble();
    // SAFETY: umask(2) only replaces a process-wide integer; it cannot fail. The usual
    // permissive value, inherited by the server, so the modes checked below are its own doing.
    unsafe {
        libc::umask(0o022);
    }
    let dir = tempfile::tempdir().unwrap();
    let api_ca = dir.path().join("pebble-api-ca.pem");
    let pebble = start_pebble(dir.path(), &api_ca);
    let certs = dir.path().join("certs");
    let db = dir.path().join("db");
    let port = free_port();
    let port_text = port.to_string();
    let directory = pebble.directory.clone();
    let flags = [
        "--secure",
        "true",
        "--auto_cert",
        "true",
        "--domain",
        "broker.test",
        "--acme_directory",
        &directory,
        "--acme_ca_file",
        api_ca.to_str().unwrap(),
        "--acme_email",
        "ops@broker.test",
        "--certs",
        certs.to_str().unwrap(),
        "--port",
        &port_text,
        "--jwt_secret",
        "acme-test-secret",
        "--admin_token",
        "acme-test-admin",
    ];
    let s = Server::start(&db, &flags);

    // Pebble's issuing root, fetched from its management interface.
    let root = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&api_ca)
        .arg(format!("{}/roots/0", pebble.management))
        .output()
        .unwrap();
    assert!(
        root.status.success(),
        "cannot fetch pebble's root: {}",
        String::from_utf8_lossy(&root.stderr)
    );
    let root_path = dir.path().join("pebble-root.pem");
    std::fs::write(&root_path, &root.stdout).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = curl_broker(port, &root_path);
        if ok {
            assert!(out.contains("\"status\":\"ok\""), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate after 60 s: {out}\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let cached: Vec<_> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        cached.len() >= 2,
        "account and certificate are cached under --certs ({cached:?})"
    );
    // The cache holds the account key and the certificate's private key.
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&certs), 0o700, "{}", certs.display());
    for file in &cached {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // Restart with pebble gone: the cached certificate is served at once.
    drop(s);
    drop(pebble);
    let s = Server::start(&db, &flags);
    let (ok, out) = curl_broker(port, &root_path);
    assert!(
        ok,
        "the cached certificate was not served after a restart: {out}\n{}",
        s.stderr()
    );
}
