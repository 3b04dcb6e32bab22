//! A locally generated HTTP response, built by the pure modules and sent by the
//! host layer with `send_http_response`.

use std::borrow::Cow;

use crate::error::{BearerError, TokenError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    /// Fixed values are borrowed: a token response allocates none.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    fn json(status: u32, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", Cow::Borrowed("application/json")),
                ("cache-control", Cow::Borrowed("no-store")),
                ("pragma", Cow::Borrowed("no-cache")),
            ],
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }

    /// The RFC 6749 §5.1 success body.
    pub fn token(access_token: &str, expires_in: u64) -> Self {
        let mut body = String::with_capacity(access_token.len() + 64);
        body.push_str("{\"access_token\":\"");
        body.push_str(access_token); // base64url and dots only: no escaping needed
        body.push_str("\",\"token_type\":\"bearer\",\"expires_in\":");
        crate::profile::push_decimal(&mut body, expires_in);
        body.push('}');
        Self::json(200, body.into_bytes())
    }

    pub fn token_error(err: TokenError, realm: &str) -> Self {
        let mut resp = Self::json(err.status(), error_body(Some(err.code()), err.description()));
        match err {
            TokenError::MethodNotAllowed => resp.headers.push(("allow", Cow::Borrowed("POST"))),
            TokenError::InvalidClient { basic: true, .. } => {
                resp.headers.push(("www-authenticate", Cow::Owned(format!("Basic realm=\"{realm}\""))))
            }
            TokenError::LockedOut { retry_after } => {
                resp.headers.push(("retry-after", Cow::Owned(retry_after.max(1).to_string())))
            }
            _ => {}
        }
        resp
    }

    pub fn bearer_error(err: BearerError, realm: &str) -> Self {
        let mut resp = Self::json(err.status(), error_body(err.code(), err.description()));
        if err.status() != 503 {
            let challenge = match err.code() {
                Some(code) => {
                    format!("Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{}\"", err.description())
                }
                None => format!("Bearer realm=\"{realm}\""),
            };
            resp.headers.push(("www-authenticate", Cow::Owned(challenge)));
        }
        resp
    }
}

/// `{"error":…,"error_description":…}`, or only the description when there
/// is no error code (RFC 6750 §3.1, a request without credentials).
fn error_body(code: Option<&str>, description: &str) -> Vec<u8> {
    // Codes and descriptions are our own constants, never client input;
    // serde_json still escapes them so that stays harmless if it changes.
    let description = json_string(description);
    match code {
        Some(code) => format!("{{\"error\":{},\"error_description\":{description}}}", json_string(code)),
        None => format!("{{\"error_description\":{description}}}"),
    }
    .into_bytes()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::error::InvalidClient;

    #[test]
    fn token_body_is_rfc6749_json() {
        let r = LocalResponse::token("a.b.c", 3600);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"access_token":"a.b.c","token_type":"bearer","expires_in":3600}));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
    }

    #[test]
    fn method_not_allowed_has_allow() {
        let r = LocalResponse::token_error(TokenError::MethodNotAllowed, "x");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
    }

    #[test]
    fn basic_challenge_only_for_basic() {
        let e = TokenError::InvalidClient { cause: InvalidClient::Failed, basic: true };
        assert_eq!(LocalResponse::token_error(e, "r").header("www-authenticate"), Some("Basic realm=\"r\""));
        let e = TokenError::InvalidClient { cause: InvalidClient::Failed, basic: false };
        assert_eq!(LocalResponse::token_error(e, "r").header("www-authenticate"), None);
    }

    #[test]
    fn locked_out_is_429_with_retry_after() {
        let r = LocalResponse::token_error(TokenError::LockedOut { retry_after: 42 }, "r");
        assert_eq!((r.status, r.header("retry-after")), (429, Some("42")));
        assert_eq!(r.header("www-authenticate"), None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "temporarily_unavailable");
        let r = LocalResponse::token_error(TokenError::LockedOut { retry_after: 0 }, "r");
        assert_eq!(r.header("retry-after"), Some("1"), "never 0: that would invite an immediate retry");
    }

    #[test]
    fn bearer_challenges() {
        // RFC 6750 §3.1: no credentials, no error code, in challenge or body.
        let r = LocalResponse::bearer_error(BearerError::Missing, "api");
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, serde_json::json!({"error_description": "a bearer access token is required"}));
        let r = LocalResponse::bearer_error(BearerError::InvalidToken(crate::jwt::JwtError::Expired), "api");
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the access token expired\"")
        );
        let r = LocalResponse::bearer_error(BearerError::InsufficientScope, "api");
        assert_eq!(r.status, 403);
        assert!(r.header("www-authenticate").unwrap().contains("error=\"insufficient_scope\""));
    }
}
