//! Argon2id password hashing (PHC strings). CPU-bound: callers run these on the blocking pool.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed `phc`).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).ok().is_some_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_then_verify() {
        let phc = super::hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &phc));
        assert!(!super::verify("wrong horse", &phc));
        assert!(!super::verify("correct horse", "not a phc string"));
    }
}
