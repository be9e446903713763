//! `broker log dump`: records as JSON lines, secrets masked.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::ToolError;
use crate::log::LogError;
use crate::log::recovery::scan_segment;
use crate::state::record::UserUpdated;
use crate::state::{Record, RecordKind};

/// The snake_case name of a record kind, as `--kind` takes it.
pub fn kind_name(kind: &RecordKind) -> &'static str {
    match kind {
        RecordKind::UserCreated(_) => "user_created",
        RecordKind::UserUpdated(_) => "user_updated",
        RecordKind::UserRevoked { .. } => "user_revoked",
        RecordKind::UserUnrevoked { .. } => "user_unrevoked",
        RecordKind::PasswordChanged { .. } => "password_changed",
        RecordKind::EventInserted(_) => "event_inserted",
        RecordKind::LoginCodeUsed { .. } => "login_code_used",
        RecordKind::PasswordReset { .. } => "password_reset",
        RecordKind::ResetCodeIssued { .. } => "reset_code_issued",
        RecordKind::ResetCodeFailed { .. } => "reset_code_failed",
        RecordKind::UserDeleted { .. } => "user_deleted",
        RecordKind::UserUpdatedWithPassword { .. } => "user_updated_with_password",
        RecordKind::TotpSecretReplaced { .. } => "totp_secret_replaced",
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()))
}

/// A `UserUpdated`'s fields as JSON.
fn update_fields(u: &UserUpdated) -> Value {
    let mut fields = json!({
        "username": u.username, "tenant": u.tenant, "email": u.email,
        "data": u.data.as_ref().map(|d| d.as_deref().map(parse_json)), "two_factor": u.two_factor,
    });
    // Unchanged scopes are left out: `"scopes": null` is the update that cleared them.
    if let Some(scopes) = &u.scopes {
        fields["scopes"] = json!(scopes);
    }
    fields
}

/// `json` with the characters a terminal acts on or that reorder text escaped as `\uXXXX`:
/// serde_json escapes only U+0000–U+001F, and anyone's event data, event and tenant names
/// reach this output — U+009B starts a terminal command in one byte, U+202E shows a line
/// backwards (eleventh attack review). Inside JSON strings the escape reads back the same.
pub fn terminal_safe(json: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        ) || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            || matches!(c, '\u{2028}' | '\u{2029}')
    };
    if !json.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One record as a JSON object; hashes and secrets are `"***"`.
pub fn to_json(record: &Record) -> Value {
    let fields = match &record.kind {
        RecordKind::UserCreated(u) => json!({
            "id": uuid::Uuid::from_bytes(u.id), "username": u.username, "tenant": u.tenant,
            "email": u.email, "scopes": u.scopes, "data": u.data.as_deref().map(parse_json),
            "two_factor": u.two_factor, "password_hash": "***", "totp_secret": "***",
        }),
        RecordKind::UserUpdated(u) => update_fields(u),
        RecordKind::TotpSecretReplaced { username, .. } => {
            json!({ "username": username, "totp_secret": "***" })
        }
        RecordKind::UserUpdatedWithPassword { update, .. } => {
            let mut fields = update_fields(update);
            fields["password_hash"] = json!("***");
            fields
        }
        RecordKind::UserRevoked { username } | RecordKind::UserUnrevoked { username } => {
            json!({ "username": username })
        }
        RecordKind::PasswordChanged { username, .. } => {
            json!({ "username": username, "password_hash": "***" })
        }
        RecordKind::EventInserted(e) => json!({
            "id": uuid::Uuid::from_bytes(e.id), "tenant": e.tenant, "event": e.event,
            "data": parse_json(&e.data), "by": e.by,
            "idempotency_key": e.idempotency_key,
        }),
        RecordKind::LoginCodeUsed { username, step } => {
            json!({ "username": username, "step": step })
        }
        RecordKind::PasswordReset { username, step, .. } => {
            json!({ "username": username, "step": step, "password_hash": "***" })
        }
        RecordKind::ResetCodeIssued {
            username,
            expires_ms,
            ..
        } => json!({ "username": username, "expires_ms": expires_ms, "code_hash": "***" }),
        RecordKind::ResetCodeFailed { username } | RecordKind::UserDeleted { username } => {
            json!({ "username": username })
        }
    };
    json!({ "cursor": record.cursor, "at_ms": record.at_ms, "kind": kind_name(&record.kind), "record": fields })
}

/// Runs the subcommand.
pub fn run(
    db: &Path,
    from: Option<u64>,
    to: Option<u64>,
    tenant: Option<&str>,
    kind: Option<&str>,
) -> Result<(), ToolError> {
    let dir = db.join("log");
    let mut walk = super::Walk::new(&dir, "dumping").map_err(ToolError::io(&dir))?;
    let (from, to) = (from.unwrap_or(0), to.unwrap_or(u64::MAX));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut printed, mut prev) = (0u64, 0);
    // Users of the tenant, to show their records with --tenant (by their tenant at the time).
    let mut tenant_users = std::collections::HashSet::new();
    while let Some(segment) = walk.next() {
        let last = walk.is_empty();
        let path = segment.path;
        let bytes = match segment.bytes {
            Ok(b) => b,
            Err(LogError::Io { source, .. }) => {
                let _ = out.flush();
                return Err(ToolError::io(&path)(source));
            }
            Err(e) => {
                let _ = out.flush();
                return Err(e.into());
            }
        };
        let scan = scan_segment(&path, &bytes, Record::cursor_of, prev, |cursor, payload| {
            let Ok(record) = Record::decode(payload) else {
                return;
            };
            if let (Some(t), RecordKind::UserCreated(u)) = (tenant, &record.kind)
                && u.tenant == t
            {
                tenant_users.insert(u.username.clone());
            }
            if cursor < from || cursor > to || kind.is_some_and(|k| k != kind_name(&record.kind)) {
                return;
            }
            if let Some(t) = tenant {
                let belongs = match (&record.kind, record.username()) {
                    (RecordKind::EventInserted(e), _) => e.tenant == t,
                    (_, Some(user)) => tenant_users.contains(user),
                    _ => false,
                };
                if !belongs {
                    return;
                }
            }
            let _ = writeln!(out, "{}", terminal_safe(&to_json(&record).to_string()));
            printed += 1;
        });
        match scan {
            Ok(scan) => {
                prev = scan.last_cursor;
                match super::fault_of(&scan, &bytes, last) {
                    Ok(Some(note)) => eprintln!("{note}"),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = out.flush();
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                let _ = out.flush();
                return Err(e.into());
            }
        }
    }
    let _ = out.flush();
    eprintln!("{}: {printed} records printed", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_terminal_acts_on_is_escaped_and_reads_back_the_same() {
        let value = serde_json::json!({"data": "a\u{9b}2J b\u{202e}c \u{85}d \u{7f}", "n": 1});
        let text = value.to_string();
        let safe = terminal_safe(&text);
        assert!(
            !safe.chars().any(|c| !c.is_ascii() || c.is_ascii_control()),
            "{safe}"
        );
        assert_eq!(serde_json::from_str::<Value>(&safe).unwrap(), value);
        assert!(matches!(
            terminal_safe("{\"a\":\"é日\"}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn an_update_with_a_password_shows_its_fields_and_masks_the_hash() {
        let record = Record {
            cursor: 3,
            at_ms: 7,
            kind: RecordKind::UserUpdatedWithPassword {
                update: UserUpdated {
                    username: "bob".into(),
                    tenant: Some("moved".into()),
                    ..UserUpdated::default()
                },
                password_hash: "$argon2id$secret".into(),
            },
        };
        let line = to_json(&record);
        assert_eq!(line["kind"], "user_updated_with_password");
        assert_eq!(line["record"]["username"], "bob");
        assert_eq!(line["record"]["tenant"], "moved");
        assert_eq!(line["record"]["password_hash"], "***");
        assert!(!line.to_string().contains("argon2"), "{line}");
    }
}
