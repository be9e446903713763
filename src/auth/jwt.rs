//! JWT (HS256): issuing at login and checking on every authenticated request.
//!
//! Expiry is checked against our clock (NTP-corrected), not jsonwebtoken's own, so the
//! `exp`/`iat` a client sees and the check agree.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// The issuer every Broker token carries.
pub const ISSUER: &str = "broker";

/// What a Broker JWT says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Always [`ISSUER`].
    pub iss: String,
    /// The user's tenant when issued.
    pub tenant: String,
    /// The user's credential epoch when issued; a later password or tenant change or a
    /// revocation moves the epoch and so invalidates the token.
    pub epoch: u64,
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Bad signature, wrong algorithm, malformed or foreign token.
    #[error("invalid token")]
    Invalid,
    /// Past its `exp`.
    #[error("expired token")]
    Expired,
}

/// Signs `claims` with `secret`.
pub fn issue(secret: &[u8], claims: &Claims) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Checks signature, algorithm and issuer, then expiry against `now_s`.
pub fn verify(secret: &[u8], token: &str, now_s: u64) -> Result<Claims, JwtError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[ISSUER]);
    let claims = decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|_| JwtError::Invalid)?
        .claims;
    if claims.exp <= now_s {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "bob".into(),
            iat: 100,
            exp,
            iss: ISSUER.into(),
            tenant: "t".into(),
            epoch: 1,
        }
    }

    #[test]
    fn round_trip_expiry_and_forgery() {
        let token = issue(b"k", &claims(200));
        assert_eq!(verify(b"k", &token, 150), Ok(claims(200)));
        assert_eq!(verify(b"k", &token, 200), Err(JwtError::Expired));
        assert_eq!(verify(b"other", &token, 150), Err(JwtError::Invalid));
        assert_eq!(verify(b"k", "garbage", 150), Err(JwtError::Invalid));
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(serde_json::to_vec(&claims(u64::MAX / 2)).unwrap());
        assert_eq!(
            verify(b"k", &format!("{header}.{body}."), 150),
            Err(JwtError::Invalid)
        );
    }
}
