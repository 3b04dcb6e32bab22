//! The plugin configuration (the Envoy Wasm filter's `configuration` JSON),
//! parsed and validated once in `on_configure`. Unknown fields are refused so
//! a typo cannot silently fall back to a default; every error names its field.

use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::discovery::Issuers;
use crate::lockout::Lockout;
use crate::path;
use crate::profile::{ProfileRecord, ProfileSet};
use crate::shared;

/// The document, field by field. Each top-level field (and each profile) is
/// decoded on its own so an error can name its path without the weight of a
/// path-tracking deserializer in the .wasm.
#[derive(Debug)]
struct RawConfig {
    token_path: String,
    token_lifetime_seconds: u64,
    clock_leeway_seconds: u64,
    public_paths: Vec<String>,
    identity_headers: RawIdentityHeaders,
    keep_authorization: bool,
    realm: String,
    max_token_request_bytes: usize,
    hold_token_request_headers: bool,
    verified_token_cache_size: usize,
    shared_data_namespace: String,
    profiles: Option<Vec<ProfileRecord>>,
    sidecar: Option<RawSidecar>,
    issuers: Vec<String>,
    metrics: bool,
    lockout: RawLockout,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            token_path: "/oauth2/token".into(),
            token_lifetime_seconds: 3600,
            clock_leeway_seconds: 30,
            public_paths: Vec::new(),
            identity_headers: RawIdentityHeaders::default(),
            keep_authorization: false,
            realm: "tollgate".into(),
            max_token_request_bytes: 16 * 1024,
            hold_token_request_headers: false,
            verified_token_cache_size: 4096,
            shared_data_namespace: shared::DEFAULT_NAMESPACE.into(),
            profiles: None,
            sidecar: None,
            issuers: Vec::new(),
            metrics: true,
            lockout: RawLockout::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentityHeaders {
    client_id: String,
    profile_id: String,
    set_by: String,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        Self {
            client_id: "x-tollgate-client-id".into(),
            profile_id: "x-tollgate-profile-id".into(),
            set_by: "filter".into(),
        }
    }
}

/// Who writes the identity headers of an authorized request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentitySetBy {
    /// The filter sets them and removes `Authorization` (header mutations).
    Filter,
    /// The filter publishes the identity as filter state
    /// ([`IDENTITY_CLIENT_ID_PROPERTY`], [`IDENTITY_PROFILE_ID_PROPERTY`]) and
    /// changes no header; the route's `request_headers_to_add` /
    /// `request_headers_to_remove` set them and remove `Authorization`. Each
    /// request-header mutation makes Envoy clear the route cache and match the
    /// route again; this way a guarded request mutates nothing.
    Route,
}

/// Filter state the `route` mode publishes, read by Envoy as
/// `%FILTER_STATE(wasm.tollgate.client_id:PLAIN)%`.
pub const IDENTITY_CLIENT_ID_PROPERTY: &str = "tollgate.client_id";
pub const IDENTITY_PROFILE_ID_PROPERTY: &str = "tollgate.profile_id";

/// Decoded member by member like the document itself, so an error names
/// `lockout.<field>` (and no derive adds to the .wasm).
#[derive(Debug)]
struct RawLockout {
    enabled: bool,
    max_failures: u32,
    window_seconds: u64,
    base_seconds: u64,
    max_seconds: u64,
    per_source_max_failures: u32,
    slots: u32,
}

impl Default for RawLockout {
    fn default() -> Self {
        Self {
            enabled: true,
            max_failures: 10,
            window_seconds: 60,
            base_seconds: 60,
            max_seconds: 900,
            per_source_max_failures: 100,
            slots: 4096,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    cluster: String,
    #[serde(default = "default_authority")]
    authority: String,
    #[serde(default)]
    data_token: String,
    #[serde(default = "default_poll_wait")]
    long_poll_seconds: u64,
    #[serde(default)]
    max_staleness_seconds: Option<u64>,
}

fn default_authority() -> String {
    "tollgate-sidecar".into()
}

fn default_poll_wait() -> u64 {
    25
}

/// Where profiles come from when the sidecar is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Envoy cluster name for `dispatch_http_call`.
    pub cluster: String,
    pub authority: String,
    pub data_token: String,
    pub long_poll_seconds: u64,
    /// Refuse (503) when the last successful sync is older than this.
    pub max_staleness_seconds: Option<u64>,
}

#[derive(Debug)]
pub struct Config {
    pub token_path: String,
    pub token_lifetime: u64,
    pub leeway: u64,
    pub public_paths: Vec<String>,
    pub client_id_header: String,
    pub profile_id_header: String,
    pub identity_set_by: IdentitySetBy,
    pub keep_authorization: bool,
    pub realm: String,
    pub max_body_bytes: usize,
    /// Return Pause from the request headers of token requests. Needs the
    /// host's `allow_on_headers_stop_iteration: true` (Envoy >= 1.35); without
    /// it the host turns Pause into "stop all" and the body never arrives.
    pub hold_token_request_headers: bool,
    pub cache_size: usize,
    /// Prefix of every shared-data key this plugin uses: plugins sharing a
    /// `vm_id` (Istio sets none) need distinct namespaces.
    pub shared_data_namespace: String,
    pub static_profiles: Option<Rc<ProfileSet>>,
    pub sidecar: Option<SidecarConfig>,
    /// RFC 8414 metadata: the public issuer URLs, selected by `:authority`.
    pub issuers: Issuers,
    /// Define and count Envoy metrics (off only to measure their cost).
    pub metrics: bool,
    /// Brute-force lockout at the token endpoint; `None` when disabled.
    pub lockout: Option<Lockout>,
}

/// A refused configuration: the field (a JSON path) and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tollgate configuration: {}: {}", self.field, self.problem)
    }
}

impl RawConfig {
    // Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
    #[inline(never)]
    fn from_document(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut raw = Self::default();
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(raw);
        }
        let fields: Vec<(String, Box<RawValue>)> = serde_json::from_slice::<JsonObject>(bytes)
            .map_err(|e| err("(document)", format!("{} (expected a JSON object)", e)))?
            .0;
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &fields {
            if !seen.insert(name.as_str()) {
                return Err(err(name.clone(), "appears more than once"));
            }
            match name.as_str() {
                "token_path" => raw.token_path = field(value, name)?,
                "token_lifetime_seconds" => raw.token_lifetime_seconds = field(value, name)?,
                "clock_leeway_seconds" => raw.clock_leeway_seconds = field(value, name)?,
                "public_paths" => raw.public_paths = field(value, name)?,
                "identity_headers" => raw.identity_headers = field(value, name)?,
                "keep_authorization" => raw.keep_authorization = field(value, name)?,
                "realm" => raw.realm = field(value, name)?,
                "max_token_request_bytes" => raw.max_token_request_bytes = field(value, name)?,
                "hold_token_request_headers" => raw.hold_token_request_headers = field(value, name)?,
                "verified_token_cache_size" => raw.verified_token_cache_size = field(value, name)?,
                "shared_data_namespace" => raw.shared_data_namespace = field(value, name)?,
                "sidecar" => raw.sidecar = Some(field(value, name)?),
                "issuers" => raw.issuers = field(value, name)?,
                "metrics" => raw.metrics = field(value, name)?,
                "lockout" => raw.lockout = RawLockout::from_value(value)?,
                "profiles" => {
                    let items: Vec<Box<RawValue>> = field(value, name)?;
                    let mut profiles = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let at = format!("profiles[{i}]");
                        // The data feed ignores unknown record fields (see
                        // contract.rs); here one is a typo, e.g. `disable`.
                        if let Ok(JsonObject(members)) = field::<JsonObject>(item, &at) {
                            if let Some((unknown, _)) =
                                members.iter().find(|(k, _)| !ProfileRecord::FIELDS.contains(&k.as_str()))
                            {
                                return Err(err(at, format!("unknown field `{unknown}`")));
                            }
                        }
                        profiles.push(field(item, &at)?);
                    }
                    raw.profiles = Some(profiles);
                }
                other => return Err(err(other, "unknown field")),
            }
        }
        Ok(raw)
    }
}

impl RawLockout {
    // Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
    #[inline(never)]
    fn from_value(value: &RawValue) -> Result<Self, ConfigError> {
        let mut raw = Self::default();
        let members: JsonObject = field(value, "lockout")?;
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &members.0 {
            let path = format!("lockout.{name}");
            if !seen.insert(name.as_str()) {
                return Err(err(path, "appears more than once"));
            }
            match name.as_str() {
                "enabled" => raw.enabled = field(value, &path)?,
                "max_failures" => raw.max_failures = field(value, &path)?,
                "window_seconds" => raw.window_seconds = field(value, &path)?,
                "base_seconds" => raw.base_seconds = field(value, &path)?,
                "max_seconds" => raw.max_seconds = field(value, &path)?,
                "per_source_max_failures" => raw.per_source_max_failures = field(value, &path)?,
                "slots" => raw.slots = field(value, &path)?,
                _ => return Err(err(path, "unknown field")),
            }
        }
        Ok(raw)
    }
}

/// A JSON object's members in order, values left undecoded.
struct JsonObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(JsonObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Decodes one field; serde's message (minus a position that would point
/// into the field, not the document) becomes the problem.
// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn field<T: serde::de::DeserializeOwned>(value: &RawValue, name: &str) -> Result<T, ConfigError> {
    serde_json::from_slice(value.get().as_bytes()).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.find(" at line ").map_or(msg.as_str(), |i| &msg[..i]).to_owned();
        err(name, msg)
    })
}

// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn lockout(raw: &RawLockout, document: &[u8]) -> Result<Option<Lockout>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    if !(1..=10_000).contains(&raw.max_failures) {
        return Err(err("lockout.max_failures", "must be between 1 and 10000"));
    }
    if !(1..=86_400).contains(&raw.window_seconds) {
        return Err(err("lockout.window_seconds", "must be between 1 and 86400"));
    }
    if !(1..=86_400).contains(&raw.base_seconds) {
        return Err(err("lockout.base_seconds", "must be between 1 and 86400"));
    }
    if !(raw.base_seconds..=86_400).contains(&raw.max_seconds) {
        return Err(err("lockout.max_seconds", "must be between base_seconds and 86400 (no permanent lockout)"));
    }
    if raw.per_source_max_failures > 1_000_000 {
        return Err(err("lockout.per_source_max_failures", "must be at most 1000000 (0 turns it off)"));
    }
    if !(16..=65_536).contains(&raw.slots) {
        return Err(err("lockout.slots", "must be between 16 and 65536"));
    }
    // The slot hash key must be the same on every worker (they share the
    // table) and unknown to clients (so nobody can aim at a victim's slot):
    // the configuration holds a sidecar data token or signing keys, and every
    // worker parses the same bytes.
    let digest = Sha256::new().chain_update(b"tollgate lockout slot key v1\0").chain_update(document).finalize();
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&digest[..8]);
    k1.copy_from_slice(&digest[8..16]);
    Ok(Some(Lockout {
        max_failures: raw.max_failures,
        window_seconds: raw.window_seconds,
        base_seconds: raw.base_seconds,
        max_seconds: raw.max_seconds,
        per_source_max_failures: raw.per_source_max_failures,
        slots: raw.slots,
        hash_key: (u64::from_le_bytes(k0), u64::from_le_bytes(k1)),
    }))
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into() }
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !s.starts_with(':')
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = RawConfig::from_document(bytes)?;
        if !raw.token_path.starts_with('/') || path::is_ambiguous(&raw.token_path) || raw.token_path.contains('?') {
            return Err(err("token_path", "must be an absolute path without query, '..' or '//'"));
        }
        if !(60..=86_400).contains(&raw.token_lifetime_seconds) {
            return Err(err("token_lifetime_seconds", "must be between 60 and 86400"));
        }
        if raw.clock_leeway_seconds > 300 {
            return Err(err("clock_leeway_seconds", "must be at most 300"));
        }
        for (i, p) in raw.public_paths.iter().enumerate() {
            if !p.starts_with('/') || path::is_ambiguous(p) || p.contains('?') {
                return Err(err(format!("public_paths[{i}]"), "must be an absolute path without query, '..' or '//'"));
            }
            if *p == raw.token_path {
                return Err(err(format!("public_paths[{i}]"), "must not be the token path"));
            }
        }
        for (field, name) in [
            ("identity_headers.client_id", &raw.identity_headers.client_id),
            ("identity_headers.profile_id", &raw.identity_headers.profile_id),
        ] {
            if !is_header_name(name) || name == "authorization" || name == "host" {
                return Err(err(field, "must be a lower-case header name other than authorization or host"));
            }
        }
        if raw.identity_headers.client_id == raw.identity_headers.profile_id {
            return Err(err("identity_headers", "client_id and profile_id must be different headers"));
        }
        let identity_set_by = match raw.identity_headers.set_by.as_str() {
            "filter" => IdentitySetBy::Filter,
            "route" => IdentitySetBy::Route,
            _ => return Err(err("identity_headers.set_by", "must be \"filter\" or \"route\"")),
        };
        if raw.realm.is_empty()
            || raw.realm.len() > 128
            || !raw.realm.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            || raw.realm.contains(['"', '\\'])
        {
            return Err(err("realm", "must be 1 to 128 printable ASCII characters without quotes or backslashes"));
        }
        if !(256..=1024 * 1024).contains(&raw.max_token_request_bytes) {
            return Err(err("max_token_request_bytes", "must be between 256 and 1048576"));
        }
        if !(1..=1_000_000).contains(&raw.verified_token_cache_size) {
            return Err(err("verified_token_cache_size", "must be between 1 and 1000000"));
        }
        if !shared::is_namespace(&raw.shared_data_namespace) {
            return Err(err("shared_data_namespace", "must be 1 to 64 ASCII letters, digits, '-' or '_'"));
        }
        let static_profiles = match &raw.profiles {
            None => None,
            Some(records) => Some(Rc::new(
                ProfileSet::from_records(records).map_err(|(i, e)| err(format!("profiles[{i}]"), e.to_string()))?,
            )),
        };
        let sidecar = match raw.sidecar {
            None => None,
            Some(s) => {
                if s.cluster.is_empty() {
                    return Err(err("sidecar.cluster", "must name an Envoy cluster"));
                }
                if s.data_token.len() < 16 || !s.data_token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err("sidecar.data_token", "must be at least 16 visible ASCII characters"));
                }
                if !(1..=55).contains(&s.long_poll_seconds) {
                    return Err(err("sidecar.long_poll_seconds", "must be between 1 and 55"));
                }
                // A healthy sync refreshes its stamp once per long poll.
                if s.max_staleness_seconds.is_some_and(|m| m < s.long_poll_seconds + 5) {
                    return Err(err("sidecar.max_staleness_seconds", "must be at least long_poll_seconds + 5"));
                }
                Some(SidecarConfig {
                    cluster: s.cluster,
                    authority: s.authority,
                    data_token: s.data_token,
                    long_poll_seconds: s.long_poll_seconds,
                    max_staleness_seconds: s.max_staleness_seconds,
                })
            }
        };
        let lockout = lockout(&raw.lockout, bytes)?;
        if static_profiles.is_some() && sidecar.is_some() {
            return Err(err("profiles", "set either a static profiles list or a sidecar, not both"));
        }
        if static_profiles.is_none() && sidecar.is_none() {
            return Err(err("profiles", "set a static profiles list or a sidecar"));
        }
        let issuers =
            Issuers::parse(&raw.issuers, &raw.token_path).map_err(|(i, e)| err(format!("issuers[{i}]"), e))?;
        Ok(Self {
            token_path: raw.token_path,
            token_lifetime: raw.token_lifetime_seconds,
            leeway: raw.clock_leeway_seconds,
            public_paths: raw.public_paths,
            client_id_header: raw.identity_headers.client_id,
            profile_id_header: raw.identity_headers.profile_id,
            identity_set_by,
            keep_authorization: raw.keep_authorization,
            realm: raw.realm,
            max_body_bytes: raw.max_token_request_bytes,
            hold_token_request_headers: raw.hold_token_request_headers,
            cache_size: raw.verified_token_cache_size,
            shared_data_namespace: raw.shared_data_namespace,
            static_profiles,
            sidecar,
            issuers,
            metrics: raw.metrics,
            lockout,
        })
    }

    pub fn is_public(&self, request_path: &str) -> bool {
        // Most configurations have no public paths: no ambiguity check then.
        !self.public_paths.is_empty()
            && !path::is_ambiguous(request_path)
            && self.public_paths.iter().any(|p| path::public_entry_covers(path::strip_query(request_path), p))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::tests::record;

    pub fn static_config(extra: serde_json::Value) -> Config {
        let mut v = serde_json::json!({
            "profiles": [
                {
                    "id": record(1).id, "client_id": record(1).client_id,
                    "client_secret_sha256": record(1).client_secret_sha256,
                    "kid": record(1).kid, "signing_key": record(1).signing_key,
                    "allowed_prefixes": ["/sales/"]
                }
            ]
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in e {
                o.insert(k.clone(), val.clone());
            }
        }
        Config::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn defaults() {
        let c = static_config(serde_json::json!({}));
        assert_eq!(c.token_path, "/oauth2/token");
        assert_eq!(c.token_lifetime, 3600);
        assert_eq!(c.client_id_header, "x-tollgate-client-id");
        assert_eq!(c.profile_id_header, "x-tollgate-profile-id");
        assert!(!c.keep_authorization);
        assert_eq!(c.identity_set_by, IdentitySetBy::Filter);
        assert_eq!(c.static_profiles.as_ref().unwrap().len(), 1);
        assert!(c.issuers.is_empty());
        assert!(c.metrics);
        let c = static_config(serde_json::json!({"identity_headers": {"set_by": "route"}}));
        assert_eq!(c.identity_set_by, IdentitySetBy::Route);
    }

    fn refused(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let e = refused(r#"{"tokn_path":"/x","profiles":[]}"#);
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("tokn_path", "unknown field"));
        assert_eq!(refused(r#"{"realm":"a","realm":"b","profiles":[]}"#).field, "realm");
        assert_eq!(refused(r#"{"token_path":"x","profiles":[]}"#).field, "token_path");
        assert_eq!(refused(r#"{"token_lifetime_seconds":5,"profiles":[]}"#).field, "token_lifetime_seconds");
        assert_eq!(refused(r#"{"public_paths":["/a","b"],"profiles":[]}"#).field, "public_paths[1]");
        assert_eq!(
            refused(r#"{"identity_headers":{"client_id":"X-Bad"},"profiles":[]}"#).field,
            "identity_headers.client_id"
        );
        assert_eq!(
            refused(r#"{"identity_headers":{"set_by":"upstream"},"profiles":[]}"#).field,
            "identity_headers.set_by"
        );
        assert_eq!(refused(r#"{"realm":"a\"b","profiles":[]}"#).field, "realm");
        assert_eq!(refused(r#"{"max_token_request_bytes":1,"profiles":[]}"#).field, "max_token_request_bytes");
        assert_eq!(refused(r#"{}"#).field, "profiles");
        let e = refused(r#"{"token_lifetime_seconds":"x"}"#);
        assert_eq!(e.field, "token_lifetime_seconds");
        assert!(e.problem.contains("invalid type"));
        let e = refused(r#"{"profiles":[{"id":"x"}]}"#);
        assert_eq!(e.field, "profiles[0]");
        assert!(e.problem.contains("missing field `client_id`"));
        let mut typo = serde_json::to_value(crate::profile::tests::record(1)).unwrap();
        typo["disable"] = true.into();
        let e = refused(&serde_json::json!({ "profiles": [typo] }).to_string());
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("profiles[0]", "unknown field `disable`"));
        let e = refused(r#"{"identity_headers":{"clientid":"a"}}"#);
        assert_eq!(e.field, "identity_headers");
        assert!(e.problem.contains("unknown field `clientid`"));
        assert_eq!(refused("[1]").field, "(document)");
        assert!(refused("not json").to_string().starts_with("invalid tollgate configuration"));
        let bad = serde_json::json!({"profiles":[{"id":"x","client_id":"c","client_secret_sha256":"","kid":"","signing_key":"","allowed_prefixes":["/"]}]});
        let e = refused(&bad.to_string());
        assert_eq!(e.field, "profiles[0]");
        assert!(e.problem.starts_with("id:"));
        let e = refused(r#"{"sidecar":{"cluster":"c","data_token":"short"}}"#);
        assert_eq!(e.field, "sidecar.data_token");
        let e = refused(r#"{"issuers":["https://a.example","https://a.example/x"],"profiles":[]}"#);
        assert_eq!(e.field, "issuers[1]");
        assert_eq!(refused(r#"{"issuers":"https://a.example","profiles":[]}"#).field, "issuers");
        assert_eq!(refused(r#"{"metrics":"no","profiles":[]}"#).field, "metrics");
    }

    #[test]
    fn lockout_config() {
        let on = static_config(serde_json::json!({})).lockout.unwrap();
        assert_eq!(
            (on.max_failures, on.window_seconds, on.base_seconds, on.max_seconds, on.per_source_max_failures),
            (10, 60, 60, 900, 100)
        );
        assert_eq!(on.slots, 4096);
        assert!(static_config(serde_json::json!({"lockout": {"enabled": false}})).lockout.is_none());
        let c = static_config(serde_json::json!({"lockout": {"max_failures": 3, "per_source_max_failures": 0}}));
        let l = c.lockout.unwrap();
        assert_eq!((l.max_failures, l.per_source_max_failures, l.window_seconds), (3, 0, 60));
        // Same document, same key (every worker); another document, another.
        assert_eq!(
            l.hash_key,
            static_config(serde_json::json!({"lockout": {"max_failures": 3, "per_source_max_failures": 0}}))
                .lockout
                .unwrap()
                .hash_key
        );
        assert_ne!(l.hash_key, on.hash_key);
        for (lockout, field) in [
            (r#"{"max_failures":0}"#, "lockout.max_failures"),
            (r#"{"window_seconds":0}"#, "lockout.window_seconds"),
            (r#"{"base_seconds":0}"#, "lockout.base_seconds"),
            (r#"{"base_seconds":60,"max_seconds":30}"#, "lockout.max_seconds"),
            (r#"{"max_seconds":100000}"#, "lockout.max_seconds"),
            (r#"{"per_source_max_failures":2000000}"#, "lockout.per_source_max_failures"),
            (r#"{"slots":1}"#, "lockout.slots"),
            (r#"{"max_failure":3}"#, "lockout.max_failure"),
            (r#"{"max_failures":-1}"#, "lockout.max_failures"),
            (r#"{"slots":16,"slots":16}"#, "lockout.slots"),
            (r#"true"#, "lockout"),
        ] {
            let e = refused(&format!(r#"{{"lockout":{lockout},"profiles":[]}}"#));
            assert_eq!(e.field, field, "{lockout}: {e}");
        }
    }

    #[test]
    fn sidecar_config() {
        let c = Config::parse(br#"{"sidecar":{"cluster":"sc","data_token":"0123456789abcdef0123"}}"#).unwrap();
        let s = c.sidecar.unwrap();
        assert_eq!((s.cluster.as_str(), s.long_poll_seconds, s.max_staleness_seconds), ("sc", 25, None));
        assert!(c.static_profiles.is_none());
        assert_eq!(c.shared_data_namespace, "tollgate");
    }

    #[test]
    fn shared_data_namespace() {
        let c = Config::parse(
            br#"{"shared_data_namespace":"gw-b","sidecar":{"cluster":"outbound|8081||s.ns.svc.cluster.local","data_token":"0123456789abcdef0123"}}"#,
        )
        .unwrap();
        assert_eq!(c.shared_data_namespace, "gw-b");
        for bad in [r#""""#, r#""a.b""#, r#""a b""#, "7"] {
            let doc = format!(
                r#"{{"shared_data_namespace":{bad},"sidecar":{{"cluster":"c","data_token":"0123456789abcdef0123"}}}}"#
            );
            assert_eq!(refused(&doc).field, "shared_data_namespace", "{bad}");
        }
    }

    #[test]
    fn public_paths() {
        let c = static_config(serde_json::json!({"public_paths": ["/healthz", "/docs/"]}));
        assert!(c.is_public("/healthz"));
        assert!(c.is_public("/docs/a"));
        assert!(!c.is_public("/docs"));
        assert!(!c.is_public("/docs/../sales/x"));
    }
}
