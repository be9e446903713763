//! Password-reset codes: drawn at random by the server when the admin asks (`/create_totp`),
//! stored only as a digest, accepted once.
//!
//! Why not a TOTP of the user's secret, as before: every moment had two valid codes that
//! nobody issued (an online guesser's odds grew with time, not with issued codes), and anyone
//! holding the TOTP secret — an authenticator app's backup — could reset the password.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Digits in a code: 10⁸ codes against at most five tries per issued code.
pub const DIGITS: usize = 8;

/// A fresh code of [`DIGITS`] decimal digits from the OS's random source.
pub fn generate() -> String {
    let mut code = String::with_capacity(DIGITS);
    while code.len() < DIGITS {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).expect("the OS random source");
        // 250 = 25 × 10: rejecting 250..=255 keeps every digit equally likely.
        if byte[0] < 250 {
            code.push(char::from(b'0' + byte[0] % 10));
        }
    }
    code
}

/// The digest stored in the log: SHA-256 over a domain tag, the username and the code, so a
/// digest is worth nothing for another user or another purpose.
pub fn digest(username: &str, code: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"broker password reset code\0");
    hasher.update(username.as_bytes());
    hasher.update([0]);
    hasher.update(code.trim().as_bytes());
    hasher.finalize().into()
}

/// Whether `code` is the one `stored` was made from, in constant time.
pub fn matches(username: &str, code: &str, stored: &[u8; 32]) -> bool {
    bool::from(digest(username, code).ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_digits_and_match_only_their_digest() {
        let a = generate();
        assert_eq!(a.len(), DIGITS);
        assert!(a.bytes().all(|b| b.is_ascii_digit()), "{a}");
        let distinct: std::collections::HashSet<String> = (0..50).map(|_| generate()).collect();
        assert!(distinct.len() > 45, "codes repeat: {distinct:?}");
        let stored = digest("bob", &a);
        assert!(matches("bob", &a, &stored));
        assert!(
            matches("bob", &format!(" {a}\n"), &stored),
            "pasted with spaces"
        );
        assert!(!matches("ann", &a, &stored), "bound to the user");
        assert!(!matches("bob", "00000000", &stored) || a == "00000000");
    }
}
