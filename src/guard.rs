//! The bearer guard (RFC 6750): finds the token, verifies it against the
//! profile set, checks the path against the profile's allowed prefixes.
//!
//! Verified tokens are remembered per worker, keyed by the exact token text
//! and tagged with the profile-set generation they were verified against: a
//! new generation (rotation, disable, delete, prefix change) empties the
//! cache, so a revoked key fails on the very next request. Time and path are
//! re-checked on every hit.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::BearerError;
use crate::jwt::{self, JwtError};
use crate::profile::{Profile, ProfileLookup};

struct CachedToken {
    /// The whole token; the map is keyed by its signature only (cheaper to
    /// hash), so a hit must still match the token exactly.
    token: Box<str>,
    profile: Rc<Profile>,
    exp: u64,
    nbf: u64,
}

/// The verified-token cache's bound in (estimated) heap bytes, on top of the
/// entry count: it holds whole tokens, and only tokens that verified.
pub const VERIFIED_CACHE_MAX_BYTES: usize = 2 << 20;

pub struct VerifiedCache {
    generation: u64,
    entries: HashMap<Box<str>, CachedToken>,
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, VERIFIED_CACHE_MAX_BYTES)
    }

    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self { generation: 0, entries: HashMap::new(), capacity, bytes: 0, max_bytes }
    }

    /// The estimated heap the entries hold (at most the byte bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Remembers a verified token; when a bound would be crossed, starts over.
    fn insert(&mut self, signature: &str, entry: CachedToken) {
        let cost = signature.len() + entry.token.len() + std::mem::size_of::<(Box<str>, CachedToken)>() + 16;
        if self.entries.len() >= self.capacity || self.bytes + cost > self.max_bytes {
            self.clear();
        }
        if cost > self.max_bytes || self.capacity == 0 {
            return;
        }
        if let Some(old) = self.entries.insert(signature.into(), entry) {
            self.bytes -= signature.len() + old.token.len() + std::mem::size_of::<(Box<str>, CachedToken)>() + 16;
        }
        self.bytes += cost;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// RFC 6750's `b64token` characters (besides the trailing `=`): a table,
/// since every guarded request checks each character of its token.
const B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// The token from `Authorization: Bearer <token>` (RFC 6750 §2.1).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, BearerError> {
    let token = bearer_candidate(authorization)?;
    check_b64token(token)?;
    Ok(token)
}

/// The text after the `Bearer` scheme, trimmed, within our length bound
/// (before anything hashes it), its characters not yet checked.
fn bearer_candidate(authorization: Option<&str>) -> Result<&str, BearerError> {
    let auth = authorization.ok_or(BearerError::Missing)?.trim();
    let (scheme, token) = auth.split_once(' ').unwrap_or((auth, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::Missing);
    }
    let token = token.trim_start();
    if token.len() > jwt::MAX_TOKEN_LEN {
        return Err(BearerError::InvalidToken(JwtError::Malformed));
    }
    Ok(token)
}

/// RFC 6750's `b64token` syntax.
fn check_b64token(token: &str) -> Result<(), BearerError> {
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.bytes().all(|b| B64TOKEN[b as usize]) {
        return Err(BearerError::InvalidToken(JwtError::Malformed));
    }
    Ok(())
}

/// Authorizes one request. `generation` identifies `set`; when it differs
/// from the cache's, the cache is emptied first.
pub fn authorize(
    authorization: Option<&str>,
    request_path: &str,
    set: &dyn ProfileLookup,
    generation: u64,
    now: u64,
    leeway: u64,
    cache: &mut VerifiedCache,
) -> Result<Rc<Profile>, BearerError> {
    // The syntax check waits for a cache miss: a cached token is exactly a
    // token that passed it (and its signature) before.
    let token = bearer_candidate(authorization)?;
    if cache.generation != generation {
        cache.clear();
        cache.generation = generation;
    }
    let invalid = BearerError::InvalidToken;
    let signature = token.rsplit_once('.').map_or(token, |(_, s)| s);
    let profile = match cache.entries.get(signature).filter(|hit| *hit.token == *token) {
        Some(hit) => {
            jwt::check_time(hit.exp, hit.nbf, now, leeway).map_err(invalid)?;
            Rc::clone(&hit.profile)
        }
        None => {
            check_b64token(token)?;
            let v = jwt::verify(token, |kid| set.by_kid(kid)).map_err(invalid)?;
            jwt::check_time(v.exp, v.nbf, now, leeway).map_err(invalid)?;
            let entry = CachedToken { token: token.into(), profile: Rc::clone(&v.profile), exp: v.exp, nbf: v.nbf };
            cache.insert(signature, entry);
            v.profile
        }
    };
    if !profile.allows_path(request_path) {
        return Err(BearerError::InsufficientScope);
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::tests::record;
    use crate::profile::ProfileSet;

    fn set(records: &[crate::profile::ProfileRecord]) -> ProfileSet {
        ProfileSet::from_records(records).unwrap()
    }

    #[test]
    fn extraction() {
        assert_eq!(bearer_token(None), Err(BearerError::Missing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(BearerError::Missing));
        assert_eq!(bearer_token(Some("bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer_token(Some("Bearer  a.b.c ")), Ok("a.b.c"));
        assert!(matches!(bearer_token(Some("Bearer")), Err(BearerError::InvalidToken(_))));
        assert!(matches!(bearer_token(Some("Bearer a b")), Err(BearerError::InvalidToken(_))));
        assert!(matches!(bearer_token(Some("Bearer a\"b")), Err(BearerError::InvalidToken(_))));
    }

    #[test]
    fn allow_scope_and_cache() {
        let s = set(&[record(1)]);
        let p = s.by_kid(&record(1).kid).unwrap().clone();
        let t = jwt::mint(&p, 1000, 3600, &[1; 16]);
        let auth = format!("Bearer {t}");
        let mut cache = VerifiedCache::new(8);
        let who = authorize(Some(&auth), "/sales/x", &s, 1, 1000, 0, &mut cache).unwrap();
        assert_eq!(who.client_id, "client-1");
        assert_eq!(cache.len(), 1);
        // Cached: still checks scope and time.
        assert_eq!(
            authorize(Some(&auth), "/hr/x", &s, 1, 1000, 0, &mut cache).err(),
            Some(BearerError::InsufficientScope)
        );
        assert_eq!(
            authorize(Some(&auth), "/sales/x", &s, 1, 4600, 0, &mut cache).err(),
            Some(BearerError::InvalidToken(JwtError::Expired))
        );
    }

    #[test]
    fn new_generation_revokes_at_once() {
        let s1 = set(&[record(1)]);
        let p = s1.by_kid(&record(1).kid).unwrap().clone();
        let auth = format!("Bearer {}", jwt::mint(&p, 1000, 3600, &[1; 16]));
        let mut cache = VerifiedCache::new(8);
        assert!(authorize(Some(&auth), "/sales/", &s1, 1, 1000, 0, &mut cache).is_ok());
        // Rotation: same profile id, new kid and key.
        let mut rotated = record(1);
        rotated.kid = record(9).kid;
        rotated.signing_key = record(9).signing_key;
        let s2 = set(&[rotated]);
        assert_eq!(
            authorize(Some(&auth), "/sales/", &s2, 2, 1000, 0, &mut cache).err(),
            Some(BearerError::InvalidToken(JwtError::UnknownKeyId))
        );
    }

    #[test]
    fn capacity_is_bounded() {
        let s = set(&[record(1)]);
        let p = s.by_kid(&record(1).kid).unwrap().clone();
        let mut cache = VerifiedCache::new(2);
        for i in 0..5u8 {
            let auth = format!("Bearer {}", jwt::mint(&p, 1000, 3600, &[i; 16]));
            authorize(Some(&auth), "/sales/", &s, 1, 1000, 0, &mut cache).unwrap();
            assert!(cache.len() <= 2);
        }
    }

    #[test]
    fn bytes_are_bounded() {
        let s = set(&[record(1)]);
        let p = s.by_kid(&record(1).kid).unwrap().clone();
        let one = {
            let mut c = VerifiedCache::new(100);
            let auth = format!("Bearer {}", jwt::mint(&p, 1000, 3600, &[0; 16]));
            authorize(Some(&auth), "/sales/", &s, 1, 1000, 0, &mut c).unwrap();
            c.bytes()
        };
        assert!(one > 250, "a token and its key are counted: {one}");
        let mut cache = VerifiedCache::with_max_bytes(1000, 3 * one);
        for i in 0..20u8 {
            let auth = format!("Bearer {}", jwt::mint(&p, 1000, 3600, &[i; 16]));
            assert!(authorize(Some(&auth), "/sales/", &s, 1, 1000, 0, &mut cache).is_ok());
            assert!(cache.bytes() <= 3 * one && cache.len() <= 3, "{} bytes, {} entries", cache.bytes(), cache.len());
        }
        // Same token again: a hit, no growth.
        let auth = format!("Bearer {}", jwt::mint(&p, 1000, 3600, &[19; 16]));
        let before = cache.bytes();
        authorize(Some(&auth), "/sales/", &s, 1, 1000, 0, &mut cache).unwrap();
        assert_eq!(cache.bytes(), before);
    }

    #[test]
    fn a_cached_signature_does_not_vouch_for_other_claims() {
        let s = set(&[record(1)]);
        let p = s.by_kid(&record(1).kid).unwrap();
        let token = jwt::mint(&p, 1000, 3600, &[1; 16]);
        let mut cache = VerifiedCache::new(8);
        authorize(Some(&format!("Bearer {token}")), "/sales/", &s, 1, 1000, 0, &mut cache).unwrap();
        // Same signature, other claims (a later exp): must be verified, and fail.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let (h, _) = head.split_once('.').unwrap();
        let claims = format!("{{\"sub\":\"{}\",\"exp\":99999999999}}", p.id);
        let forged = format!("{h}.{}.{sig}", crate::b64::url_encode(claims.as_bytes()));
        assert_eq!(
            authorize(Some(&format!("Bearer {forged}")), "/sales/", &s, 1, 1000, 0, &mut cache).err(),
            Some(BearerError::InvalidToken(JwtError::Signature))
        );
    }

    #[test]
    fn failures_are_not_cached() {
        let s = set(&[record(1)]);
        let mut cache = VerifiedCache::new(8);
        assert!(authorize(Some("Bearer a.b.c"), "/sales/", &s, 1, 1000, 0, &mut cache).is_err());
        assert!(cache.is_empty());
    }
}
