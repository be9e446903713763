//! Argon2id password hashing (PHC strings). CPU-bound: callers run these on the blocking pool.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Memory a stored hash may ask of one check at most, KiB (64 MiB; ours ask 19 MiB).
pub const MAX_M_COST: u32 = 64 * 1024;
/// Passes a stored hash may ask for at most (ours: 2).
pub const MAX_T_COST: u32 = 10;
/// Lanes a stored hash may ask for at most (ours: 1).
pub const MAX_P_COST: u32 = 4;
/// Memory × passes at most: four times what this build's own hashes cost.
const MAX_WORK: u64 =
    4 * argon2::Params::DEFAULT_M_COST as u64 * argon2::Params::DEFAULT_T_COST as u64;
/// The longest hash output taken, bytes (ours: 32).
const MAX_OUTPUT_LEN: usize = 64;

/// `phc` parsed, if it is an Argon2id (v19) PHC string whose cost a check can afford.
///
/// A hash names its own cost, and a check runs whatever it names: a hash planted in a
/// shared stream with `m` of 2 GiB or `t` of 4 billion made every login of that user
/// allocate 2 GiB or hold a hashing slot for minutes (an attack review). Only this build
/// writes hashes (`Argon2::default()`), so anything far above its cost is refused.
pub fn affordable(phc: &str) -> Result<PasswordHash, &'static str> {
    let parsed = PasswordHash::new(phc).map_err(|_| "is not a PHC string")?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err("is not an Argon2id hash");
    }
    if parsed.version != Some(0x13) {
        return Err("is not Argon2 version 19");
    }
    let params = argon2::Params::try_from(&parsed).map_err(|_| "has invalid Argon2 parameters")?;
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.m_cost() > MAX_M_COST
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
        || work > MAX_WORK
        || params.output_len().is_none_or(|len| len > MAX_OUTPUT_LEN)
    {
        return Err("asks more of a check than this server allows (m, t, p or its length)");
    }
    Ok(parsed)
}

/// Whether `password` matches the PHC string `phc` (false for a malformed `phc`, or one
/// that is not [`affordable`]).
pub fn verify(password: &str, phc: &str) -> bool {
    affordable(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `phc` with its parameters replaced by `params`.
    fn with_params(phc: &str, params: &str) -> String {
        let parts: Vec<&str> = phc.split('$').collect();
        format!(
            "${}${}${params}${}${}",
            parts[1], parts[2], parts[4], parts[5]
        )
    }

    #[test]
    fn only_hashes_of_an_affordable_cost_are_checked() {
        let phc = hash("pw").unwrap();
        assert!(phc.contains("$m=19456,t=2,p=1$"), "{phc}");
        assert!(affordable(&phc).is_ok());
        // Four times our cost passes (a stronger hash made elsewhere still works)...
        for params in ["m=65536,t=2,p=4", "m=19456,t=8,p=1", "m=8,t=10,p=1"] {
            assert!(affordable(&with_params(&phc, params)).is_ok(), "{params}");
        }
        // ... what an attack review planted does not, and is never run.
        for params in [
            "m=2097152,t=1,p=1",
            "m=16,t=4294967295,p=1",
            "m=65536,t=3,p=1",
            "m=19456,t=11,p=1",
            "m=19456,t=2,p=5",
        ] {
            let planted = with_params(&phc, params);
            assert!(affordable(&planted).is_err(), "{params}");
            let started = std::time::Instant::now();
            assert!(!verify("pw", &planted));
            assert!(started.elapsed() < std::time::Duration::from_millis(5));
        }
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        assert_eq!(affordable(&argon2i).err(), Some("is not an Argon2id hash"));
        let v16 = phc.replacen("$v=19$", "$v=16$", 1);
        assert_eq!(affordable(&v16).err(), Some("is not Argon2 version 19"));
    }

    #[test]
    fn hash_then_verify() {
        let phc = super::hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &phc));
        assert!(!super::verify("wrong horse", &phc));
        assert!(!super::verify("correct horse", "not a phc string"));
    }
}
