//! HS256 JSON Web Tokens (RFC 7519 over RFC 7515 compact JWS), minted and
//! verified. The header is checked for `alg` before anything else and only
//! `HS256` passes; the signature is checked in constant time before any claim
//! is trusted.

use std::borrow::Cow;
use std::rc::Rc;

use serde::Deserialize;

use crate::b64;
use crate::profile::{encode_hex_into, push_decimal, Decimal, Profile};

/// Longest token we are willing to look at; ours are about 330 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a presented token is refused. Each maps to a fixed description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    BadHeader,
    Algorithm,
    MissingKeyId,
    UnknownKeyId,
    Signature,
    BadClaims,
    SubjectMismatch,
    Expired,
    NotYetValid,
    Revoked,
}

impl JwtError {
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "the access token is malformed",
            Self::BadHeader => "the access token header is malformed",
            Self::Algorithm => "the access token algorithm is not HS256",
            Self::MissingKeyId => "the access token has no key id",
            Self::UnknownKeyId => "the access token key is unknown or was rotated",
            Self::Signature => "the access token signature is invalid",
            Self::BadClaims => "the access token claims are malformed",
            Self::SubjectMismatch => "the access token subject does not match its key",
            Self::Expired => "the access token expired",
            Self::NotYetValid => "the access token is not valid yet",
            Self::Revoked => "the access token was revoked",
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    /// RFC 7515 §4.1.11: we understand no extensions, so any `crit` fails.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// The facts a verified token establishes.
#[derive(Clone, Debug)]
pub struct Verified {
    pub profile: Rc<Profile>,
    pub exp: u64,
    pub nbf: u64,
}

/// The protected header of every token we mint, byte for byte.
pub fn header_json(kid: &str) -> String {
    format!("{{\"alg\":\"HS256\",\"kid\":\"{kid}\",\"typ\":\"JWT\"}}")
}

/// The start of the claims of every token minted for profile `sub`, the same
/// for all of them: `{"sub":"<sub>","exp":`. [`mint`] writes the rest.
pub fn claims_head(sub: &str) -> String {
    format!("{{\"sub\":\"{sub}\",\"exp\":")
}

/// Mints `header.claims.signature` for `profile`, valid from `now` for
/// `lifetime` seconds. `jti` makes two tokens minted in the same second differ.
/// The profile comes with what is the same in all its tokens encoded, and
/// absorbed into its HMAC: the header, the dot, and the claims' head up to
/// the last whole base64 group (three bytes encode alone); the few bytes of
/// the head after that group (`claims_carry`) start the rest encoded here.
pub fn mint(profile: &Profile, now: u64, lifetime: u64, jti: &[u8; 16]) -> String {
    let mut rest = String::with_capacity(96);
    rest.push_str(profile.claims_carry());
    push_decimal(&mut rest, now.saturating_add(lifetime));
    let now = Decimal::new(now);
    rest.push_str(",\"nbf\":");
    rest.push_str(now.as_str());
    rest.push_str(",\"iat\":");
    rest.push_str(now.as_str());
    rest.push_str(",\"jti\":\"");
    encode_hex_into(jti, &mut rest);
    rest.push_str("\"}");
    let mut token = Vec::with_capacity(profile.token_prefix().len() + 4 * rest.len() / 3 + 48);
    token.extend_from_slice(profile.token_prefix().as_bytes());
    let rest_start = token.len();
    b64::url_encode_bytes(rest.as_bytes(), &mut token);
    let tag = profile.sign_after_prefix(&token[rest_start..]);
    debug_assert_eq!(tag, profile.key.sign(&token));
    token.push(b'.');
    b64::url_encode_bytes(&tag, &mut token);
    // The prefix was a `str`, the rest base64url and a dot: never the fallback.
    String::from_utf8(token).unwrap_or_default()
}

/// Verifies signature and claims. `lookup` maps a `kid` to its profile; time
/// is checked separately by [`check_time`] so a cache can re-check it.
pub fn verify(token: &str, lookup: impl FnOnce(&str) -> Option<Rc<Profile>>) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(h64), Some(c64), Some(s64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    if s64.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header_json = b64::url_decode(h64.as_bytes()).ok_or(JwtError::BadHeader)?;
    // RFC 7515 §4 / RFC 8259 §8.1: UTF-8, which serde_json does not check
    // inside a member it skips. A header that is no JSON text is refused
    // before `alg`, as any other unparsable header is.
    let header_text = std::str::from_utf8(&header_json).map_err(|_| JwtError::BadHeader)?;
    let header: Header = serde_json::from_str(header_text).map_err(|_| JwtError::BadHeader)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    if header.crit.is_some() || header.typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
        return Err(JwtError::BadHeader);
    }
    let kid = header.kid.ok_or(JwtError::MissingKeyId)?;
    let profile = lookup(&kid).ok_or(JwtError::UnknownKeyId)?;

    let mut tag = Vec::with_capacity(32);
    if !b64::url_decode_into(s64.as_bytes(), &mut tag) {
        return Err(JwtError::Malformed);
    }
    let signing_input = &token[..h64.len() + 1 + c64.len()];
    if !profile.key.verify(signing_input.as_bytes(), &tag) {
        return Err(JwtError::Signature);
    }

    let claims_json = b64::url_decode(c64.as_bytes()).ok_or(JwtError::BadClaims)?;
    let claims_text = std::str::from_utf8(&claims_json).map_err(|_| JwtError::BadClaims)?;
    let claims: Claims = serde_json::from_str(claims_text).map_err(|_| JwtError::BadClaims)?;
    if claims.sub != profile.id {
        return Err(JwtError::SubjectMismatch);
    }
    if profile.disabled {
        return Err(JwtError::Revoked);
    }
    let nbf = claims.nbf.or(claims.iat).unwrap_or(0);
    Ok(Verified { profile, exp: claims.exp, nbf })
}

/// `exp` is exclusive (RFC 7519 §4.1.4), `nbf` inclusive, each widened by
/// `leeway` seconds of clock skew.
pub fn check_time(exp: u64, nbf: u64, now: u64, leeway: u64) -> Result<(), JwtError> {
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if now.saturating_add(leeway) < nbf {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::encode_hex;
    use crate::profile::tests::record;
    use crate::profile::SigningKey;

    fn profile(n: u8) -> Rc<Profile> {
        Rc::new(Profile::from_record(&record(n)).unwrap())
    }

    fn lookup(p: &Rc<Profile>) -> impl FnOnce(&str) -> Option<Rc<Profile>> + '_ {
        move |kid| (kid == p.kid).then(|| Rc::clone(p))
    }

    fn sign_raw(key: &SigningKey, header: &str, claims: &str) -> String {
        let mut t = format!("{}.{}", b64::url_encode(header.as_bytes()), b64::url_encode(claims.as_bytes()));
        let tag = key.sign(t.as_bytes());
        t.push('.');
        t.push_str(&b64::url_encode(&tag));
        t
    }

    #[test]
    fn mint_shape_and_round_trip() {
        let p = profile(1);
        let t = mint(&p, 1_000, 3600, &[7; 16]);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = String::from_utf8(b64::url_decode(parts[0].as_bytes()).unwrap()).unwrap();
        assert_eq!(header, format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"typ\":\"JWT\"}}", p.kid));
        let claims: serde_json::Value = serde_json::from_slice(&b64::url_decode(parts[1].as_bytes()).unwrap()).unwrap();
        assert_eq!(claims["sub"], p.id.as_str());
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["nbf"], 1_000);
        assert_eq!(claims["exp"], 4_600);
        assert_eq!(claims["jti"], "07".repeat(16));
        let v = verify(&t, lookup(&p)).unwrap();
        assert_eq!((v.exp, v.nbf), (4_600, 1_000));
        assert_ne!(t, mint(&p, 1_000, 3600, &[8; 16]), "jti separates same-second tokens");
    }

    /// The prepared prefix (header, dot, the claims' head up to a whole
    /// base64 group, absorbed into the HMAC) changes no byte of the token.
    #[test]
    fn mint_is_byte_for_byte_the_plain_construction() {
        for n in 1..=3 {
            let p = profile(n);
            // A 64-digit id makes an 80-byte head: 78 encoded, 2 carried.
            assert_eq!(p.claims_carry(), "\":");
            for (now, lifetime, jti) in [(0, 0, [0; 16]), (1_700_000_000, 3600, [0xab; 16]), (u64::MAX, 3600, [9; 16])]
            {
                let claims = format!(
                    "{{\"sub\":\"{}\",\"exp\":{},\"nbf\":{now},\"iat\":{now},\"jti\":\"{}\"}}",
                    p.id,
                    now.saturating_add(lifetime),
                    encode_hex(&jti)
                );
                assert_eq!(mint(&p, now, lifetime, &jti), sign_raw(&p.key, &header_json(&p.kid), &claims));
            }
        }
    }

    #[test]
    fn alg_is_checked_first() {
        let p = profile(1);
        let claims = format!("{{\"sub\":\"{}\",\"exp\":9999999999}}", p.id);
        for alg in ["none", "HS384", "RS256", "hs256", "HS256 "] {
            let h = format!("{{\"alg\":\"{alg}\",\"kid\":\"{}\",\"typ\":\"JWT\"}}", p.kid);
            let t = sign_raw(&p.key, &h, &claims);
            // The lookup must not even run for a wrong alg.
            assert_eq!(verify(&t, |_| panic!("lookup before alg check")).unwrap_err(), JwtError::Algorithm, "{alg}");
        }
        // alg=none with an empty signature, the classic.
        let h = b64::url_encode(br#"{"alg":"none","typ":"JWT"}"#);
        let t = format!("{h}.{}.", b64::url_encode(claims.as_bytes()));
        assert_eq!(verify(&t, lookup(&p)).unwrap_err(), JwtError::Algorithm);
    }

    #[test]
    fn rejections() {
        let p = profile(1);
        let other = profile(2);
        let good = mint(&p, 1_000, 3600, &[1; 16]);
        assert_eq!(verify("abc", lookup(&p)).unwrap_err(), JwtError::Malformed);
        assert_eq!(verify("a.b.c.d", lookup(&p)).unwrap_err(), JwtError::Malformed);
        assert_eq!(verify("!!.b.c", lookup(&p)).unwrap_err(), JwtError::BadHeader);
        assert_eq!(verify(&good, lookup(&other)).unwrap_err(), JwtError::UnknownKeyId);
        // Flip the last signature character.
        let mut bad = good.clone();
        let last = if bad.ends_with('A') { 'B' } else { 'A' };
        bad.pop();
        bad.push(last);
        assert!(matches!(verify(&bad, lookup(&p)).unwrap_err(), JwtError::Signature | JwtError::Malformed));
        // Re-signed with another profile's key but claiming p's kid.
        let h = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"typ\":\"JWT\"}}", p.kid);
        let c = format!("{{\"sub\":\"{}\",\"exp\":9999999999}}", p.id);
        assert_eq!(verify(&sign_raw(&other.key, &h, &c), lookup(&p)).unwrap_err(), JwtError::Signature);
        // Right key, wrong subject.
        let c = format!("{{\"sub\":\"{}\",\"exp\":9999999999}}", other.id);
        assert_eq!(verify(&sign_raw(&p.key, &h, &c), lookup(&p)).unwrap_err(), JwtError::SubjectMismatch);
        // No kid, crit, bad typ, missing exp.
        let t = sign_raw(&p.key, r#"{"alg":"HS256"}"#, &c);
        assert_eq!(verify(&t, lookup(&p)).unwrap_err(), JwtError::MissingKeyId);
        let h2 = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"crit\":[\"x\"]}}", p.kid);
        assert_eq!(verify(&sign_raw(&p.key, &h2, &c), lookup(&p)).unwrap_err(), JwtError::BadHeader);
        let h3 = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"typ\":\"JOSE+JSON\"}}", p.kid);
        assert_eq!(verify(&sign_raw(&p.key, &h3, &c), lookup(&p)).unwrap_err(), JwtError::BadHeader);
        let c2 = format!("{{\"sub\":\"{}\"}}", p.id);
        assert_eq!(verify(&sign_raw(&p.key, &h, &c2), lookup(&p)).unwrap_err(), JwtError::BadClaims);
    }

    fn sign_bytes(key: &SigningKey, header: &[u8], claims: &[u8]) -> String {
        let mut t = format!("{}.{}", b64::url_encode(header), b64::url_encode(claims));
        let tag = key.sign(t.as_bytes());
        t.push('.');
        t.push_str(&b64::url_encode(&tag));
        t
    }

    /// Finding 5: invalid UTF-8 in a member serde_json skips, under a valid
    /// signature, in the header and in the claims.
    #[test]
    fn non_utf8_header_or_claims_are_refused() {
        let p = profile(1);
        let h = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"x\":\"\u{fffd}\"}}", p.kid);
        let c = format!("{{\"sub\":\"{}\",\"exp\":9999999999,\"x\":\"\u{fffd}\"}}", p.id);
        // Sanity: valid UTF-8 in those members verifies.
        assert!(verify(&sign_bytes(&p.key, h.as_bytes(), c.as_bytes()), lookup(&p)).is_ok());
        // The same with the member's value a lone 0xff byte.
        let bad = |s: &str| {
            s.replace('\u{fffd}', "\u{1}").bytes().map(|b| if b == 1 { 0xff } else { b }).collect::<Vec<u8>>()
        };
        let t = sign_bytes(&p.key, &bad(&h), c.as_bytes());
        assert_eq!(verify(&t, lookup(&p)).unwrap_err(), JwtError::BadHeader);
        let t = sign_bytes(&p.key, h.as_bytes(), &bad(&c));
        assert_eq!(verify(&t, lookup(&p)).unwrap_err(), JwtError::BadClaims);
    }

    /// A lone surrogate escape in a member we skip is JSON text (RFC 8259
    /// §8.2 leaves its meaning open, not its syntax): accepted under a valid
    /// signature, as the fuzz target `jwt` records. A broken escape is not.
    #[test]
    fn lone_surrogate_escape_in_a_skipped_member_is_json() {
        let p = profile(1);
        let c = format!("{{\"sub\":\"{}\",\"exp\":9999999999}}", p.id);
        let h = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"x\":\"\\ud800a\"}}", p.kid);
        assert!(verify(&sign_bytes(&p.key, h.as_bytes(), c.as_bytes()), lookup(&p)).is_ok());
        let h = format!("{{\"alg\":\"HS256\",\"kid\":\"{}\",\"x\":\"\\ud8\"}}", p.kid);
        assert_eq!(
            verify(&sign_bytes(&p.key, h.as_bytes(), c.as_bytes()), lookup(&p)).unwrap_err(),
            JwtError::BadHeader
        );
    }

    #[test]
    fn disabled_profile_is_revoked() {
        let mut r = record(3);
        r.disabled = true;
        let p = Rc::new(Profile::from_record(&r).unwrap());
        let t = mint(&p, 1_000, 60, &[0; 16]);
        assert_eq!(verify(&t, lookup(&p)).unwrap_err(), JwtError::Revoked);
    }

    #[test]
    fn time_window() {
        assert!(check_time(100, 50, 60, 0).is_ok());
        assert_eq!(check_time(100, 50, 100, 0), Err(JwtError::Expired));
        assert!(check_time(100, 50, 109, 10).is_ok());
        assert_eq!(check_time(100, 50, 110, 10), Err(JwtError::Expired));
        assert_eq!(check_time(100, 50, 49, 0), Err(JwtError::NotYetValid));
        assert!(check_time(100, 50, 45, 5).is_ok());
        assert!(check_time(u64::MAX, 0, u64::MAX - 1, u64::MAX).is_ok());
    }
}
