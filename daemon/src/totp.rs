//! TOTP (RFC 6238) as every authenticator app does it: SHA-1, 6 digits,
//! 30-second steps, one step of clock skew either way. [`verify`] is the one
//! check the portal (and later the SSH jump host) calls; it refuses a code
//! whose time step is not newer than the last one accepted for the user, so a
//! code cannot be used twice. Secrets are base32 without padding, as in the
//! `otpauth://` URI.

use rand_core::{OsRng, RngCore};
use totp_rs::{Algorithm, Secret, TOTP};

/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
const SECRET_BYTES: usize = 20;

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpReject {
    #[error("the code is not six digits")]
    Malformed,
    #[error("the code does not match")]
    Mismatch,
    #[error("the code was used already")]
    Reused,
    #[error("the stored TOTP secret is not valid base32")]
    BadSecret,
}

impl TotpReject {
    /// A short machine-readable reason for audit records.
    pub fn reason(self) -> &'static str {
        match self {
            TotpReject::Malformed => "totp_malformed",
            TotpReject::Mismatch => "totp_mismatch",
            TotpReject::Reused => "totp_reused",
            TotpReject::BadSecret => "totp_bad_secret",
        }
    }
}

/// A fresh random secret, base32 (no padding).
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    match Secret::Raw(bytes.to_vec()).to_encoded() {
        Secret::Encoded(text) => text,
        Secret::Raw(_) => String::new(),
    }
}

/// Checks `code` for `secret` at unix time `now`, accepting the step before
/// and after the current one. `last_step` is the newest step accepted before
/// for this user: a code of that step or an older one is [`TotpReject::Reused`].
/// Returns the matched step, to be stored as the new `last_step`.
pub fn verify(
    secret: &str,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> Result<u64, TotpReject> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpReject::Malformed);
    }
    let totp = totp_for(secret)?;
    let current = now / STEP_SECS;
    let mut matched = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        // Compare every candidate (no early exit), in constant time.
        if constant_time_eq(totp.generate(step * STEP_SECS).as_bytes(), code.as_bytes()) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpReject::Mismatch)?;
    if last_step.is_some_and(|last| step <= last) {
        return Err(TotpReject::Reused);
    }
    Ok(step)
}

/// The code for `secret` at unix time `now` (for tests and tools).
pub fn code_at(secret: &str, now: u64) -> Result<String, TotpReject> {
    Ok(totp_for(secret)?.generate(now))
}

/// The `otpauth://totp/...` URI an authenticator app scans. `issuer` and
/// `account` are percent-encoded.
pub fn otpauth_uri(secret: &str, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    let account = percent_encode(account);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}"
    )
}

fn totp_for(secret: &str) -> Result<TOTP, TotpReject> {
    let bytes = Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|_parse| TotpReject::BadSecret)?;
    if bytes.is_empty() {
        return Err(TotpReject::BadSecret);
    }
    Ok(TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        bytes,
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // RFC 6238 appendix B's SHA-1 secret "12345678901234567890", base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_vectors_last_six_digits() {
        assert_eq!(code_at(RFC_SECRET, 59).unwrap(), "287082");
        assert_eq!(code_at(RFC_SECRET, 1_111_111_109).unwrap(), "081804");
        assert_eq!(code_at(RFC_SECRET, 2_000_000_000).unwrap(), "279037");
    }

    #[test]
    fn accepts_one_step_of_skew_and_refuses_reuse() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, now).unwrap();
        let step = verify(&secret, &code, now, None).unwrap();
        assert_eq!(step, now / STEP_SECS);
        assert_eq!(
            verify(&secret, &code, now, Some(step)),
            Err(TotpReject::Reused)
        );
        // The previous and next step still match, two steps away does not.
        let prev = code_at(&secret, now - 30).unwrap();
        assert_eq!(verify(&secret, &prev, now, None), Ok(step - 1));
        let next = code_at(&secret, now + 30).unwrap();
        assert_eq!(verify(&secret, &next, now, Some(step)), Ok(step + 1));
        let old = code_at(&secret, now - 60).unwrap();
        if old != code && old != prev && old != next {
            assert_eq!(verify(&secret, &old, now, None), Err(TotpReject::Mismatch));
        }
    }

    #[test]
    fn malformed_codes_and_secrets() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        for bad in ["", "12345", "1234567", "12a456"] {
            assert_eq!(verify(&secret, bad, 0, None), Err(TotpReject::Malformed));
        }
        assert_eq!(verify("!!!", "123456", 0, None), Err(TotpReject::BadSecret));
    }

    #[test]
    fn uri_has_the_parameters_apps_expect() {
        let uri = otpauth_uri("ABC", "research gw", "alice");
        assert_eq!(
            uri,
            "otpauth://totp/research%20gw:alice?secret=ABC&issuer=research%20gw&algorithm=SHA1&digits=6&period=30"
        );
    }
}
