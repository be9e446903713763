//! JWT (HS256): issuing at login and checking on every authenticated request.
//!
//! Expiry is checked against our clock (NTP-corrected), not jsonwebtoken's own, so the
//! `exp`/`iat` a client sees and the check agree.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::state::projection::Map;

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
    /// The user's id (random at creation), as 32 hex digits: a token names this user of this
    /// deployment, not any user of the same name. An attack review logged in to a staging
    /// server and used the token on production, which shared the JWT secret: name, epoch
    /// and issuer all matched. A token without it (from an earlier version) names nobody.
    #[serde(default, with = "uid_hex")]
    pub uid: [u8; 16],
    /// [`STREAM_AUDIENCE`] for a token that may only open `/sse` (the session cookie's);
    /// absent on the login JWT, which every route takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// [`Claims::uid`] as 32 lowercase hex digits; absent or malformed reads as all zeros, which
/// no user's id is (a random UUID).
mod uid_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(uid: &[u8; 16], serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(32);
        for b in uid {
            text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 16], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut uid = [0u8; 16];
        if text.len() != 32 {
            return Ok([0; 16]);
        }
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => uid[i] = (hi * 16 + lo) as u8,
                _ => return Ok([0; 16]),
            }
        }
        Ok(uid)
    }
}

/// The audience of stream-only tokens.
pub const STREAM_AUDIENCE: &str = "broker-sse";

/// How far in the future an `iat` may lie (clock differences between nodes), seconds.
pub const MAX_IAT_SKEW_S: u64 = 60;

/// Why a bearer token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Bad signature, wrong algorithm, malformed or foreign token.
    #[error("invalid token")]
    Invalid,
    /// Past its `exp`.
    #[error("expired token")]
    Expired,
    /// Issued more than [`MAX_IAT_SKEW_S`] in the future: made with a stolen key or a clock
    /// far off; either way not to be trusted for longer than it says.
    #[error("token issued in the future")]
    FromTheFuture,
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
    JwtKey::new(secret).verify(token, now_s)
}

/// The HS256 verification key with its HMAC key schedule computed once.
///
/// Why not jsonwebtoken's `decode` on every request: it rebuilds the HMAC key and parses the
/// claims twice (into a map, then into the struct) each time, ~42,000 instructions per
/// request under callgrind — the largest single cost of an authenticated insert. Signing
/// stays with jsonwebtoken; both follow RFC 7515/7519 for HS256 and agree (tested).
#[derive(Clone)]
pub struct JwtKey {
    mac: Hmac<Sha256>,
    /// Which key a thread's [`Verified`] tokens were verified with.
    id: u64,
}

/// Ids of keys made in this process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
}

impl JwtKey {
    /// The key of `secret`.
    pub fn new(secret: &[u8]) -> Self {
        JwtKey {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
            id: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// [`JwtKey::verify`], remembering the tokens that passed: a client sends the same JWT
    /// with every request, and checking it again (base64, HMAC-SHA256, two JSON parses) was
    /// a tenth of the server's user CPU per insert. A token is found by its whole text
    /// (signature included), so a changed byte is a miss and verified afresh; expiry and
    /// `iat` are checked against `now_s` on every use; only tokens that verified are kept,
    /// at most [`Verified::CAPACITY`] on each thread.
    pub fn verify_cached(&self, token: &str, now_s: u64) -> Result<Arc<Claims>, JwtError> {
        if let Some(claims) = Verified::get(self.id, token) {
            check_times(&claims, now_s)?;
            return Ok(claims);
        }
        let claims = Arc::new(self.verify(token, now_s)?);
        Verified::put(self.id, token, &claims, now_s);
        Ok(claims)
    }

    /// Tokens this thread keeps verified for this key.
    #[cfg(test)]
    fn cached_here(&self) -> usize {
        Verified::len(self.id)
    }

    /// Checks signature (constant time), algorithm and issuer, then expiry against `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, JwtError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Invalid)?;
        let (header, claims) = signed.split_once('.').ok_or(JwtError::Invalid)?;
        if claims.contains('.') {
            return Err(JwtError::Invalid);
        }
        let signature = b64.decode(signature).map_err(|_| JwtError::Invalid)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| JwtError::Invalid)?;
        // Signed by us, but the header still says which algorithm: only HS256 is ours.
        let header: JoseHeader = b64
            .decode(header)
            .ok()
            .filter(|h| is_object(h))
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(JwtError::Invalid)?;
        if header.alg != "HS256" {
            return Err(JwtError::Invalid);
        }
        let claims: Claims = b64
            .decode(claims)
            .ok()
            .filter(|c| is_object(c))
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or(JwtError::Invalid)?;
        if claims.iss != ISSUER {
            return Err(JwtError::Invalid);
        }
        check_times(&claims, now_s)?;
        Ok(claims)
    }
}

/// Expiry, and an `iat` not too far ahead of `now_s`.
fn check_times(claims: &Claims, now_s: u64) -> Result<(), JwtError> {
    if claims.exp <= now_s {
        return Err(JwtError::Expired);
    }
    if claims.iat > now_s.saturating_add(MAX_IAT_SKEW_S) {
        return Err(JwtError::FromTheFuture);
    }
    // Later than any token this server issues could expire: not one of ours (an expiry of
    // 2^64 - 1 failed further on, as a 500 from /verify).
    let latest = now_s
        .saturating_add(crate::config::MAX_JWT_EXPIRY)
        .saturating_add(MAX_IAT_SKEW_S);
    if claims.exp > latest {
        return Err(JwtError::Invalid);
    }
    Ok(())
}

/// Tokens that verified, by their text, one map per thread.
///
/// Why per thread: every request of a client carries the same token, and on a map shared by
/// the runtime's threads each request took its shard's lock and counted a reference to the
/// same claims, two cache lines passed between the cores on every request. A thread's own
/// map is touched by that thread only; a token is verified once on each thread it comes to.
#[derive(Default)]
struct Verified {
    /// The key these tokens verified with: another key (tests make many) starts afresh.
    key: u64,
    tokens: Map<Box<str>, Arc<Claims>>,
}

thread_local! {
    static VERIFIED: RefCell<Verified> = RefCell::default();
}

impl Verified {
    /// Tokens kept at most on each thread (each a few hundred bytes): many more clients
    /// than this only verify afresh more often, they never grow the memory.
    const CAPACITY: usize = 8192;

    fn get(key: u64, token: &str) -> Option<Arc<Claims>> {
        VERIFIED.with_borrow(|v| {
            if v.key != key {
                return None;
            }
            v.tokens.get(token).cloned()
        })
    }

    fn put(key: u64, token: &str, claims: &Arc<Claims>, now_s: u64) {
        if token.len() > MAX_CACHED_TOKEN {
            return;
        }
        VERIFIED.with_borrow_mut(|v| {
            if v.key != key {
                v.key = key;
                v.tokens = Map::default();
            }
            if v.tokens.len() >= Self::CAPACITY {
                v.tokens.retain(|_, c| c.exp > now_s);
                if v.tokens.len() >= Self::CAPACITY {
                    v.tokens.clear();
                }
            }
            v.tokens.insert(token.into(), Arc::clone(claims));
        });
    }

    /// Tokens this thread keeps for `key`.
    #[cfg(test)]
    fn len(key: u64) -> usize {
        VERIFIED.with_borrow(|v| if v.key == key { v.tokens.len() } else { 0 })
    }
}

/// Our tokens are a few hundred bytes; a longer one that verified is kept out of the cache.
const MAX_CACHED_TOKEN: usize = 2048;

/// RFC 7519 wants a JSON object in UTF-8; serde would also read a struct from an array, and
/// skips the fields it ignores without checking their UTF-8.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().starts_with(b"{") && std::str::from_utf8(json).is_ok()
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
            uid: [7; 16],
            aud: None,
        }
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let token = issue(
            b"k",
            &Claims {
                iat: 1_000 + 3_600,
                ..claims(10_000)
            },
        );
        assert_eq!(verify(b"k", &token, 1_000), Err(JwtError::FromTheFuture));
        let skewed = issue(
            b"k",
            &Claims {
                iat: 1_000 + 60,
                ..claims(10_000)
            },
        );
        assert!(
            verify(b"k", &skewed, 1_000).is_ok(),
            "a minute of clock skew is fine"
        );
    }

    #[test]
    fn a_uid_that_is_no_32_hex_digits_reads_as_nobody() {
        let with = |uid: serde_json::Value| {
            let mut claims = serde_json::to_value(claims(10_000)).unwrap();
            claims["uid"] = uid;
            serde_json::from_value::<Claims>(claims).unwrap().uid
        };
        assert_eq!(with(serde_json::json!("07".repeat(16))), [7; 16]);
        for bad in [
            "",
            "07",
            "zz".repeat(16).as_str(),
            "0".repeat(33).as_str(),
            "é".repeat(16).as_str(),
        ] {
            assert_eq!(with(serde_json::json!(bad)), [0; 16], "{bad:?}");
        }
    }

    #[test]
    fn an_expiry_later_than_any_token_issued_is_refused() {
        let now = 1_000;
        let latest = now + crate::config::MAX_JWT_EXPIRY + MAX_IAT_SKEW_S;
        assert!(verify(b"k", &issue(b"k", &claims(latest)), now).is_ok());
        for exp in [latest + 1, u64::MAX] {
            assert_eq!(
                verify(b"k", &issue(b"k", &claims(exp)), now),
                Err(JwtError::Invalid),
                "{exp}"
            );
        }
    }

    #[test]
    fn cached_tokens_still_expire_and_a_changed_byte_is_verified_afresh() {
        let key = JwtKey::new(b"k");
        let token = issue(b"k", &claims(200));
        assert_eq!(*key.verify_cached(&token, 150).unwrap(), claims(200));
        assert_eq!(key.cached_here(), 1);
        assert_eq!(*key.verify_cached(&token, 199).unwrap(), claims(200));
        assert_eq!(key.verify_cached(&token, 200), Err(JwtError::Expired));
        // Another key's token, and ours with its signature or claims altered: never found.
        let foreign = issue(b"other", &claims(200));
        assert_eq!(key.verify_cached(&foreign, 150), Err(JwtError::Invalid));
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(key.verify_cached(&forged, 150), Err(JwtError::Invalid));
        let (_, signature) = token.rsplit_once('.').unwrap();
        let other_claims = issue(
            b"k",
            &Claims {
                sub: "eve".into(),
                ..claims(200)
            },
        );
        let (signed, _) = other_claims.rsplit_once('.').unwrap();
        let spliced = format!("{signed}.{signature}");
        assert_eq!(key.verify_cached(&spliced, 150), Err(JwtError::Invalid));
        assert_eq!(key.cached_here(), 1, "only tokens that verified are kept");
    }

    #[test]
    fn a_token_too_long_to_keep_verifies_every_time() {
        let key = JwtKey::new(b"k");
        let long = Claims {
            sub: "b".repeat(MAX_CACHED_TOKEN),
            ..claims(200)
        };
        let token = issue(b"k", &long);
        assert!(token.len() > MAX_CACHED_TOKEN);
        assert_eq!(*key.verify_cached(&token, 150).unwrap(), long);
        assert_eq!(key.cached_here(), 0, "a token over the limit was kept");
        assert_eq!(key.verify_cached(&token, 200), Err(JwtError::Expired));
        // One at the usual size on the same thread is kept.
        key.verify_cached(&issue(b"k", &claims(200)), 150).unwrap();
        assert_eq!(key.cached_here(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let key = JwtKey::new(b"k");
        for i in 0..(Verified::CAPACITY as u64 + 5_000) {
            let token = issue(
                b"k",
                &Claims {
                    epoch: i,
                    ..claims(10_000)
                },
            );
            assert_eq!(key.verify_cached(&token, 150).unwrap().epoch, i);
        }
        assert!(key.cached_here() <= Verified::CAPACITY);
        assert!(key.cached_here() > 0);
    }

    #[test]
    fn each_thread_and_each_key_keeps_its_own_tokens() {
        let key = JwtKey::new(b"k");
        let token = issue(b"k", &claims(200));
        key.verify_cached(&token, 150).unwrap();
        assert_eq!(key.cached_here(), 1);
        // Another thread verifies it afresh, and still refuses it once expired or forged.
        let elsewhere = key.clone();
        std::thread::spawn(move || {
            assert_eq!(elsewhere.cached_here(), 0);
            assert_eq!(elsewhere.verify_cached(&token, 150).unwrap().sub, "bob");
            assert_eq!(elsewhere.cached_here(), 1);
            assert_eq!(elsewhere.verify_cached(&token, 200), Err(JwtError::Expired));
        })
        .join()
        .unwrap();
        // A key of another secret on this thread finds nothing of the first key's, even the
        // same text: it verifies the token itself (and refuses it).
        let other = JwtKey::new(b"other");
        let token = issue(b"k", &claims(200));
        assert_eq!(other.cached_here(), 0);
        assert_eq!(other.verify_cached(&token, 150), Err(JwtError::Invalid));
        assert_eq!(key.verify_cached(&token, 150).unwrap().sub, "bob");
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
    fn agrees_with_jsonwebtoken_and_refuses_tampering() {
        use jsonwebtoken::{DecodingKey, Validation, decode};
        let token = issue(b"k", &claims(200));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let theirs = decode::<Claims>(&token, &DecodingKey::from_secret(b"k"), &validation)
            .unwrap()
            .claims;
        assert_eq!(JwtKey::new(b"k").verify(&token, 150), Ok(theirs));
        // Any changed byte of header, claims or signature breaks it.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            if forged != token {
                assert!(JwtKey::new(b"k").verify(&forged, 150).is_err(), "byte {i}");
            }
        }
        let foreign = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                iss: "someone-else".into(),
                ..claims(200)
            },
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(verify(b"k", &foreign, 150), Err(JwtError::Invalid));
        assert_eq!(
            verify(b"k", &format!("{token}.x"), 150),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn header_and_claims_must_be_objects() {
        use base64::Engine as _;
        use hmac::Mac;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sign = |header: &str, claims: &str| {
            let signed = format!("{}.{}", b64.encode(header), b64.encode(claims));
            let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
            mac.update(signed.as_bytes());
            format!("{signed}.{}", b64.encode(mac.finalize().into_bytes()))
        };
        let claims = serde_json::to_string(&claims(200)).unwrap();
        assert!(verify(b"k", &sign(r#"{"alg":"HS256"}"#, &claims), 150).is_ok());
        assert_eq!(
            verify(b"k", &sign(r#"["HS256"]"#, &claims), 150),
            Err(JwtError::Invalid)
        );
        // Invalid UTF-8 in a field nobody reads is still no JSON (found by the jwt fuzz target).
        let mut header = br#"{"alg":"HS256","t&p":"JW"#.to_vec();
        header.extend_from_slice(b"\xf6T\"}");
        let signed = format!("{}.{}", b64.encode(&header), b64.encode(&claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(signed.as_bytes());
        let token = format!("{signed}.{}", b64.encode(mac.finalize().into_bytes()));
        assert_eq!(verify(b"k", &token, 150), Err(JwtError::Invalid));
        let array = r#"["bob",100,200,"broker","t",1]"#;
        assert_eq!(
            verify(b"k", &sign(r#"{"alg":"HS256"}"#, array), 150),
            Err(JwtError::Invalid)
        );
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
