//! Reading a client-credentials token request (RFC 6749 §4.4.2) and its
//! client authentication (§2.3.1) out of method, URI, headers and body.

use crate::b64;
use crate::error::{InvalidClient, InvalidRequest, TokenError};
use crate::media_type::{self, BodyFormat};
use crate::params;
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

const fn bad(cause: InvalidRequest) -> TokenError {
    TokenError::InvalidRequest(cause)
}

fn bad_body(e: params::ParamsError) -> TokenError {
    bad(InvalidRequest::Body(e))
}

/// Checks that need only the headers, so a bad request is answered before
/// its body is read: method, credentials in the URI, Content-Type.
pub fn check_head(head: &RequestHead) -> Result<BodyFormat, TokenError> {
    if head.method != "POST" {
        return Err(TokenError::MethodNotAllowed);
    }
    if let Some(q) = path::query(head.path) {
        let query = params::parse_form(q.as_bytes()).map_err(|_| bad(InvalidRequest::QueryMalformed))?;
        if query.contains("client_secret") || query.contains("client_id") {
            return Err(bad(InvalidRequest::CredentialsInQuery));
        }
    }
    let ct = head.content_type.ok_or(bad(InvalidRequest::ContentTypeMissing))?;
    media_type::parse(ct).map_err(|e| bad(InvalidRequest::ContentType(e)))
}

/// Parses the whole request: its body in `format`, and its `Authorization`
/// header (all the body's reading needs of a head that `check_head` passed).
pub fn parse(authorization: Option<&str>, format: &BodyFormat, body: &[u8]) -> Result<ClientCredentials, TokenError> {
    // The body of nearly every Basic-authenticated request (RFC 6749 §4.4.2's
    // example): the grant type alone. What the general reading gives for it,
    // without building the parameters.
    if *format == BodyFormat::Form && body == BARE_GRANT {
        return client_authentication(authorization, None, None);
    }
    let params = params::parse(format, body).map_err(bad_body)?;
    match params.get("grant_type").map_err(bad_body)? {
        None => return Err(bad(InvalidRequest::GrantTypeMissing)),
        Some("client_credentials") => {}
        Some(_) => return Err(TokenError::UnsupportedGrantType),
    }
    let body_id = params.get("client_id").map_err(bad_body)?;
    let body_secret = params.get("client_secret").map_err(bad_body)?;
    client_authentication(authorization, body_id, body_secret)
}

const BARE_GRANT: &[u8] = b"grant_type=client_credentials";

fn client_authentication(
    authorization: Option<&str>,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<ClientCredentials, TokenError> {
    match authorization {
        Some(auth) => {
            let (scheme, rest) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(TokenError::InvalidClient { cause: InvalidClient::NotBasic, basic: false });
            }
            if body_id.is_some() || body_secret.is_some() {
                return Err(bad(InvalidRequest::TwoAuthenticationMethods));
            }
            let (client_id, client_secret) = decode_basic(rest.trim())?;
            Ok(ClientCredentials { client_id, client_secret, basic: true })
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(ClientCredentials { client_id: id.to_owned(), client_secret: secret.to_owned(), basic: false })
            }
            _ => Err(TokenError::InvalidClient { cause: InvalidClient::NoCredentials, basic: false }),
        },
    }
}

/// RFC 6749 §2.3.1: `base64(urlencode(id) ":" urlencode(secret))`.
fn decode_basic(encoded: &str) -> Result<(String, String), TokenError> {
    const MALFORMED: TokenError = TokenError::InvalidRequest(InvalidRequest::BasicMalformed);
    let raw = b64::std_decode_lenient(encoded.as_bytes()).ok_or(MALFORMED)?;
    let colon = raw.iter().position(|b| *b == b':').ok_or(MALFORMED)?;
    let id = params::form_decode(&raw[..colon]).ok_or(MALFORMED)?;
    let secret = params::form_decode(&raw[colon + 1..]).ok_or(MALFORMED)?;
    if id.is_empty() || secret.is_empty() {
        return Err(TokenError::InvalidClient { cause: InvalidClient::NoCredentials, basic: true });
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
        parse(h.authorization, &f, body.as_bytes())
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", b64::std_encode(format!("{id}:{secret}").as_bytes()))
    }

    /// The bare grant's shortcut answers what the general reading does (a
    /// trailing `&` takes the general path and adds no parameter).
    #[test]
    fn bare_grant_reads_as_the_general_reading() {
        let ok = basic("client-1", "s3cret");
        for auth in [Some(ok.as_str()), None, Some("Bearer x"), Some("Basic !!"), Some("Basic Og=="), Some("basic")] {
            let h = head(Some(FORM), auth);
            assert_eq!(run(h, "grant_type=client_credentials"), run(h, "grant_type=client_credentials&"), "{auth:?}");
        }
        let c = run(head(Some(FORM), Some(&ok)), "grant_type=client_credentials").unwrap();
        assert_eq!((c.client_id.as_str(), c.client_secret.as_str(), c.basic), ("client-1", "s3cret", true));
        // JSON that happens to be those bytes is not JSON: refused as before.
        let json = head(Some("application/json"), Some(&ok));
        assert_eq!(run(json, "grant_type=client_credentials"), run(json, "grant_type=client_credentials&"));
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
        assert_eq!(check_head(&head(None, None)), Err(bad(InvalidRequest::ContentTypeMissing)));
        assert_eq!(
            check_head(&head(Some("text/plain"), None)),
            Err(bad(InvalidRequest::ContentType(crate::media_type::MediaTypeError::Unsupported)))
        );
        let mut h = head(Some(FORM), None);
        h.path = "/oauth2/token?client_secret=x";
        assert_eq!(check_head(&h), Err(bad(InvalidRequest::CredentialsInQuery)));
        h.path = "/oauth2/token?foo=bar";
        assert!(check_head(&h).is_ok());
    }

    #[test]
    fn body_errors() {
        let h = head(Some(FORM), None);
        assert_eq!(run(h, "client_id=i&client_secret=s"), Err(bad(InvalidRequest::GrantTypeMissing)));
        assert_eq!(run(h, "grant_type=password&client_id=i&client_secret=s"), Err(TokenError::UnsupportedGrantType));
        assert_eq!(
            run(h, "grant_type=client_credentials&grant_type=client_credentials"),
            Err(bad_body(params::ParamsError::Repeated))
        );
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
        assert_eq!(
            run(h, "grant_type=client_credentials&client_secret=s"),
            Err(bad(InvalidRequest::TwoAuthenticationMethods))
        );
        assert!(matches!(run(h, "grant_type=client_credentials&client_id=i"), Err(TokenError::InvalidRequest(_))));
        let h = head(Some(FORM), Some("Basic !!!"));
        assert_eq!(run(h, "grant_type=client_credentials"), Err(bad(InvalidRequest::BasicMalformed)));
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
        assert_eq!(
            run(h, "grant_type=client_credentials"),
            Err(TokenError::InvalidClient { cause: InvalidClient::NotBasic, basic: false })
        );
    }

    #[test]
    fn multipart_smuggled_secret_is_no_secret() {
        // Issue 6 (4b): per RFC 7578 the request has no client_secret.
        let ct = "multipart/form-data; boundary=B";
        let body = crate::params::tests::smuggling_body("B");
        assert_eq!(
            run(head(Some(ct), None), &body),
            Err(TokenError::InvalidClient { cause: InvalidClient::NoCredentials, basic: false })
        );
        // Issue 6 (4c): two boundaries, two readings.
        let two = "multipart/form-data; boundary=B; boundary=C";
        assert_eq!(
            run(head(Some(two), None), &body),
            Err(bad(InvalidRequest::ContentType(crate::media_type::MediaTypeError::RepeatedParameter)))
        );
    }

    /// Findings 4 and 7: neither `LF--B` in a CRLF body nor `name=` inside
    /// a quoted `filename` yields a client_secret; the first is a 400.
    #[test]
    fn multipart_lf_delimiter_or_quoted_name_yields_no_secret() {
        use crate::params::{Malformed, ParamsError};
        let ct = "multipart/form-data; boundary=B";
        let body = crate::params::tests::lf_smuggling_body("B");
        assert_eq!(
            run(head(Some(ct), None), &body),
            Err(bad_body(ParamsError::Malformed(Malformed::MultipartAmbiguous)))
        );
        let body = "--B\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--B\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nid\r\n--B\r\nContent-Disposition: form-data; filename=\"a; name=client_secret; x=\"; name=\"note\"\r\n\r\nsecret\r\n--B--\r\n";
        assert_eq!(
            run(head(Some(ct), None), body),
            Err(TokenError::InvalidClient { cause: InvalidClient::NoCredentials, basic: false })
        );
    }
}
