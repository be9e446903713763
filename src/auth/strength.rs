//! Password strength (zxcvbn), for `--password_checker true`.

/// `Err` with zxcvbn's warning and suggestions when `password` scores below 3 of 4.
pub fn check(password: &str, user_inputs: &[&str]) -> Result<(), String> {
    let estimate = zxcvbn::zxcvbn(password, user_inputs);
    let score = u8::from(estimate.score());
    if score >= 3 {
        return Ok(());
    }
    let mut message = format!("password: too weak (strength {score} of 4, 3 needed)");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            message.push_str(&format!(". {warning}"));
        }
        for suggestion in feedback.suggestions() {
            message.push_str(&format!(". {suggestion}"));
        }
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn weak_and_strong() {
        let err = super::check("password123", &["bob"]).unwrap_err();
        assert!(err.starts_with("password: too weak"), "{err}");
        assert!(err.len() > 40, "no warning or suggestion: {err}");
        assert!(super::check("correct horse battery staple 93!", &["bob"]).is_ok());
    }
}
