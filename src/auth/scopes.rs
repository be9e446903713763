//! Scopes as permissions on event names (`--enforce_scopes true`): the one place that says
//! what a user's scopes let them write and read. Routes ask here; nothing else reads scopes
//! as permissions.
//!
//! A scope is `resource:operation` (`state::validate::scopes`). For events the resource is the
//! event name and the operation `write` or `read`; `*` as the resource stands for every name.
//! An event name with a colon can only be granted through `*`, since a scope holds exactly
//! one colon.

use std::collections::BTreeSet;

/// An operation on events that a scope grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Insert events of a name.
    Write,
    /// Receive events of a name on a stream.
    Read,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Write => "write",
            Operation::Read => "read",
        }
    }
}

/// A scope the caller lacks for what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing scope {event}:{op} (or *:{op}) to {op} event {event:?}", op = .operation.as_str())]
pub struct MissingScope {
    /// The event name.
    pub event: String,
    /// What was to be done with it.
    pub operation: Operation,
}

/// Whether `scopes` hold `<resource>:<operation>` for `event`, by name or by `*`.
fn grants(scopes: &[String], event: &str, operation: Operation) -> bool {
    scopes.iter().any(|scope| {
        scope.split_once(':').is_some_and(|(resource, op)| {
            op == operation.as_str() && (resource == "*" || resource == event)
        })
    })
}

/// Whether a user with `scopes` may insert `event`: `event:write` or `*:write`.
pub fn may_write(scopes: &[String], event: &str) -> Result<(), MissingScope> {
    if grants(scopes, event, Operation::Write) {
        Ok(())
    } else {
        Err(MissingScope {
            event: event.to_owned(),
            operation: Operation::Write,
        })
    }
}

/// The event names a stream may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFilter {
    /// Every name (`*:read`, or scopes not enforced).
    All,
    /// Only these names (none at all when empty).
    Only(BTreeSet<String>),
}

impl ReadFilter {
    /// Whether an event of this name may be sent.
    pub fn allows(&self, event: &str) -> bool {
        match self {
            ReadFilter::All => true,
            ReadFilter::Only(names) => names.contains(event),
        }
    }

    /// A stream filter the client asked for (`?event=`): every name it lists must be
    /// readable; the first that is not is the error (403).
    pub fn check_requested<'a>(
        &self,
        requested: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), MissingScope> {
        match requested.into_iter().find(|name| !self.allows(name)) {
            None => Ok(()),
            Some(name) => Err(MissingScope {
                event: name.to_owned(),
                operation: Operation::Read,
            }),
        }
    }
}

/// What a user with `scopes` may read: every name with `*:read`, else the names `E` of their
/// `E:read` scopes.
pub fn readable(scopes: &[String]) -> ReadFilter {
    if grants(scopes, "*", Operation::Read) {
        return ReadFilter::All;
    }
    ReadFilter::Only(
        scopes
            .iter()
            .filter_map(|s| s.split_once(':'))
            .filter(|(_, op)| *op == Operation::Read.as_str())
            .map(|(resource, _)| resource.to_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn writing_needs_the_name_or_the_wildcard_with_write() {
        let s = scopes(&["temp:write", "humidity:read", "x:get"]);
        assert_eq!(may_write(&s, "temp"), Ok(()));
        let missing = may_write(&s, "humidity").unwrap_err();
        assert_eq!(missing.operation, Operation::Write);
        assert_eq!(
            missing.to_string(),
            "missing scope humidity:write (or *:write) to write event \"humidity\""
        );
        assert!(may_write(&s, "x").is_err(), "get is not write");
        assert!(may_write(&s, "Temp").is_err(), "names are case-sensitive");
        assert!(may_write(&scopes(&["*:write"]), "anything:at all").is_ok());
        assert!(may_write(&scopes(&["*:read"]), "a").is_err());
        assert!(may_write(&[], "a").is_err());
    }

    #[test]
    fn reading_is_every_name_with_the_wildcard_else_the_named_ones() {
        assert_eq!(readable(&scopes(&["*:read", "a:read"])), ReadFilter::All);
        let only = readable(&scopes(&["a:read", "b:write", "c:read", "*:write"]));
        assert!(only.allows("a") && only.allows("c"));
        assert!(!only.allows("b"), "write does not grant read");
        assert!(!only.allows("*"), "a literal name * is only *:read's");
        let none = readable(&[]);
        assert_eq!(none, ReadFilter::Only(BTreeSet::new()));
        assert!(!none.allows("a"));
    }

    #[test]
    fn a_requested_filter_must_be_readable_name_by_name() {
        let only = readable(&scopes(&["a:read", "b:read"]));
        assert_eq!(only.check_requested(["a", "b"]), Ok(()));
        assert_eq!(only.check_requested([]), Ok(()));
        let missing = only.check_requested(["a", "z", "y"]).unwrap_err();
        assert_eq!(
            (missing.event.as_str(), missing.operation),
            ("z", Operation::Read)
        );
        assert_eq!(ReadFilter::All.check_requested(["z"]), Ok(()));
    }

    #[test]
    fn hostile_scopes_grant_nothing_more() {
        // Malformed scopes cannot be stored (validate), but the decision must not depend on it.
        let s = scopes(&["a", ":write", "a:write:x", "*:writes", "*:"]);
        assert!(may_write(&s, "a").is_err());
        assert!(may_write(&s, "a:write").is_err());
        assert_eq!(readable(&s), ReadFilter::Only(BTreeSet::new()));
    }
}
