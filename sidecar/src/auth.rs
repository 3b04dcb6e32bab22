//! Bearer tokens for the admin and data APIs.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest accepted token, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A configured bearer token, held as its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

impl TokenDigest {
    /// Digest of `token` (no validation).
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&d))
    }
}

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("{what} is missing: set {env} or pass {flag} PATH")]
    Missing { what: &'static str, env: &'static str, flag: &'static str },
    #[error("cannot read {what} file {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} from {source_desc} is too short ({len} characters, at least {MIN_TOKEN_CHARS} required)")]
    TooShort { what: &'static str, source_desc: String, len: usize },
    #[error("{what} from {source_desc} must consist of printable ASCII characters without spaces")]
    BadChars { what: &'static str, source_desc: String },
}

/// Where a token comes from.
#[derive(Debug, Clone, Copy)]
pub struct TokenSpec {
    /// "admin token" / "data token", for messages.
    pub what: &'static str,
    /// Environment variable holding the token.
    pub env: &'static str,
    /// Command-line flag naming a file with the token.
    pub flag: &'static str,
}

/// The admin token's sources.
pub const ADMIN_TOKEN: TokenSpec =
    TokenSpec { what: "admin token", env: "TOLLGATE_ADMIN_TOKEN", flag: "--admin-token-file" };

/// The data token's sources.
pub const DATA_TOKEN: TokenSpec =
    TokenSpec { what: "data token", env: "TOLLGATE_DATA_TOKEN", flag: "--data-token-file" };

/// Loads a token from `file` (if given; surrounding whitespace such as the
/// trailing newline is trimmed) or else from the environment, and validates
/// it: at least 16 characters, printable ASCII, no spaces.
pub fn load_token(spec: TokenSpec, file: Option<&Path>) -> Result<TokenDigest, ApiTokenError> {
    let (raw, source_desc) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ApiTokenError::Read {
                what: spec.what,
                path: path.display().to_string(),
                source,
            })?;
            (text.trim().to_string(), format!("{} {}", spec.flag, path.display()))
        }
        None => match std::env::var_os(spec.env) {
            None => return Err(ApiTokenError::Missing { what: spec.what, env: spec.env, flag: spec.flag }),
            Some(v) if v.is_empty() => {
                return Err(ApiTokenError::Missing { what: spec.what, env: spec.env, flag: spec.flag })
            }
            Some(v) => match v.into_string() {
                Ok(s) => (s, spec.env.to_string()),
                Err(_) => return Err(ApiTokenError::BadChars { what: spec.what, source_desc: spec.env.to_string() }),
            },
        },
    };
    validate_token(spec.what, &source_desc, &raw)?;
    Ok(TokenDigest::of(&raw))
}

fn validate_token(what: &'static str, source_desc: &str, token: &str) -> Result<(), ApiTokenError> {
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiTokenError::BadChars { what, source_desc: source_desc.to_string() });
    }
    let len = token.len();
    if len < MIN_TOKEN_CHARS {
        return Err(ApiTokenError::TooShort { what, source_desc: source_desc.to_string(), len });
    }
    Ok(())
}

/// Extracts the token from an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    if token.is_empty() {
        None
    } else {
        Some(token)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_only_same_token() {
        let d = TokenDigest::of("0123456789abcdef");
        assert!(d.matches("0123456789abcdef"));
        assert!(!d.matches("0123456789abcdeF"));
        assert!(!d.matches(""));
        assert_eq!(format!("{d:?}"), "TokenDigest(<redacted>)");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn token_validation() {
        assert!(validate_token("t", "X", "0123456789abcdef").is_ok());
        assert!(matches!(validate_token("t", "X", "short"), Err(ApiTokenError::TooShort { len: 5, .. })));
        assert!(matches!(validate_token("t", "X", "0123456789 abcdef"), Err(ApiTokenError::BadChars { .. })));
        assert!(matches!(validate_token("t", "X", "0123456789abcdéf"), Err(ApiTokenError::BadChars { .. })));
    }

    #[test]
    fn token_from_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "  0123456789abcdef0123\n").unwrap();
        let d = load_token(ADMIN_TOKEN, Some(&f)).unwrap();
        assert!(d.matches("0123456789abcdef0123"));
        std::fs::write(&f, "short\n").unwrap();
        let err = load_token(ADMIN_TOKEN, Some(&f)).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        assert!(!err.contains("short\n"));
        let missing = dir.path().join("missing");
        assert!(matches!(load_token(ADMIN_TOKEN, Some(&missing)), Err(ApiTokenError::Read { .. })));
    }
}
