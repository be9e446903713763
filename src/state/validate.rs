//! Checks on single values, shared by the request handlers (to fail before costly work)
//! and by `decide` (so no invalid value can ever reach the log).

/// The longest username accepted, in bytes.
pub const MAX_USERNAME: usize = 128;
/// The longest tenant name accepted, in bytes.
pub const MAX_TENANT: usize = 128;
/// The longest event name accepted, in bytes.
pub const MAX_EVENT_NAME: usize = 255;

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

/// Tenant names: 1–128 bytes, no control characters.
pub fn tenant(value: &str) -> Result<(), Invalid> {
    name_like("tenant_name", value, MAX_TENANT)
}

/// Event names: 1–255 bytes of UTF-8, no control characters (a newline would break SSE).
pub fn event_name(value: &str) -> Result<(), Invalid> {
    name_like("event", value, MAX_EVENT_NAME)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
