//! Checks on single values, shared by the request handlers (to fail before costly work)
//! and by `decide` (so no invalid value can ever reach the log); [`record`] applies them to a
//! whole record, for records that come from a shared stream anyone with its credentials could
//! have written to.

use super::record::{RecordKind, UserCreated, UserUpdated};

/// The longest username accepted, in bytes.
pub const MAX_USERNAME: usize = 128;
/// The longest tenant name accepted, in bytes.
pub const MAX_TENANT: usize = 128;
/// The longest event name accepted, in bytes.
pub const MAX_EVENT_NAME: usize = 255;
/// The shortest TOTP secret accepted, in bytes: totp-rs refuses anything under 128 bits.
pub const MIN_TOTP_SECRET: usize = 16;
/// The longest TOTP secret accepted, in bytes (ours are 20; HMAC-SHA1 hashes longer keys).
pub const MAX_TOTP_SECRET: usize = 64;

/// A value that breaks a rule: which field, and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The JSON field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

fn name_like(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Usernames: 1–128 bytes, no control characters, no surrounding spaces, no `:`
/// (HTTP Basic splits on the first colon).
pub fn username(value: &str) -> Result<(), Invalid> {
    name_like("username", value, MAX_USERNAME)?;
    if value.trim() != value {
        return Err(invalid("username", "must not start or end with spaces"));
    }
    if value.contains(':') {
        return Err(invalid(
            "username",
            "must not contain ':' (HTTP Basic could not carry it)",
        ));
    }
    Ok(())
}

/// What a username must also be when it is created (not when a record is read back, so that
/// logs written before keep opening), so that one name cannot pass for another in the console
/// and in events' `by` (found by attack reviews):
/// - free of characters that show as nothing or reorder text — zero-width spaces and joiners,
///   bidi controls, the byte-order mark, soft hyphens (`alice\u{200b}`);
/// - of one script (Unicode TS 39 single-script, where Japanese may mix its scripts): a
///   Cyrillic `а` in `pаypal` looks like the Latin one;
/// - composed (NFC): `e` and a combining accent look like `é` but are another name.
pub fn new_username(value: &str) -> Result<(), Invalid> {
    use unicode_normalization::is_nfc;
    use unicode_security::MixedScript;
    if value.chars().any(invisible) {
        return Err(invalid(
            "username",
            "must not contain invisible or text-direction characters (zero-width, bidi controls, BOM, soft hyphen)",
        ));
    }
    if !value.is_single_script() {
        return Err(invalid(
            "username",
            "must not mix letters of several scripts (such as Latin and Cyrillic), with which one name passes for another",
        ));
    }
    if !is_nfc(value) {
        return Err(invalid(
            "username",
            "must be in Unicode normalization form C (accents composed with their letters)",
        ));
    }
    Ok(())
}

/// What a tenant name must also be when a user or an event brings it (not when a record is
/// read back): free of invisible and text-direction characters, without spaces at its ends,
/// and composed (NFC), so that one tenant cannot pass for another in the console and
/// `/list_tenants` (an attack review made `acme `, `acme\u{200b}` and `e\u{301}` beside `é`).
pub fn new_tenant(value: &str) -> Result<(), Invalid> {
    if value.chars().any(invisible) {
        return Err(invalid(
            "tenant_name",
            "must not contain invisible or text-direction characters (zero-width, bidi controls, BOM, soft hyphen)",
        ));
    }
    if value.trim() != value {
        return Err(invalid("tenant_name", "must not start or end with spaces"));
    }
    // NFKC, not only NFC: a tenant name is an identifier, and `ﬁ` (a ligature) or fullwidth
    // letters read as the plain ones (a review's second look).
    if !unicode_normalization::is_nfkc(value) {
        return Err(invalid(
            "tenant_name",
            "must be in Unicode normalization form KC (accents composed, no ligatures or fullwidth forms)",
        ));
    }
    Ok(())
}

/// Unicode format and filler characters that change no glyph but how text reads or compares.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{2800}'
            | '\u{E0100}'..='\u{E01EF}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// `Idempotency-Key`s: 1–255 bytes of printable ASCII (space to `~`).
pub fn idempotency_key(value: &str) -> Result<(), Invalid> {
    const FIELD: &str = "Idempotency-Key";
    if value.is_empty() || value.len() > super::idempotency::MAX_KEY_LEN {
        return Err(invalid(FIELD, "must be 1 to 255 bytes"));
    }
    if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(invalid(FIELD, "must be printable ASCII (space to '~')"));
    }
    Ok(())
}

/// Tenant names: 1–128 bytes, no control characters.
pub fn tenant(value: &str) -> Result<(), Invalid> {
    name_like("tenant_name", value, MAX_TENANT)
}

/// Event names: 1–255 bytes of UTF-8, no control characters (a newline would break SSE).
pub fn event_name(value: &str) -> Result<(), Invalid> {
    name_like("event", value, MAX_EVENT_NAME)
}

/// The prefix of the names of the server's own SSE frames (`broker.closed`, `broker.reset`).
pub const RESERVED_EVENT_PREFIX: &str = "broker.";

/// What an event name must also be when the event is inserted (not when a record is read
/// back, so that logs written before keep opening): not one of the server's own frame names,
/// which a subscriber would take for the server ending or resetting its stream (found by an
/// attack review: one user's `broker.closed` ended every stream of the tenant, for good).
pub fn new_event_name(value: &str) -> Result<(), Invalid> {
    if value.starts_with(RESERVED_EVENT_PREFIX) {
        return Err(invalid(
            "event",
            format!("names starting with {RESERVED_EVENT_PREFIX:?} are the server's own"),
        ));
    }
    Ok(())
}

/// Passwords: not empty (strength is checked separately when enabled).
pub fn password(value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(invalid("password", "must not be empty"));
    }
    if value.len() > 1024 {
        return Err(invalid("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Scopes: each `resource:operation`, exactly one colon, neither side empty.
pub fn scopes(values: &[String]) -> Result<(), Invalid> {
    for scope in values {
        let ok = match scope.split_once(':') {
            Some((resource, operation)) => {
                !resource.is_empty()
                    && !operation.is_empty()
                    && !operation.contains(':')
                    && !scope.chars().any(|c| c.is_control() || c == '"')
            }
            None => false,
        };
        if !ok {
            return Err(invalid(
                "scopes",
                format!("{scope:?} is not of the form resource:operation"),
            ));
        }
    }
    Ok(())
}

/// Emails: at most 254 bytes, one `@` with text on both sides and a dot in the domain.
pub fn email(value: &str) -> Result<(), Invalid> {
    let ok = value.len() <= 254
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "email",
            format!("{value:?} is not an email address"),
        ))
    }
}

/// Password hashes: an Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), the
/// only kind `auth::password` makes and verifies, of a cost it can afford to check.
pub fn password_hash(value: &str) -> Result<(), Invalid> {
    // The message never quotes the value: it is a secret.
    match crate::auth::password::affordable(value) {
        Ok(_) => Ok(()),
        Err(why) => Err(invalid(
            "password_hash",
            format!("is not an Argon2id PHC string this server checks: it {why}"),
        )),
    }
}

/// TOTP secrets: [`MIN_TOTP_SECRET`]–[`MAX_TOTP_SECRET`] bytes.
pub fn totp_secret(value: &[u8]) -> Result<(), Invalid> {
    if !(MIN_TOTP_SECRET..=MAX_TOTP_SECRET).contains(&value.len()) {
        return Err(invalid(
            "totp_secret",
            format!("must be {MIN_TOTP_SECRET} to {MAX_TOTP_SECRET} bytes"),
        ));
    }
    Ok(())
}

/// Stored JSON (`data`): one compact JSON value. Compact matters: event data becomes one SSE
/// `data:` line, and a raw newline (legal JSON whitespace) would end it early.
pub fn json(field: &'static str, value: &str) -> Result<(), Invalid> {
    if value.contains(['\n', '\r']) {
        return Err(invalid(field, "must be compact JSON (no raw line breaks)"));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(value).is_err() {
        return Err(invalid(field, "is not JSON"));
    }
    Ok(())
}

/// Every value of a record, checked with the rules above: what `decide` and the request
/// handlers ensure before a record is written, checked again where a record comes from a
/// shared stream (which only trusted nodes should write to, but the fold must not depend on
/// it). State-dependent rules (a name taken, a user unknown) are `recheck`'s.
pub fn record(kind: &RecordKind) -> Result<(), Invalid> {
    match kind {
        RecordKind::UserCreated(user) => user_created(user),
        RecordKind::UserUpdated(update) => user_updated(update),
        RecordKind::UserUpdatedWithPassword {
            update,
            password_hash,
        } => {
            user_updated(update)?;
            self::password_hash(password_hash)
        }
        RecordKind::TotpSecretReplaced {
            username,
            totp_secret,
        } => {
            self::username(username)?;
            self::totp_secret(totp_secret)
        }
        RecordKind::UserRevoked { username }
        | RecordKind::UserUnrevoked { username }
        | RecordKind::ResetCodeFailed { username }
        | RecordKind::UserDeleted { username }
        | RecordKind::LoginCodeUsed { username, .. } => self::username(username),
        RecordKind::PasswordChanged {
            username,
            password_hash,
        } => {
            self::username(username)?;
            self::password_hash(password_hash)
        }
        RecordKind::PasswordReset {
            username,
            password_hash,
            step,
        } => {
            self::username(username)?;
            self::password_hash(password_hash)?;
            // The cursor of the code's issue record (or, in old logs, a time step): never 0.
            if *step == 0 {
                return Err(invalid("totp", "names no reset code"));
            }
            Ok(())
        }
        RecordKind::ResetCodeIssued {
            username,
            code_hash,
            expires_ms,
        } => {
            self::username(username)?;
            // A SHA-256 digest is never all zeros; a zeroed one is a default, not a code.
            if code_hash.iter().all(|b| *b == 0) {
                return Err(invalid("totp", "the reset code's digest is empty"));
            }
            if *expires_ms <= 0 {
                return Err(invalid("totp", "the reset code has no expiry"));
            }
            Ok(())
        }
        RecordKind::EventInserted(e) => {
            if let Some(by) = &e.by {
                self::username(by)?;
            }
            if let Some(key) = &e.idempotency_key {
                idempotency_key(key)?;
            }
            tenant(&e.tenant)?;
            event_name(&e.event)?;
            json("data", &e.data)
        }
    }
}

fn user_created(user: &UserCreated) -> Result<(), Invalid> {
    username(&user.username)?;
    tenant(&user.tenant)?;
    password_hash(&user.password_hash)?;
    if let Some(address) = &user.email {
        email(address)?;
    }
    if let Some(values) = &user.scopes {
        scopes(values)?;
    }
    if let Some(data) = &user.data {
        json("data", data)?;
    }
    totp_secret(&user.totp_secret)
}

/// The optional fields of an update; `decide` checks the same ones.
pub fn user_update(update: &UserUpdated) -> Result<(), Invalid> {
    if let Some(name) = &update.tenant {
        tenant(name)?;
    }
    if let Some(Some(address)) = &update.email {
        email(address)?;
    }
    if let Some(Some(values)) = &update.scopes {
        scopes(values)?;
    }
    Ok(())
}

fn user_updated(update: &UserUpdated) -> Result<(), Invalid> {
    username(&update.username)?;
    user_update(update)?;
    if let Some(Some(data)) = &update.data {
        json("data", data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_usernames_show_what_they_are() {
        for fine in [
            "alice",
            "ünïcode user",
            "José",
            "李雷",
            "a-b_c.d",
            "Мария_1987",
            "やまだ太郎",
            "ヤマダ",
            "user@example.com",
        ] {
            assert!(new_username(fine).is_ok(), "{fine}");
        }
        // Look-alikes: a Cyrillic а among Latin letters, a Greek ο, a decomposed é.
        for alike in ["p\u{0430}ypal", "g\u{03bf}\u{03bf}gle", "Jose\u{0301}"] {
            assert!(new_username(alike).is_err(), "{alike:?}");
            assert!(username(alike).is_ok(), "{alike:?}");
        }
        for hidden in [
            "alice\u{200b}",
            "\u{202e}ecila",
            "a\u{feff}",
            "al\u{00ad}ice",
            "bob\u{2066}",
            "x\u{e0041}",
        ] {
            assert!(new_username(hidden).is_err(), "{hidden:?}");
            // A log that holds one still opens: only creation refuses it.
            assert!(username(hidden).is_ok(), "{hidden:?}");
        }
    }

    #[test]
    fn event_names() {
        assert!(event_name("a").is_ok());
        assert!(event_name("temperature/kitchen é").is_ok());
        assert!(event_name("").is_err());
        assert!(event_name("a\nb").is_err());
        assert!(event_name("a\rb").is_err());
        assert!(event_name("a\u{0}b").is_err());
        assert!(event_name(&"x".repeat(255)).is_ok());
        assert!(event_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn scope_shapes() {
        assert!(scopes(&["news:get".into(), "a:b".into()]).is_ok());
        for bad in ["a:b:c", ":b", "a:", "ab", ""] {
            assert!(scopes(&[bad.into()]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn usernames() {
        assert!(username("bob").is_ok());
        assert!(username("").is_err());
        assert!(username("a:b").is_err());
        assert!(username(" bob").is_err());
        assert!(username("bo\tb").is_err());
        assert!(username(&"b".repeat(129)).is_err());
    }

    #[test]
    fn emails() {
        assert!(email("alice@example.com").is_ok());
        for bad in ["not-an-email", "a@b", "@x.com", "a@@x.com", "a b@x.com"] {
            assert!(email(bad).is_err(), "{bad} accepted");
        }
    }

    const PHC: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";

    fn user() -> UserCreated {
        UserCreated {
            id: [1; 16],
            username: "ann".into(),
            tenant: "acme".into(),
            password_hash: PHC.into(),
            email: Some("ann@example.com".into()),
            scopes: Some(vec!["news:get".into()]),
            data: Some(r#"{"k":[1,"x"]}"#.into()),
            two_factor: false,
            totp_secret: vec![7; 20],
        }
    }

    fn event(name: &str, data: &str) -> RecordKind {
        RecordKind::EventInserted(crate::state::record::EventInserted {
            id: [2; 16],
            tenant: "acme".into(),
            event: name.into(),
            data: data.into(),
            by: Some("ann".into()),
            idempotency_key: None,
        })
    }

    #[test]
    fn idempotency_keys_are_1_to_255_printable_ascii_bytes() {
        assert!(idempotency_key("a").is_ok());
        assert!(idempotency_key(&"k".repeat(255)).is_ok());
        assert!(idempotency_key("order 42 ~!").is_ok());
        for bad in [
            String::new(),
            "k".repeat(256),
            "ké".into(),
            "a\tb".into(),
            "\u{7f}".into(),
        ] {
            assert_eq!(
                idempotency_key(&bad).expect_err(&bad).field,
                "Idempotency-Key"
            );
        }
    }

    #[test]
    fn new_tenant_names_cannot_pass_for_others() {
        for ok in ["acme", "Acme Corp", "é", "東京", "a-b_c.d"] {
            assert!(new_tenant(ok).is_ok(), "{ok}");
        }
        for bad in [
            "acme ",
            "\u{a0}acme",
            "ac\u{202e}me",
            "acme\u{200b}",
            "e\u{301}",
            "\u{feff}",
            " ",
            "acme\u{1d173}",
            "acme\u{2800}",
            "acme\u{e0100}",
            "\u{fb01}rm",
            "ａcme",
            "ac\u{2028}me",
        ] {
            assert_eq!(
                new_tenant(bad).expect_err(bad).field,
                "tenant_name",
                "{bad:?}"
            );
        }
    }

    /// The field a record is refused for.
    fn refused(kind: &RecordKind) -> &'static str {
        record(kind).expect_err("accepted").field
    }

    #[test]
    fn password_hashes_are_argon2id_phc_strings() {
        assert!(password_hash(PHC).is_ok());
        for bad in [
            "",
            "hunter2",
            "$argon2id$not-used-here",
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            // A cost no check should run (a hash planted in a shared stream).
            PHC.replacen("m=19456,t=2", "m=2097152,t=2", 1).as_str(),
        ] {
            let err = password_hash(bad).unwrap_err();
            assert_eq!(err.field, "password_hash");
            assert!(bad.is_empty() || !err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn stored_json_is_compact_json() {
        assert!(json("data", r#"{"a":"line\nbreak"}"#).is_ok());
        assert!(json("data", "12").is_ok());
        for bad in ["", "{", "not json", "{\"a\":1}\n", "[1,\n2]", "{\"a\":1}{"] {
            assert!(json("data", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_value_of_a_record_is_checked() {
        assert_eq!(record(&RecordKind::UserCreated(user())), Ok(()));
        assert_eq!(record(&event("tick", "{\"i\":1}")), Ok(()));
        type Breaks = fn(&mut UserCreated);
        let broken: [(Breaks, &str); 8] = [
            (|u| u.username = "a:b".into(), "username"),
            (|u| u.tenant = "t\n".into(), "tenant_name"),
            (|u| u.password_hash = "$argon2id$x".into(), "password_hash"),
            (|u| u.email = Some("nope".into()), "email"),
            (|u| u.scopes = Some(vec!["news".into()]), "scopes"),
            (|u| u.data = Some("{".into()), "data"),
            (|u| u.totp_secret = vec![1; 15], "totp_secret"),
            (|u| u.totp_secret = vec![1; 65], "totp_secret"),
        ];
        for (breaks, field) in broken {
            let mut u = user();
            breaks(&mut u);
            assert_eq!(refused(&RecordKind::UserCreated(u)), field);
        }
        // A newline in an event name or its data would forge SSE frames.
        assert_eq!(refused(&event("tick\nevent: x", "{}")), "event");
        assert_eq!(refused(&event("tick", "{}\n\nid: 9")), "data");
        assert_eq!(refused(&event("tick", "not json")), "data");
        assert_eq!(refused(&event("", "{}")), "event");

        let update = |f: fn(&mut UserUpdated)| {
            let mut u = UserUpdated {
                username: "ann".into(),
                ..Default::default()
            };
            f(&mut u);
            RecordKind::UserUpdated(u)
        };
        assert_eq!(record(&update(|_| {})), Ok(()));
        assert_eq!(
            refused(&update(|u| u.tenant = Some(String::new()))),
            "tenant_name"
        );
        assert_eq!(
            refused(&update(|u| u.email = Some(Some("x".into())))),
            "email"
        );
        assert_eq!(
            refused(&update(|u| u.scopes = Some(Some(vec![":".into()])))),
            "scopes"
        );
        assert_eq!(
            refused(&update(|u| u.data = Some(Some("{]".into())))),
            "data"
        );
        assert_eq!(record(&update(|u| u.email = Some(None))), Ok(()));

        let ann = || "ann".to_owned();
        assert_eq!(
            refused(&RecordKind::UserRevoked {
                username: "x\u{0}".into()
            }),
            "username"
        );
        assert_eq!(
            refused(&RecordKind::PasswordChanged {
                username: ann(),
                password_hash: "plain".into()
            }),
            "password_hash"
        );
        let reset = |password_hash: &str, step| RecordKind::PasswordReset {
            username: ann(),
            password_hash: password_hash.into(),
            step,
        };
        assert_eq!(record(&reset(PHC, 3)), Ok(()));
        assert_eq!(refused(&reset("plain", 3)), "password_hash");
        assert_eq!(refused(&reset(PHC, 0)), "totp");
        let issued = |code_hash, expires_ms| RecordKind::ResetCodeIssued {
            username: ann(),
            code_hash,
            expires_ms,
        };
        assert_eq!(record(&issued([3; 32], 1_700_000_300_000)), Ok(()));
        assert_eq!(refused(&issued([0; 32], 1_700_000_300_000)), "totp");
        assert_eq!(refused(&issued([3; 32], 0)), "totp");
    }
}
