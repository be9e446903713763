//! Biscuit tokens for services that verify Broker's users offline with the public key.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use biscuit_auth::builder::{date, fact, string};
use biscuit_auth::{Algorithm, Biscuit, KeyPair, PrivateKey};

/// Why the biscuit root key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The flag or the file holds no Ed25519 private key.
    #[error("{0}: not an Ed25519 private key in hex: {1}")]
    NotAKey(String, String),
    /// The key file could not be read.
    #[error("cannot read the biscuit key {0}: {1}")]
    Read(std::path::PathBuf, std::io::Error),
    /// A new key could not be written.
    #[error("cannot write the biscuit key {0}: {1}")]
    Write(std::path::PathBuf, std::io::Error),
}

/// Parses an Ed25519 private key given as hex; `source` names where it came from.
pub fn key_from_hex(source: &str, hex: &str) -> Result<KeyPair, KeyError> {
    PrivateKey::from_bytes_hex(hex.trim(), Algorithm::Ed25519)
        .map(|private| KeyPair::from(&private))
        .map_err(|e| KeyError::NotAKey(source.to_owned(), e.to_string()))
}

/// Loads the root key pair from `path`, or creates it there (mode 0600) on first start.
pub fn load_or_create(path: &Path) -> Result<KeyPair, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(hex) => key_from_hex(&path.display().to_string(), &hex),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = KeyPair::new_with_algorithm(Algorithm::Ed25519);
            write_private(path, &keypair.private().to_bytes_hex())
                .map_err(|e| KeyError::Write(path.to_owned(), e))?;
            Ok(keypair)
        }
        Err(e) => Err(KeyError::Read(path.to_owned(), e)),
    }
}

/// Writes a secret file readable by its owner only, durably, without a window where a
/// half-written key could be read back at the next start.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A biscuit whose authority block says who the user is and what they may do:
/// `right("<resource>", "<operation>")` per scope, `user("<name>")`, `tenant("<name>")`,
/// `epoch(<credential epoch>)`, and `check if time($t), $t <= <expiry>`.
pub fn issue(
    root: &KeyPair,
    username: &str,
    tenant: &str,
    scopes: &[String],
    epoch: u64,
    expiry_s: u64,
) -> Result<Vec<u8>, String> {
    let fail = |e: biscuit_auth::error::Token| format!("building the biscuit failed: {e}");
    let mut builder = Biscuit::builder();
    for scope in scopes {
        if let Some((resource, operation)) = scope.split_once(':') {
            builder = builder
                .fact(fact("right", &[string(resource), string(operation)]))
                .map_err(fail)?;
        }
    }
    builder = builder
        .fact(fact("user", &[string(username)]))
        .map_err(fail)?
        .fact(fact("tenant", &[string(tenant)]))
        .map_err(fail)?
        .fact(fact(
            "epoch",
            &[biscuit_auth::builder::int(
                i64::try_from(epoch).unwrap_or(i64::MAX),
            )],
        ))
        .map_err(fail)?;
    let params = HashMap::from([(
        "expiry".to_owned(),
        // A time past what the clock holds (a forged `exp`) is refused, not a panic.
        date(
            &UNIX_EPOCH
                .checked_add(Duration::from_secs(expiry_s))
                .ok_or_else(|| format!("the expiry {expiry_s} is out of range"))?,
        ),
    )]);
    builder = builder
        .code_with_params(
            "check if time($time), $time <= {expiry};",
            params,
            HashMap::new(),
        )
        .map_err(fail)?;
    builder.build(root).map_err(fail)?.to_vec().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_past_the_clock_is_an_error_not_a_panic() {
        let root = KeyPair::new();
        assert!(issue(&root, "u", "t", &[], 1, 2_000_000_000).is_ok());
        let far = issue(&root, "u", "t", &[], 1, u64::MAX).unwrap_err();
        assert!(far.contains("out of range"), "{far}");
    }
}
