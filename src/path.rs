//! Request-path rules. Allowed prefixes are access control, so a path that
//! could mean something else after a later normalisation (dot segments,
//! encoded slashes or dots, backslashes) never matches a prefix.

/// `/sales/` style prefixes: absolute, ending in `/`, no dot segments, no
/// empty segments, no query or fragment, printable ASCII.
pub fn validate_prefix(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') || !p.ends_with('/') {
        return Err("must start and end with '/'");
    }
    if p.len() > 256 {
        return Err("is longer than 256 characters");
    }
    if !p.bytes().all(|b| b.is_ascii_graphic()) || p.contains(['?', '#', '\\', '%']) {
        return Err("may hold only visible ASCII without '?', '#', '%' or '\\'");
    }
    if p != "/" && (p.contains("//") || p.split('/').any(|s| s == "." || s == "..")) {
        return Err("may not contain empty, '.' or '..' segments");
    }
    Ok(())
}

/// The path without its query string.
pub fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

/// The query string, if any (without the `?`).
pub fn query(path: &str) -> Option<&str> {
    let q = &path[path.find('?')? + 1..];
    Some(match q.find('#') {
        Some(i) => &q[..i],
        None => q,
    })
}

/// A path that another component might decode or normalise into something
/// else. Envoy normalises paths when configured to (`normalize_path`,
/// `merge_slashes`); we refuse rather than trust that it was.
pub fn is_ambiguous(path: &str) -> bool {
    let p = strip_query(path);
    if !p.starts_with('/') || p.contains("//") || p.contains('\\') {
        return true;
    }
    if p.split('/').any(is_dot_segment) {
        return true;
    }
    let lower = p.as_bytes();
    lower.windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && matches!(w[2], b'e' | b'E' | b'f' | b'F'))
                || (w[1] == b'5' && matches!(w[2], b'c' | b'C')))
    })
}

/// `.` or `..`, also once `;parameters` (raw or as `%3B`) are dropped, as
/// Tomcat, Jetty and Spring do before resolving dot segments: to them
/// `/sales/..;/hr/x` is `/hr/x`. (Runs on every guarded request: no
/// allocation.)
fn is_dot_segment(segment: &str) -> bool {
    let s = segment.as_bytes();
    let param =
        |i: usize| s[i] == b';' || (s[i] == b'%' && s.get(i + 1..i + 3).is_some_and(|h| h.eq_ignore_ascii_case(b"3b")));
    let end = (0..s.len()).find(|&i| param(i)).unwrap_or(s.len());
    matches!(&s[..end], b"." | b"..")
}

/// Whether `request_path` (query allowed) lies under `prefix`. The prefix
/// ends in `/`, so `/sales/` does not cover `/salesforce/`; the bare
/// collection path `/sales` is covered too.
pub fn within_prefix(request_path: &str, prefix: &str) -> bool {
    !is_ambiguous(request_path) && under_prefix(strip_query(request_path), prefix)
}

/// [`within_prefix`] for a path already found unambiguous and stripped of
/// its query: checking one path against many prefixes judges it once.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix) || path.len() + 1 == prefix.len() && prefix.starts_with(path)
}

/// Public path entries: an entry ending in `/` is a prefix, any other entry
/// is an exact path.
pub fn matches_public(request_path: &str, entry: &str) -> bool {
    !is_ambiguous(request_path) && public_entry_covers(strip_query(request_path), entry)
}

/// [`matches_public`] for a path already found unambiguous and stripped of
/// its query.
pub fn public_entry_covers(path: &str, entry: &str) -> bool {
    if entry.ends_with('/') {
        path.starts_with(entry)
    } else {
        path == entry
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn prefixes() {
        assert!(validate_prefix("/sales/").is_ok());
        assert!(validate_prefix("/").is_ok());
        assert!(validate_prefix("/a/b/").is_ok());
        for bad in ["sales/", "/sales", "/a//b/", "/a/../", "/a/./", "/a b/", "/a?/", "/a%2f/", ""] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn within() {
        assert!(within_prefix("/sales/orders?x=1", "/sales/"));
        assert!(within_prefix("/sales", "/sales/"));
        assert!(within_prefix("/sales?x", "/sales/"));
        assert!(!within_prefix("/salesforce/x", "/sales/"));
        assert!(!within_prefix("/hr/x", "/sales/"));
        assert!(!within_prefix("/sales/../hr/x", "/sales/"));
        assert!(!within_prefix("/sales/%2e%2e/hr", "/sales/"));
        assert!(!within_prefix("/sales/a%2Fb", "/sales/"));
        assert!(!within_prefix("/sales//x", "/sales/"));
        assert!(!within_prefix("/sales\\x", "/sales/"));
        // Path parameters hide dot segments from us but not from Tomcat.
        assert!(!within_prefix("/sales/..;/hr/x", "/sales/"));
        assert!(!within_prefix("/sales/..;jsessionid=1/hr/x", "/sales/"));
        assert!(!within_prefix("/sales/.%3B/x", "/sales/"));
        assert!(!within_prefix("/sales/..%3b/hr/x", "/sales/"));
        assert!(within_prefix("/sales/a;v=1/x", "/sales/"), "other path parameters are fine");
        assert!(within_prefix("/sales/...;/x", "/sales/"));
        assert!(within_prefix("/anything/at/all", "/"));
        assert!(within_prefix("/sales/a?q=%2e%2e", "/sales/"), "query is not path");
    }

    #[test]
    fn public() {
        assert!(matches_public("/healthz", "/healthz"));
        assert!(matches_public("/healthz?x", "/healthz"));
        assert!(!matches_public("/healthz/x", "/healthz"));
        assert!(matches_public("/pub/x", "/pub/"));
        assert!(!matches_public("/pub/../secret", "/pub/"));
    }

    #[test]
    fn query_split() {
        assert_eq!(strip_query("/a?b#c"), "/a");
        assert_eq!(query("/a?b=1&c#f"), Some("b=1&c"));
        assert_eq!(query("/a"), None);
    }
}
