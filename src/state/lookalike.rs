//! Usernames that read as one another: `Admin.ops`, `ａdmin.ops` (fullwidth), `𝐚dmin.ops`
//! (mathematical bold), `admın.ops` (dotless ı) and `аdmin.ops` (Cyrillic а) all show as
//! `admin.ops` in the console and in events' `by`. A new username whose key — compatibility
//! forms folded (NFKC), lower case, then Unicode TS 39's confusable skeleton — is the key of
//! an existing user's name is refused (an attack review created eight such names beside
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
        // The same as below, without normalizing: ASCII is its own NFKC, its lower case
        // is ASCII, and each ASCII character's skeleton is ASCII of its own.
        for b in username.bytes() {
            for &c in &ASCII_SKELETONS[usize::from(b.to_ascii_lowercase())] {
                hasher.write_u32(u32::from(c));
            }
        }
    } else {
        let folded: String = username.nfkc().flat_map(char::to_lowercase).collect();
        for c in unicode_security::skeleton(&folded) {
            hasher.write_u32(u32::from(c));
        }
    }
    hasher.finish()
}

/// The skeleton of each ASCII character.
static ASCII_SKELETONS: LazyLock<Vec<Vec<char>>> = LazyLock::new(|| {
    (0u8..128)
        .map(|b| unicode_security::skeleton(&char::from(b).to_string()).collect())
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
            let general: String = ascii.nfkc().flat_map(char::to_lowercase).collect();
            let mut hasher = std::hash::DefaultHasher::new();
            for c in unicode_security::skeleton(&general) {
                hasher.write_u32(u32::from(c));
            }
            assert_eq!(key(&ascii), hasher.finish(), "{b}");
        }
    }
}
