//! Usernames that read as one another: `Admin.ops`, `ａdmin.ops` (fullwidth), `𝐚dmin.ops`
//! (mathematical bold), `admın.ops` (dotless ı) and `аdmin.ops` (Cyrillic а) all show as
//! `admin.ops` in the console and in events' `by`. A new username whose key — compatibility
//! forms folded (NFKC), Unicode TS 39's confusable skeleton, lower case, and the skeleton
//! again — is the key of an existing user's name is refused (an attack review created eight such names beside
//! `admin.ops`). Names stay as given; only their keys are compared.

use std::hash::Hasher;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;

/// The key of `username`, hashed: equal for names that read alike. A collision of different
/// keys would refuse a name wrongly, about once in 2^64 pairs.
pub fn key(username: &str) -> u64 {
    // std's hasher with its fixed keys: the same key on every node and after a restart, and
    // the names are chosen by the admin, not by whoever could aim collisions at a table.
    let mut hasher = std::hash::DefaultHasher::new();
    if username.is_ascii() {
        // The same as below, a character at a time: ASCII is its own NFKC, and each ASCII
        // character's key is ASCII of its own.
        for b in username.bytes() {
            for &c in &ASCII_KEYS[usize::from(b)] {
                hasher.write_u32(u32::from(c));
            }
        }
    } else {
        for c in general(username).chars() {
            hasher.write_u32(u32::from(c));
        }
    }
    hasher.finish()
}

/// The key's text. The skeleton comes before lower case, which would lose what it maps
/// capitals to (Greek and Cherokee capitals to Latin ones; `I` to `l`: `aIice` read as
/// `alice`), and after it, for the forms lower case makes (a review of the first version).
/// As `I` reads as `l` and as `i` in upper case, `i` is taken for `l` too: `ADMIN` and
/// `admin` share a key (and so do `alice` and `aiice`, a price worth paying).
fn general(name: &str) -> String {
    let folded: String = name.nfkc().collect();
    let lower: String = unicode_security::skeleton(&folded)
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect();
    unicode_security::skeleton(&lower).collect()
}

/// The key of each ASCII character.
static ASCII_KEYS: LazyLock<Vec<Vec<char>>> = LazyLock::new(|| {
    (0u8..128)
        .map(|b| general(&char::from(b).to_string()).chars().collect())
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_read_alike_share_a_key_and_others_do_not() {
        let admin = key("admin.ops");
        for alike in [
            "Admin.ops",
            "ADMIN.OPS",
            "ａdmin.ops",
            "ａｄｍｉｎ.ops",
            "𝐚dmin.ops",
            "admⅰn.ops",
            "admın.ops",
            "admin\u{2024}ops",
            "аdmin.ops",
            "adrnin.ops",
        ] {
            assert_eq!(key(alike), admin, "{alike}");
        }
        assert_eq!(key("ape"), key("аре"), "whole-script Cyrillic");
        // The next review's: capital I for l, Greek and Cherokee capitals, zeros for o. (Its
        // vv for w and cl for d are pairs of letters for one, which the skeleton does not
        // map.)
        for (alike, name) in [
            ("aIice", "alice"),
            ("paypaI", "paypal"),
            ("ΚΑΤΕ", "kate"),
            ("ᏦᎪᎢᎬ", "kate"),
            ("g00gle", "google"),
        ] {
            assert_eq!(key(alike), key(name), "{alike}");
        }
        assert_eq!(key("ali ce"), key("ali\u{a0}ce"));
        for other in [
            "admins.ops",
            "admin-ops",
            "bob",
            "alice",
            "Мария_1987",
            "やまだ太郎",
        ] {
            assert_ne!(key(other), admin, "{other}");
        }
        assert_ne!(key("bob"), key("bobby"));
    }

    #[test]
    fn the_ascii_path_agrees_with_the_general_one() {
        for b in 0u8..128 {
            let ascii = char::from(b).to_string();
            let mut hasher = std::hash::DefaultHasher::new();
            for c in general(&ascii).chars() {
                hasher.write_u32(u32::from(c));
            }
            assert_eq!(key(&ascii), hasher.finish(), "{b}");
        }
    }
}
