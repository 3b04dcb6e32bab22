//! Access profiles: who may get a token (client id + SHA-256 of the secret),
//! which key signs it (`kid` + HS256 key) and where the token may go (allowed
//! path prefixes). One wire format ([`ProfileRecord`], defined in
//! [`crate::contract`]) serves the static config list and the sidecar's data
//! API, so both go through the same validation.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::contract::ProfileRecord;
use crate::path;

type HmacSha256 = Hmac<Sha256>;

/// The longest client id a profile may have; a token request with a longer
/// one is refused before any lookup.
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// Why a profile record was refused. Never carries key or hash material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileError {
    Field { field: &'static str, problem: &'static str },
    Prefix { prefix: String, problem: &'static str },
    Duplicate { field: &'static str, value: String },
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field { field, problem } => write!(f, "{field}: {problem}"),
            Self::Prefix { prefix, problem } => write!(f, "allowed_prefixes: {prefix:?} {problem}"),
            Self::Duplicate { field, value } => write!(f, "{field}: {value:?} appears in more than one profile"),
        }
    }
}

/// An HS256 key with its HMAC state prepared once (the ipad/opad blocks are
/// hashed at construction), so signing and verifying clone a small state
/// instead of re-keying per request.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(key) {
            Ok(mac) => Self(mac),
            Err(_) => Self(HmacSha256::new(&Default::default())),
        }
    }

    pub fn sign(&self, signing_input: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(signing_input);
        mac.finalize().into_bytes().into()
    }

    /// This key with `data` already absorbed: a constant prefix of every
    /// signing input is hashed once, not per token.
    pub fn absorbed(&self, data: &[u8]) -> Self {
        let mut mac = self.0.clone();
        mac.update(data);
        Self(mac)
    }

    /// Constant-time comparison of the tag.
    pub fn verify(&self, signing_input: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(signing_input);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

#[derive(Debug)]
pub struct Profile {
    pub id: String,
    pub client_id: String,
    secret_sha256: [u8; 32],
    pub kid: String,
    pub key: SigningKey,
    pub allowed_prefixes: Vec<String>,
    pub disabled: bool,
    /// What every token of this profile starts with: `base64url(header) "."`
    /// and the claims' head (`jwt::claims_head`) up to its last whole base64
    /// group, encoded.
    token_prefix: String,
    /// The claims' head after that group (0 to 2 bytes): where the part of
    /// the claims that changes per token starts.
    claims_carry: String,
    /// `key` with `token_prefix` absorbed.
    prefix_key: SigningKey,
}

impl Profile {
    pub fn from_record(r: &ProfileRecord) -> Result<Self, ProfileError> {
        let id = hex64(&r.id, "id")?;
        let kid = hex64(&r.kid, "kid")?;
        let secret_sha256 = decode_hex(&r.client_secret_sha256)
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or(ProfileError::Field { field: "client_secret_sha256", problem: "must be 64 hex digits" })?;
        let key = decode_hex(&r.signing_key).filter(|k| (32..=64).contains(&k.len())).ok_or(ProfileError::Field {
            field: "signing_key",
            problem: "must be 64 to 128 hex digits (a 256- to 512-bit HS256 key)",
        })?;
        if r.client_id.is_empty()
            || r.client_id.len() > MAX_CLIENT_ID_LEN
            || !r.client_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ProfileError::Field {
                field: "client_id",
                problem: "must be 1 to 256 visible ASCII characters",
            });
        }
        if r.allowed_prefixes.is_empty() {
            return Err(ProfileError::Field { field: "allowed_prefixes", problem: "must list at least one prefix" });
        }
        for p in &r.allowed_prefixes {
            path::validate_prefix(p).map_err(|problem| ProfileError::Prefix { prefix: p.clone(), problem })?;
        }
        let key = SigningKey::new(&key);
        let mut token_prefix = crate::b64::url_encode(crate::jwt::header_json(&kid).as_bytes());
        token_prefix.push('.');
        // `id` is hex, so the head is ASCII and any byte index a char boundary.
        let head = crate::jwt::claims_head(&id);
        let whole = head.len() - head.len() % 3;
        crate::b64::url_encode_into(&head.as_bytes()[..whole], &mut token_prefix);
        Ok(Self {
            prefix_key: key.absorbed(token_prefix.as_bytes()),
            token_prefix,
            claims_carry: head[whole..].to_owned(),
            id,
            client_id: r.client_id.clone(),
            secret_sha256,
            kid,
            key,
            allowed_prefixes: r.allowed_prefixes.clone(),
            disabled: r.disabled,
        })
    }

    /// What every token of this profile starts with: the encoded header, the
    /// dot, and the encoded start of the claims.
    pub fn token_prefix(&self) -> &str {
        &self.token_prefix
    }

    /// The bytes of the claims' head that [`Self::token_prefix`] leaves to
    /// each token (they do not fill a base64 group).
    pub fn claims_carry(&self) -> &str {
        &self.claims_carry
    }

    /// The HS256 tag of `token_prefix() + rest`, from the prepared state.
    pub fn sign_after_prefix(&self, rest: &[u8]) -> [u8; 32] {
        self.prefix_key.sign(rest)
    }

    /// Constant-time check of a presented secret against the stored hash.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        digest.ct_eq(&self.secret_sha256).into()
    }

    pub fn allows_path(&self, request_path: &str) -> bool {
        !path::is_ambiguous(request_path)
            && self.allowed_prefixes.iter().any(|p| path::under_prefix(path::strip_query(request_path), p))
    }
}

/// Ids and kids are keys in shared data and compared as text, so one
/// spelling only: lower-case, as the sidecar writes them (lower-casing here
/// made the publisher refuse the record as not matching its own id).
fn hex64(s: &str, field: &'static str) -> Result<String, ProfileError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(s.to_owned())
    } else {
        Err(ProfileError::Field { field, problem: "must be 64 lower-case hex digits" })
    }
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_hex_into(bytes, &mut s);
    s
}

/// Appends `bytes` in lower-case hex.
pub fn encode_hex_into(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// Appends `n` in decimal, as `Display` would, without the formatting
/// machinery (the token endpoint writes three per token).
pub fn push_decimal(out: &mut String, n: u64) {
    out.push_str(Decimal::new(n).as_str());
}

/// A `u64` written in decimal on the stack (what `Display` writes, without
/// `core::fmt`): minting writes the same second twice (`nbf`, `iat`).
pub struct Decimal {
    digits: [u8; 20], // u64::MAX has 20
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Self {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits only: never the fallback.
        std::str::from_utf8(&self.digits[self.start..]).unwrap_or("0")
    }
}

/// How requests find profiles: tokens by `kid`, token requests by client id.
/// A static [`ProfileSet`] answers from memory; the shared-data view
/// ([`crate::shared::SharedProfiles`]) reads the proxy's shared data lazily.
pub trait ProfileLookup {
    fn by_kid(&self, kid: &str) -> Option<Rc<Profile>>;
    fn by_client_id(&self, client_id: &str) -> Option<Rc<Profile>>;
}

impl ProfileLookup for ProfileSet {
    fn by_kid(&self, kid: &str) -> Option<Rc<Profile>> {
        self.by_kid.get(kid).cloned()
    }

    fn by_client_id(&self, client_id: &str) -> Option<Rc<Profile>> {
        self.by_client_id.get(client_id).cloned()
    }
}

/// Every profile the filter knows, indexed the two ways requests look them up.
#[derive(Debug, Default)]
pub struct ProfileSet {
    by_client_id: HashMap<String, Rc<Profile>>,
    by_kid: HashMap<String, Rc<Profile>>,
}

impl ProfileSet {
    pub fn from_records(records: &[ProfileRecord]) -> Result<Self, (usize, ProfileError)> {
        let mut set = Self::default();
        let mut ids = std::collections::HashSet::new();
        for (i, r) in records.iter().enumerate() {
            let p = Profile::from_record(r).map_err(|e| (i, e))?;
            if !ids.insert(p.id.clone()) {
                return Err((i, ProfileError::Duplicate { field: "id", value: p.id }));
            }
            set.insert(p).map_err(|e| (i, e))?;
        }
        Ok(set)
    }

    pub fn insert(&mut self, p: Profile) -> Result<(), ProfileError> {
        if self.by_client_id.contains_key(&p.client_id) {
            return Err(ProfileError::Duplicate { field: "client_id", value: p.client_id });
        }
        if self.by_kid.contains_key(&p.kid) {
            return Err(ProfileError::Duplicate { field: "kid", value: p.kid });
        }
        let p = Rc::new(p);
        self.by_client_id.insert(p.client_id.clone(), Rc::clone(&p));
        self.by_kid.insert(p.kid.clone(), p);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    pub fn record(n: u8) -> ProfileRecord {
        ProfileRecord {
            id: encode_hex(&[n; 32]),
            client_id: format!("client-{n}"),
            client_secret_sha256: encode_hex(&Sha256::digest(format!("secret-{n}").as_bytes())),
            kid: encode_hex(&[n.wrapping_add(100); 32]),
            signing_key: encode_hex(&[n.wrapping_add(200); 32]),
            allowed_prefixes: vec!["/sales/".into()],
            disabled: false,
            name: None,
        }
    }

    #[test]
    fn push_decimal_is_display() {
        for n in [0, 1, 9, 10, 99, 100, 3600, 1_700_000_000, u64::MAX - 1, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn secret_matching() {
        let p = Profile::from_record(&record(1)).unwrap();
        assert!(p.secret_matches("secret-1"));
        assert!(!p.secret_matches("secret-2"));
        assert!(!p.secret_matches(""));
    }

    #[test]
    fn field_validation_names_the_field() {
        let mut r = record(1);
        r.kid = "abc".into();
        assert_eq!(Profile::from_record(&r).unwrap_err().to_string(), "kid: must be 64 lower-case hex digits");
        // Finding 6: upper-case hex is refused, naming the field.
        let mut r = record(0xab);
        r.id = r.id.to_ascii_uppercase();
        assert_eq!(Profile::from_record(&r).unwrap_err().to_string(), "id: must be 64 lower-case hex digits");
        let mut r = record(0xab);
        r.kid = "AB".repeat(32);
        assert!(Profile::from_record(&r).unwrap_err().to_string().starts_with("kid: "));
        let mut r = record(1);
        r.signing_key = "00".repeat(16);
        assert!(Profile::from_record(&r).unwrap_err().to_string().starts_with("signing_key"));
        let mut r = record(1);
        r.allowed_prefixes = vec!["sales".into()];
        assert!(Profile::from_record(&r).unwrap_err().to_string().starts_with("allowed_prefixes"));
        let mut r = record(1);
        r.client_id = "a b".into();
        assert!(Profile::from_record(&r).unwrap_err().to_string().starts_with("client_id"));
    }

    #[test]
    fn duplicates_are_refused() {
        let mut b = record(2);
        b.client_id = "client-1".into();
        let (i, e) = ProfileSet::from_records(&[record(1), b]).unwrap_err();
        assert_eq!(i, 1);
        assert!(matches!(e, ProfileError::Duplicate { field: "client_id", .. }));
        let mut b = record(2);
        b.kid = record(1).kid;
        assert!(ProfileSet::from_records(&[record(1), b]).is_err());
    }

    #[test]
    fn lookups() {
        let set = ProfileSet::from_records(&[record(1), record(2)]).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.by_client_id("client-2").unwrap().id, record(2).id);
        assert_eq!(set.by_kid(&record(2).kid).unwrap().client_id, "client-2");
        assert_eq!(set.by_kid(&record(1).kid).unwrap().client_id, "client-1");
        assert!(set.by_client_id("nobody").is_none());
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(encode_hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(decode_hex("0").is_none());
        assert!(decode_hex("zz").is_none());
    }
}
