//! RFC 8414 authorization server metadata at
//! `/.well-known/oauth-authorization-server`, answered by the filter itself.
//!
//! The issuer is never taken from the request: the request's `:authority`
//! only selects one of the configured issuers (the deployment's regional host
//! names and custom domains), so a forged `Host` cannot make the filter
//! vouch for a name it does not serve. An unconfigured host gets a JSON 404.
//!
//! `/.well-known/openid-configuration` gets a JSON 404 as well: Tollgate is
//! not an OpenID provider, and discovery clients that try it first (Spring
//! Security) move on after a 4xx but abort on a body they cannot parse, such
//! as the guard's 401.

use std::borrow::Cow;

use crate::response::LocalResponse;

pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
pub const OPENID_PATH: &str = "/.well-known/openid-configuration";

/// More would be a config mistake rather than a deployment.
const MAX_ISSUERS: usize = 256;

#[derive(Debug)]
struct Issuer {
    /// Lower-cased host (brackets kept for IPv6 literals).
    host: String,
    port: u16,
    /// The port is the scheme's default, so an authority without a port
    /// means this issuer.
    default_port: bool,
    /// The metadata document, built once.
    document: Vec<u8>,
}

/// The configured issuers, each with its metadata document.
#[derive(Debug, Default)]
pub struct Issuers(Vec<Issuer>);

/// `host[:port]` of an authority or an issuer URL.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let hostname_ok =
        host.starts_with('[') || host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host.is_empty() || host.len() > 253 || !hostname_ok {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&p| p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn parse_issuer(url: &str, token_path: &str) -> Result<Issuer, &'static str> {
    const SHAPE: &str = "must be an absolute http(s) URL with a host, an optional port and no path, query or fragment";
    let (authority, default) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, 80)
    } else {
        return Err(SHAPE);
    };
    if authority.contains(['/', '?', '#', '@']) {
        return Err(SHAPE);
    }
    let (host, port) = split_authority(authority).ok_or(SHAPE)?;
    // Written out rather than through serde_json::Value, which would add
    // its map and serializer to the .wasm for one document.
    let document = format!(
        concat!(
            "{{\"issuer\":{},\"token_endpoint\":{},",
            "\"grant_types_supported\":[\"client_credentials\"],",
            "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\",\"client_secret_post\"],",
            // Required by RFC 8414 §2; no authorization endpoint means no
            // response types, and the honest list is empty.
            "\"response_types_supported\":[]}}"
        ),
        json_string(url),
        json_string(&format!("{url}{token_path}"))
    )
    .into_bytes();
    Ok(Issuer { host, port: port.unwrap_or(default), default_port: !matches!(port, Some(p) if p != default), document })
}

impl Issuers {
    /// Validates the `issuers` list; an error carries the entry's index.
    pub fn parse(urls: &[String], token_path: &str) -> Result<Self, (usize, &'static str)> {
        if urls.len() > MAX_ISSUERS {
            return Err((MAX_ISSUERS, "at most 256 issuers"));
        }
        let mut out: Vec<Issuer> = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let issuer = parse_issuer(url, token_path).map_err(|e| (i, e))?;
            // Two issuers one request could select would make the answer
            // depend on list order.
            if out
                .iter()
                .any(|o| o.host == issuer.host && (o.port == issuer.port || (o.default_port && issuer.default_port)))
            {
                return Err((i, "serves the same host and port as an earlier issuer"));
            }
            out.push(issuer);
        }
        Ok(Self(out))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The issuer a request's `:authority` names: the host compared without
    /// case, the port explicit or the issuer scheme's default.
    fn find(&self, authority: &str) -> Option<&Issuer> {
        let (host, port) = split_authority(authority)?;
        self.0.iter().find(|i| {
            i.host == host
                && match port {
                    Some(p) => p == i.port,
                    None => i.default_port,
                }
        })
    }
}

/// Whether the filter answers this path itself (query ignored).
pub fn is_discovery_path(path: &str) -> bool {
    let path = crate::path::strip_query(path);
    [METADATA_PATH, OPENID_PATH]
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn json(status: u32, cache: &'static str, body: Vec<u8>) -> LocalResponse {
    LocalResponse {
        status,
        headers: vec![("content-type", Cow::Borrowed("application/json")), ("cache-control", Cow::Borrowed(cache))],
        body,
    }
}

fn error(status: u32, code: &str, description: &str) -> LocalResponse {
    let body = format!("{{\"error\":{},\"error_description\":{}}}", json_string(code), json_string(description));
    json(status, "no-store", body.into_bytes())
}

fn not_found(description: &str) -> LocalResponse {
    error(404, "not_found", description)
}

/// The answer to a request on a [`is_discovery_path`] path. HEAD gets the
/// GET answer (Envoy drops the body of a local reply to HEAD).
pub fn respond(method: &str, path: &str, authority: Option<&str>, issuers: &Issuers) -> LocalResponse {
    if method != "GET" && method != "HEAD" {
        let mut r = error(405, "invalid_request", "the metadata endpoint accepts only GET and HEAD");
        r.headers.push(("allow", Cow::Borrowed("GET, HEAD")));
        return r;
    }
    if crate::path::strip_query(path) != METADATA_PATH {
        // OpenID discovery, and RFC 8414 §3 path-suffixed issuers, which we
        // never configure.
        return not_found("no metadata is published at this path");
    }
    match authority.and_then(|a| issuers.find(a)) {
        // Public and the same for every client: caches may keep it a while.
        Some(issuer) => json(200, "public, max-age=300", issuer.document.clone()),
        None => not_found("no authorization server metadata is published for this host"),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn issuers(list: &[&str]) -> Issuers {
        Issuers::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "/oauth2/token").unwrap()
    }

    fn refused(list: &[&str]) -> (usize, &'static str) {
        Issuers::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "/oauth2/token").unwrap_err()
    }

    fn doc(r: &LocalResponse) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn metadata_document() {
        let set = issuers(&["https://us.api.example.com", "https://api.example.com"]);
        let r = respond("GET", METADATA_PATH, Some("api.example.com"), &set);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            doc(&r),
            serde_json::json!({
                "issuer": "https://api.example.com",
                "token_endpoint": "https://api.example.com/oauth2/token",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "response_types_supported": [],
            })
        );
        let r = respond("HEAD", &format!("{METADATA_PATH}?x=1"), Some("US.API.Example.COM:443"), &set);
        assert_eq!(doc(&r)["issuer"], "https://us.api.example.com");
    }

    #[test]
    fn authority_selects_an_issuer_exactly() {
        let set =
            issuers(&["https://a.example", "http://127.0.0.1:8080", "http://[::1]:9000", "https://b.example:8443"]);
        let issuer = |authority: &str| {
            let r = respond("GET", METADATA_PATH, Some(authority), &set);
            (r.status == 200).then(|| doc(&r)["issuer"].as_str().unwrap().to_owned())
        };
        assert_eq!(issuer("a.example").as_deref(), Some("https://a.example"));
        assert_eq!(issuer("A.EXAMPLE:443").as_deref(), Some("https://a.example"));
        assert_eq!(issuer("a.example:80"), None);
        assert_eq!(issuer("a.example."), None);
        assert_eq!(issuer("x.a.example"), None);
        assert_eq!(issuer("evil.example"), None);
        assert_eq!(issuer("127.0.0.1:8080").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(issuer("127.0.0.1"), None);
        assert_eq!(issuer("[::1]:9000").as_deref(), Some("http://[::1]:9000"));
        assert_eq!(issuer("b.example:8443").as_deref(), Some("https://b.example:8443"));
        assert_eq!(issuer("b.example"), None);
        for junk in ["", ":", "a.example:", "a.example:0", "a.example:99999", "a.example:x", "u@a.example", "[zz]"] {
            assert_eq!(issuer(junk), None, "{junk:?}");
        }
        assert_eq!(respond("GET", METADATA_PATH, None, &set).status, 404);
    }

    #[test]
    fn other_paths_and_methods() {
        let set = issuers(&["https://a.example"]);
        for p in [
            METADATA_PATH,
            "/.well-known/oauth-authorization-server/tenant",
            OPENID_PATH,
            "/.well-known/openid-configuration?x",
        ] {
            assert!(is_discovery_path(p), "{p}");
        }
        for p in ["/.well-known/oauth-authorization-serverx", "/.well-known/", "/api/.well-known/openid-configuration"]
        {
            assert!(!is_discovery_path(p), "{p}");
        }
        let r = respond("GET", OPENID_PATH, Some("a.example"), &set);
        assert_eq!((r.status, doc(&r)["error"].as_str()), (404, Some("not_found")));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let r = respond("GET", "/.well-known/oauth-authorization-server/x", Some("a.example"), &set);
        assert_eq!(r.status, 404);
        let r = respond("POST", METADATA_PATH, Some("a.example"), &set);
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
        assert_eq!(doc(&r)["error"], "invalid_request");
        let r = respond("GET", METADATA_PATH, Some("a.example"), &Issuers::default());
        assert_eq!(r.status, 404);
    }

    #[test]
    fn config_errors() {
        for bad in [
            "api.example.com",
            "ftp://a.example",
            "https://",
            "https://a.example/",
            "https://a.example/tenant",
            "https://a.example?x",
            "https://a.example#f",
            "https://user@a.example",
            "https://a.example:0",
            "https://a.example:65536",
            "https://a_b.example",
            "HTTPS://a.example",
        ] {
            assert_eq!(refused(&[bad]).0, 0, "{bad}");
        }
        assert_eq!(refused(&["https://a.example", "https://A.example:443"]).0, 1);
        assert_eq!(refused(&["https://a.example", "http://a.example"]).0, 1);
        assert_eq!(issuers(&["https://a.example", "http://a.example:8080"]).len(), 2);
    }
}
