//! Reading a client-credentials token request (RFC 6749 §4.4.2) and its
//! client authentication (§2.3.1) out of method, URI, headers and body.

use crate::b64;
use crate::error::TokenError;
use crate::media_type::{self, BodyFormat};
use crate::params::{self, Params};
use crate::path;

/// What the token endpoint needs from the request headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
}

/// Authenticated-to-be client credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The client used HTTP Basic (earns a Basic challenge on failure).
    pub basic: bool,
}

const fn bad(d: &'static str) -> TokenError {
    TokenError::InvalidRequest(d)
}

/// Checks that need only the headers, so a bad request is answered before
/// its body is read: method, credentials in the URI, Content-Type.
pub fn check_head(head: &RequestHead) -> Result<BodyFormat, TokenError> {
    if head.method != "POST" {
        return Err(TokenError::MethodNotAllowed);
    }
    if let Some(q) = path::query(head.path) {
        let query = params::parse_form(q.as_bytes()).map_err(|_| bad("the query string is malformed"))?;
        if query.contains("client_secret") || query.contains("client_id") {
            return Err(bad("client credentials must not be sent in the query string"));
        }
    }
    let ct = head.content_type.ok_or(bad("the Content-Type header is required"))?;
    media_type::parse(ct).map_err(|e| bad(e.description()))
}

/// Parses the whole request. `check_head` must have passed.
pub fn parse(head: &RequestHead, format: &BodyFormat, body: &[u8]) -> Result<ClientCredentials, TokenError> {
    let params = params::parse(format, body).map_err(|e| bad(e.description()))?;
    let get = |name| params.get(name).map_err(|e| bad(e.description()));
    match get("grant_type")? {
        None => return Err(bad("the grant_type parameter is required")),
        Some("client_credentials") => {}
        Some(_) => return Err(TokenError::UnsupportedGrantType),
    }
    client_authentication(head.authorization, &params)
}

fn client_authentication(authorization: Option<&str>, params: &Params) -> Result<ClientCredentials, TokenError> {
    let body_id = params.get("client_id").map_err(|e| bad(e.description()))?;
    let body_secret = params.get("client_secret").map_err(|e| bad(e.description()))?;
    match authorization {
        Some(auth) => {
            let (scheme, rest) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(TokenError::InvalidClient {
                    description: "the token endpoint accepts only HTTP Basic client authentication",
                    basic: false,
                });
            }
            if body_id.is_some() || body_secret.is_some() {
                return Err(bad("use only one client authentication method: Basic or the request body"));
            }
            let (client_id, client_secret) = decode_basic(rest.trim())?;
            Ok(ClientCredentials { client_id, client_secret, basic: true })
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(ClientCredentials { client_id: id.to_owned(), client_secret: secret.to_owned(), basic: false })
            }
            _ => Err(TokenError::InvalidClient { description: "client credentials are required", basic: false }),
        },
    }
}

/// RFC 6749 §2.3.1: `base64(urlencode(id) ":" urlencode(secret))`.
fn decode_basic(encoded: &str) -> Result<(String, String), TokenError> {
    const MALFORMED: TokenError = TokenError::InvalidRequest("the Basic credentials are malformed");
    let raw = b64::std_decode_lenient(encoded.as_bytes()).ok_or(MALFORMED)?;
    let colon = raw.iter().position(|b| *b == b':').ok_or(MALFORMED)?;
    let id = params::form_decode(&raw[..colon]).ok_or(MALFORMED)?;
    let secret = params::form_decode(&raw[colon + 1..]).ok_or(MALFORMED)?;
    if id.is_empty() || secret.is_empty() {
        return Err(TokenError::InvalidClient { description: "client credentials are required", basic: true });
    }
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn head<'a>(ct: Option<&'a str>, auth: Option<&'a str>) -> RequestHead<'a> {
        RequestHead { method: "POST", path: "/oauth2/token", content_type: ct, authorization: auth }
    }

    fn run(h: RequestHead, body: &str) -> Result<ClientCredentials, TokenError> {
        let f = check_head(&h)?;
        parse(&h, &f, body.as_bytes())
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", b64::std_encode(format!("{id}:{secret}").as_bytes()))
    }

    #[test]
    fn basic_with_form_body() {
        let auth = basic("my%3Aid", "p%40ss+word");
        let c = run(head(Some(FORM), Some(&auth)), "grant_type=client_credentials").unwrap();
        assert_eq!(c, ClientCredentials { client_id: "my:id".into(), client_secret: "p@ss word".into(), basic: true });
        let lower = basic("id", "s").replace("Basic", "basic");
        assert!(run(head(Some(FORM), Some(&lower)), "grant_type=client_credentials").is_ok());
    }

    #[test]
    fn body_credentials() {
        let c = run(head(Some(FORM), None), "client_secret=s&client_id=i&grant_type=client_credentials").unwrap();
        assert_eq!(c, ClientCredentials { client_id: "i".into(), client_secret: "s".into(), basic: false });
        let j = r#"{"grant_type":"client_credentials","client_id":"i","client_secret":"s"}"#;
        assert_eq!(run(head(Some("application/json"), None), j).unwrap(), c);
    }

    #[test]
    fn head_errors() {
        let mut h = head(Some(FORM), None);
        h.method = "GET";
        assert_eq!(check_head(&h), Err(TokenError::MethodNotAllowed));
        assert!(matches!(check_head(&head(None, None)), Err(TokenError::InvalidRequest(_))));
        assert!(matches!(check_head(&head(Some("text/plain"), None)), Err(TokenError::InvalidRequest(_))));
        let mut h = head(Some(FORM), None);
        h.path = "/oauth2/token?client_secret=x";
        assert!(matches!(check_head(&h), Err(TokenError::InvalidRequest(d)) if d.contains("query")));
        h.path = "/oauth2/token?foo=bar";
        assert!(check_head(&h).is_ok());
    }

    #[test]
    fn body_errors() {
        let h = head(Some(FORM), None);
        assert!(
            matches!(run(h, "client_id=i&client_secret=s"), Err(TokenError::InvalidRequest(d)) if d.contains("grant_type"))
        );
        assert_eq!(run(h, "grant_type=password&client_id=i&client_secret=s"), Err(TokenError::UnsupportedGrantType));
        assert!(matches!(
            run(h, "grant_type=client_credentials&grant_type=client_credentials"),
            Err(TokenError::InvalidRequest(_))
        ));
        assert!(matches!(run(h, "grant_type=client_credentials"), Err(TokenError::InvalidClient { basic: false, .. })));
        assert!(matches!(run(h, "grant_type=client_credentials&client_id=i"), Err(TokenError::InvalidClient { .. })));
        assert!(matches!(
            run(h, "grant_type=client_credentials&client_id=i&client_secret="),
            Err(TokenError::InvalidClient { .. })
        ));
    }

    #[test]
    fn auth_errors() {
        let auth = basic("i", "s");
        let h = head(Some(FORM), Some(&auth));
        assert!(
            matches!(run(h, "grant_type=client_credentials&client_secret=s"), Err(TokenError::InvalidRequest(d)) if d.contains("one client authentication"))
        );
        assert!(matches!(run(h, "grant_type=client_credentials&client_id=i"), Err(TokenError::InvalidRequest(_))));
        let h = head(Some(FORM), Some("Basic !!!"));
        assert!(matches!(run(h, "grant_type=client_credentials"), Err(TokenError::InvalidRequest(_))));
        let nocolon = format!("Basic {}", b64::std_encode(b"nocolon"));
        assert!(matches!(
            run(head(Some(FORM), Some(&nocolon)), "grant_type=client_credentials"),
            Err(TokenError::InvalidRequest(_))
        ));
        let empty = basic("", "");
        assert!(matches!(
            run(head(Some(FORM), Some(&empty)), "grant_type=client_credentials"),
            Err(TokenError::InvalidClient { basic: true, .. })
        ));
        let h = head(Some(FORM), Some("Bearer abc"));
        assert!(matches!(run(h, "grant_type=client_credentials"), Err(TokenError::InvalidClient { basic: false, .. })));
    }

    #[test]
    fn multipart_smuggled_secret_is_no_secret() {
        // Issue 6 (4b): per RFC 7578 the request has no client_secret.
        let ct = "multipart/form-data; boundary=B";
        let body = crate::params::tests::smuggling_body("B");
        assert!(matches!(run(head(Some(ct), None), &body), Err(TokenError::InvalidClient { basic: false, .. })));
        // Issue 6 (4c): two boundaries, two readings.
        let two = "multipart/form-data; boundary=B; boundary=C";
        assert!(matches!(run(head(Some(two), None), &body), Err(TokenError::InvalidRequest(_))));
    }
}
