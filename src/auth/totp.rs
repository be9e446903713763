//! TOTP codes (RFC 6238, SHA-1, 6 digits) for two-factor login. Password-reset codes are
//! not TOTPs: see [`super::reset_code`].

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

/// The longest issuer an enrolment URI takes, in bytes.
pub const MAX_ISSUER_BYTES: usize = 128;

/// The `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`
/// URI authenticator apps enrol from.
///
/// Every parameter is spelled out (totp-rs leaves the defaults implicit), because some apps
/// only trust what the URI says.
pub fn enrolment_uri(secret: &[u8], issuer: &str, account: &str) -> Result<String, String> {
    // Bounded so that the URI always fits a QR code (an attack review's 1,500-byte issuer
    // was a 500): 128 bytes, even percent-encoded twice, stay far below its 2,331.
    if issuer.is_empty()
        || issuer.trim() != issuer
        || issuer.len() > MAX_ISSUER_BYTES
        || issuer.contains(':')
        || issuer
            .chars()
            .any(|c| c.is_control() || crate::state::validate::invisible(c))
        || account.contains(':')
    {
        // Invisible and direction characters too: an authenticator app shows `A\u{202e}B`
        // reversed (an attack review).
        return Err(format!(
            "issuer: must be 1 to {MAX_ISSUER_BYTES} bytes, with no ':', no surrounding spaces and no control, invisible, line-separator or text-direction characters"
        ));
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

/// The current login code for `secret` (used by tests and the admin tools).
pub fn login_code(secret: &[u8], now_s: u64) -> Option<String> {
    totp(secret.to_vec(), LOGIN_STEP, 1).map(|t| t.generate(now_s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_that_show_otherwise_than_they_read_are_refused() {
        assert!(enrolment_uri(b"0123456789", "Acme", "bob").is_ok());
        for bad in [
            " Acme",
            "Acme\u{a0}",
            "Ac\u{2028}me",
            "A\u{202e}B",
            "Ac\u{200b}me",
            "\u{feff}Acme",
            "A:B",
            "A\nB",
            "",
        ] {
            assert!(enrolment_uri(b"0123456789", bad, "bob").is_err(), "{bad:?}");
        }
    }

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
        assert!(super::enrolment_uri(&super::new_secret(), "A\nB", "bob").is_err());
        let longest = "€".repeat(42) + "xx";
        assert_eq!(longest.len(), super::MAX_ISSUER_BYTES);
        let uri = super::enrolment_uri(&super::new_secret(), &longest, &"ü".repeat(128)).unwrap();
        crate::auth::qr::png(&uri).expect("the longest URI fits a QR code");
        let over = longest + "x";
        assert!(super::enrolment_uri(&super::new_secret(), &over, "bob").is_err());
    }
}
