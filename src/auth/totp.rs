//! TOTP codes (RFC 6238, SHA-1, 6 digits) for two-factor login.

use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// A fresh random 160-bit TOTP secret.
pub fn new_secret() -> Vec<u8> {
    Secret::generate().as_bytes().to_vec()
}

/// The step of login codes, in seconds: what authenticator apps implement.
pub const LOGIN_STEP: u64 = 30;

fn totp(secret: Vec<u8>, step: u64, skew: u16) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(step)
        .with_skew(skew)
        .with_secret(secret)
        .build()
        .ok()
}

/// The time step of a valid login code for `secret` at `now_s` (±1 step of 30 s), if any.
/// Callers keep the last accepted step per user so that a code logs in only once.
pub fn check_login_code(secret: &[u8], code: &str, now_s: u64) -> Option<u64> {
    totp(secret.to_vec(), LOGIN_STEP, 1)?.check(code, now_s)
}

/// The `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`
/// URI authenticator apps enrol from.
///
/// Every parameter is spelled out (totp-rs leaves the defaults implicit), because some apps
/// only trust what the URI says.
pub fn enrolment_uri(secret: &[u8], issuer: &str, account: &str) -> Result<String, String> {
    if issuer.is_empty() || issuer.contains(':') || account.contains(':') {
        return Err("issuer: must be non-empty and contain no ':'".to_owned());
    }
    let base32 = Secret::from(secret.to_vec()).to_base32();
    let (issuer, account) = (percent_encode(issuer), percent_encode(account));
    Ok(format!(
        "otpauth://totp/{issuer}:{account}?secret={base32}&issuer={issuer}&algorithm=SHA1&digits=6&period={LOGIN_STEP}"
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The password-reset key: derived from the TOTP secret but separate from it, so that a
/// login code never works as a reset code or the other way round.
fn reset_secret(secret: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"broker password reset\0");
    hasher.update(secret);
    hasher.finalize().to_vec()
}

/// The password-reset code of the current `duration_s`-long step.
pub fn reset_code(secret: &[u8], duration_s: u64, now_s: u64) -> Option<String> {
    totp(reset_secret(secret), duration_s.max(1), 0).map(|t| t.generate(now_s).to_string())
}

/// The step of a valid reset code: the current step or the one before, so a code stays
/// valid at least `duration_s` seconds (and at most twice that).
pub fn check_reset_code(secret: &[u8], code: &str, duration_s: u64, now_s: u64) -> Option<u64> {
    let duration = duration_s.max(1);
    let t = totp(reset_secret(secret), duration, 0)?;
    let current = now_s / duration;
    [current, current.saturating_sub(1)]
        .into_iter()
        .find(|step| t.generate(step * duration).to_string() == code)
}

/// The current login code for `secret` (used by tests and the admin tools).
pub fn login_code(secret: &[u8], now_s: u64) -> Option<String> {
    totp(secret.to_vec(), LOGIN_STEP, 1).map(|t| t.generate(now_s).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_codes_check() {
        let secret = super::new_secret();
        let code = super::login_code(&secret, 1_000_000).unwrap();
        assert_eq!(
            super::check_login_code(&secret, &code, 1_000_000),
            Some(1_000_000 / 30)
        );
        assert!(super::check_login_code(&secret, &code, 1_000_029).is_some());
        assert!(super::check_login_code(&secret, &code, 1_000_200).is_none());
        assert!(super::check_login_code(&secret, "12345x", 1_000_000).is_none());
    }

    #[test]
    fn reset_codes_last_at_least_their_duration_and_differ_from_login_codes() {
        let secret = super::new_secret();
        let code = super::reset_code(&secret, 300, 1_000_000).unwrap();
        let step = 1_000_000 / 300;
        assert_eq!(
            super::check_reset_code(&secret, &code, 300, 1_000_000),
            Some(step)
        );
        assert_eq!(
            super::check_reset_code(&secret, &code, 300, 1_000_299),
            Some(step)
        );
        assert_eq!(
            super::check_reset_code(&secret, &code, 300, 1_000_000 + 600),
            None
        );
        let login = super::login_code(&secret, 1_000_000).unwrap();
        assert_ne!(login, code);
    }

    #[test]
    fn enrolment_uri_is_standard() {
        let uri = super::enrolment_uri(&super::new_secret(), "Acme", "bob").unwrap();
        assert!(uri.starts_with("otpauth://totp/Acme:bob?secret="), "{uri}");
        assert!(
            uri.ends_with("&issuer=Acme&algorithm=SHA1&digits=6&period=30"),
            "{uri}"
        );
        let spaced = super::enrolment_uri(&super::new_secret(), "My Co", "b@x").unwrap();
        assert!(
            spaced.starts_with("otpauth://totp/My%20Co:b%40x?"),
            "{spaced}"
        );
        assert!(super::enrolment_uri(&super::new_secret(), "A:B", "bob").is_err());
    }
}
