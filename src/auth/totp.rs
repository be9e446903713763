//! TOTP codes (RFC 6238, SHA-1, 6 digits) for two-factor login.

use totp_rs::{Algorithm, Builder, Secret};

/// A fresh random 160-bit TOTP secret.
pub fn new_secret() -> Vec<u8> {
    Secret::generate().as_bytes().to_vec()
}

/// Whether `code` is valid for `secret` at `now_s` with a 30-second step (±1 step).
pub fn check_login_code(secret: &[u8], code: &str, now_s: u64) -> bool {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .build()
        .ok()
        .and_then(|totp| totp.check(code, now_s))
        .is_some()
}

/// The current login code for `secret` (used by tests and the admin tools).
pub fn login_code(secret: &[u8], now_s: u64) -> Option<String> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .build()
        .ok()
        .map(|totp| totp.generate(now_s).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_codes_check() {
        let secret = super::new_secret();
        let code = super::login_code(&secret, 1_000_000).unwrap();
        assert!(super::check_login_code(&secret, &code, 1_000_000));
        assert!(super::check_login_code(&secret, &code, 1_000_029));
        assert!(!super::check_login_code(&secret, &code, 1_000_200));
        assert!(!super::check_login_code(&secret, "12345x", 1_000_000));
    }
}
