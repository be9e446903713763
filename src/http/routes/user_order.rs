//! The orders and page keys of `/list_users`: natural name order, creation and change times.

use std::cmp::Ordering;

use super::users::{UserPage, UserSort, UserView};
use crate::state::User;

/// Compares names in natural order: runs of digits by their value (`user2` < `user10`),
/// everything else byte by byte; names equal that way (`a01`, `a1`) fall back to bytes, so
/// the order is total and a page key is never ambiguous.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let (dx, dy) = (trim_zeros(&x[si..i]), trim_zeros(&y[sj..j]));
            // Without leading zeros, a longer run is a larger number; equal lengths compare
            // digit by digit: no overflow whatever the length.
            let by_value = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
            if by_value != Ordering::Equal {
                return by_value;
            }
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[zeros..]
}

/// Where a user sits in a sort: the time the sort is by (none for names) and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    ms: Option<i64>,
    username: String,
}

impl Key {
    fn of(place: Place<'_>) -> Key {
        Key {
            ms: place.0,
            username: place.1.to_owned(),
        }
    }

    /// The `next` of a page: `<sort>:<name>` or `<sort>:<ms>:<name>` (a name may hold ':'
    /// from logs older than the rule against it; it is last, so it parses back whole).
    fn text(&self, sort: UserSort) -> String {
        match self.ms {
            None => format!("{}:{}", sort_name(sort), self.username),
            Some(ms) => format!("{}:{ms}:{}", sort_name(sort), self.username),
        }
    }

    /// Reads an `after` sent with `sort`; the error names the parameter and the problem.
    pub fn parse(sort: UserSort, text: &str) -> Result<Key, String> {
        let garbage =
            || format!("after: {text:?} is not a `next` from /list_users (send it unchanged)");
        let (made_for, rest) = text.split_once(':').ok_or_else(garbage)?;
        if made_for != sort_name(sort) {
            return Err(if ALL.iter().any(|s| sort_name(*s) == made_for) {
                format!(
                    "after: it comes from a page sorted by {made_for}; send it with that sort, not {}",
                    sort_name(sort)
                )
            } else {
                garbage()
            });
        }
        match sort {
            UserSort::Username | UserSort::UsernameDesc => Ok(Key {
                ms: None,
                username: rest.to_owned(),
            }),
            _ => {
                let (ms, username) = rest.split_once(':').ok_or_else(garbage)?;
                let ms = ms.parse::<i64>().map_err(|_| garbage())?;
                Ok(Key {
                    ms: Some(ms),
                    username: username.to_owned(),
                })
            }
        }
    }
}

/// Every sort, in the order of [`NAMES`].
pub const ALL: [UserSort; 6] = [
    UserSort::Username,
    UserSort::UsernameDesc,
    UserSort::Created,
    UserSort::CreatedDesc,
    UserSort::Changed,
    UserSort::ChangedDesc,
];

/// The sorts' names on the wire.
pub const NAMES: [&str; 6] = [
    "username",
    "-username",
    "created",
    "-created",
    "changed",
    "-changed",
];

/// The name of `sort` on the wire (what `sort` takes and a page key starts with).
pub fn sort_name(sort: UserSort) -> &'static str {
    NAMES[ALL
        .iter()
        .position(|s| *s == sort)
        .expect("every sort is in ALL")]
}

/// Where a user sits, borrowed from the state: a page looks at every user without copying
/// their names.
type Place<'a> = (Option<i64>, &'a str);

fn place(user: &User, sort: UserSort) -> Place<'_> {
    let ms = match sort {
        UserSort::Username | UserSort::UsernameDesc => None,
        UserSort::Created | UserSort::CreatedDesc => Some(user.created_ms),
        UserSort::Changed | UserSort::ChangedDesc => Some(user.changed_ms),
    };
    (ms, &user.username)
}

fn compare(sort: UserSort, a: Place<'_>, b: Place<'_>) -> Ordering {
    let ascending = a.0.cmp(&b.0).then_with(|| natural(a.1, b.1));
    match sort {
        UserSort::Username | UserSort::Created | UserSort::Changed => ascending,
        UserSort::UsernameDesc | UserSort::CreatedDesc | UserSort::ChangedDesc => {
            ascending.reverse()
        }
    }
}

/// The page of at most `limit` users that follows `after` in `sort`. Only the page is
/// sorted: the rest is partitioned around it, so a page costs one pass over the users.
pub fn page<'a>(
    users: impl Iterator<Item = &'a User>,
    sort: UserSort,
    after: Option<&Key>,
    limit: usize,
) -> UserPage {
    let after = after.map(|key| (key.ms, key.username.as_str()));
    let mut rest: Vec<(Place<'a>, &User)> = users
        .map(|u| (place(u, sort), u))
        .filter(|(at, _)| after.is_none_or(|after| compare(sort, *at, after).is_gt()))
        .collect();
    let more = rest.len() > limit;
    if more {
        rest.select_nth_unstable_by(limit, |a, b| compare(sort, a.0, b.0));
        rest.truncate(limit);
    }
    rest.sort_unstable_by(|a, b| compare(sort, a.0, b.0));
    let next = if more {
        rest.last().map(|(at, _)| Key::of(*at).text(sort))
    } else {
        None
    };
    UserPage {
        users: rest.iter().map(|(_, u)| UserView::from(*u)).collect(),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_counts_digits_by_value() {
        let mut names = vec![
            "user10",
            "user2",
            "user1",
            "User3",
            "a01",
            "a1",
            "b",
            "a",
            "x99999999999999999999999",
        ];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            [
                "User3",
                "a",
                "a01",
                "a1",
                "b",
                "user1",
                "user2",
                "user10",
                "x99999999999999999999999"
            ]
        );
        assert_eq!(natural("a", "a"), Ordering::Equal);
        assert_eq!(natural("a2b", "a10"), Ordering::Less);
    }

    #[test]
    fn page_keys_parse_back_and_garbage_is_named() {
        let key = Key {
            ms: Some(1_700_000_000_123),
            username: "al:ice".into(),
        };
        let text = key.text(UserSort::CreatedDesc);
        assert_eq!(text, "-created:1700000000123:al:ice");
        assert_eq!(Key::parse(UserSort::CreatedDesc, &text), Ok(key));
        for garbage in ["", "nothing", "created:", "created:x:alice", "sideways:1"] {
            let error = Key::parse(UserSort::Created, garbage).unwrap_err();
            assert!(error.starts_with("after: "), "{garbage}: {error}");
        }
        let error = Key::parse(UserSort::Username, "-created:1:a").unwrap_err();
        assert!(error.contains("sorted by -created"), "{error}");
    }
}
