//! The data contract between the sidecar and the filter, defined once: the
//! sidecar serialises these types on `GET /data/v1/snapshot` and
//! `GET /data/v1/changes`, the filter parses them with [`Snapshot::parse`]
//! and [`Changes::parse`]. Pure (no proxy_wasm), so the native sidecar
//! depends on this crate with `default-features = false`.
//!
//! # Versioning
//!
//! The contract has one version number, [`VERSION`], in the path
//! (`/data/v1/…`) and in every document (`"version": 1`; a document without
//! it is a version-1 document from a sidecar that predates the field).
//!
//! * **Unknown fields are ignored**, in the documents and in profile records.
//!   Within a version the sidecar may add only fields that a filter can
//!   ignore without granting more than intended (informational fields,
//!   hints). Refusing them instead would make one additive field stop every
//!   change from applying, rotations included.
//! * **A field that restricts access** (anything whose absence would let a
//!   token through that its presence refuses) changes the meaning of a
//!   record, so it needs a new version. A filter refuses a document of
//!   another version with [`ContractError::UnsupportedVersion`]: the sync
//!   fails loudly (an error log repeated while it lasts, the failure counter,
//!   the snapshot age) and the proxy keeps its last snapshot, or answers 503
//!   once it is older than `max_staleness_seconds`. It never applies a
//!   record it cannot fully understand.
//! * A sidecar that starts a new version keeps serving the old one under its
//!   own path until every proxy is upgraded.
//!
//! Static profiles in the plugin configuration use the same record but are
//! strict: there an unknown field is an operator's typo and is refused
//! (see `config.rs`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The contract version this build speaks.
pub const VERSION: u32 = 1;

/// The snapshot of every profile.
pub const SNAPSHOT_PATH: &str = "/data/v1/snapshot";

/// The long-polled change feed (`?since=N&wait=S`).
pub const CHANGES_PATH: &str = "/data/v1/changes";

/// One access profile as the proxies see it (also the shape of a static
/// profile in the plugin configuration). Hex strings throughout; the filter
/// validates every field in [`crate::profile::Profile::from_record`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ProfileRecord {
    /// 64 hex digits.
    pub id: String,
    pub client_id: String,
    /// SHA-256 of the client secret, 64 hex digits.
    pub client_secret_sha256: String,
    /// JWT `kid`, 64 hex digits.
    pub kid: String,
    /// HS256 key, 64 to 128 hex digits.
    pub signing_key: String,
    /// Path prefixes, each valid for [`crate::path::validate_prefix`].
    pub allowed_prefixes: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Informational; the filter ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ProfileRecord {
    /// Every field a record may carry; the strict (configuration) reading
    /// refuses any other.
    pub const FIELDS: &'static [&'static str] =
        &["id", "client_id", "client_secret_sha256", "kid", "signing_key", "allowed_prefixes", "disabled", "name"];
}

impl fmt::Display for ProfileRecord {
    /// Names the profile without any key or hash material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "profile {}", self.id)
    }
}

/// `GET /data/v1/snapshot`: every profile, enabled or not, at `revision`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    #[serde(default = "version_1")]
    pub version: u32,
    pub revision: u64,
    pub profiles: Vec<ProfileRecord>,
}

/// `GET /data/v1/changes?since=N`: what changed after `N`, in revision order.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Changes {
    #[serde(default = "version_1")]
    pub version: u32,
    pub revision: u64,
    /// The caller is ahead of the store (it was replaced): fetch the snapshot.
    #[serde(default)]
    pub reset: bool,
    pub changes: Vec<Change>,
}

/// A created or changed profile, or (`profile: null`) a deleted one.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub profile: Option<ProfileRecord>,
}

fn version_1() -> u32 {
    1
}

/// Which document a [`ContractError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Snapshot,
    Changes,
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Snapshot => "snapshot",
            Self::Changes => "change feed",
        })
    }
}

/// Why a data-API document was refused. Never carries record contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContractError {
    /// Not JSON, or a known field has the wrong shape.
    Malformed { document: Document, reason: String },
    /// The sidecar speaks another contract version.
    UnsupportedVersion { document: Document, found: u64 },
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { document, reason } => write!(f, "the sidecar's {document} is not valid: {reason}"),
            Self::UnsupportedVersion { document, found } => write!(
                f,
                "the sidecar's {document} is contract version {found}, this filter understands version {VERSION} \
                 only: upgrade the filter, or point it at a sidecar that serves version {VERSION}"
            ),
        }
    }
}

/// The version alone, read before the body so that a future version whose
/// shape we cannot parse is reported as a version mismatch, not as garbage.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default = "version_1_u64")]
    version: u64,
}

fn version_1_u64() -> u64 {
    1
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], document: Document) -> Result<T, ContractError> {
    let malformed =
        |e: serde_json::Error| ContractError::Malformed { document, reason: without_values(&e.to_string()) };
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(malformed)?;
    if probe.version != u64::from(VERSION) {
        return Err(ContractError::UnsupportedVersion { document, found: probe.version });
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

/// serde quotes the offending string value (`invalid type: string "…"`),
/// which may be key material: keep the message, drop the quoted values.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

impl Snapshot {
    pub fn new(revision: u64, profiles: Vec<ProfileRecord>) -> Self {
        Self { version: VERSION, revision, profiles }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ContractError> {
        parse(bytes, Document::Snapshot)
    }
}

impl Changes {
    pub fn new(revision: u64, reset: bool, changes: Vec<Change>) -> Self {
        Self { version: VERSION, revision, reset, changes }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ContractError> {
        parse(bytes, Document::Changes)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::tests::record;

    #[test]
    fn round_trip_carries_the_version() {
        let snap = Snapshot::new(4, vec![record(1)]);
        let text = serde_json::to_string(&snap).unwrap();
        assert!(text.starts_with(r#"{"version":1,"revision":4,"#), "{text}");
        assert_eq!(Snapshot::parse(text.as_bytes()).unwrap(), snap);
        let ch = Changes::new(5, false, vec![Change { id: record(2).id, profile: None }]);
        assert_eq!(Changes::parse(serde_json::to_string(&ch).unwrap().as_bytes()).unwrap(), ch);
    }

    #[test]
    fn a_document_without_version_is_version_1() {
        let snap = Snapshot::parse(br#"{"revision":1,"profiles":[]}"#).unwrap();
        assert_eq!(snap.version, 1);
        let ch = Changes::parse(br#"{"revision":2,"changes":[]}"#).unwrap();
        assert_eq!((ch.version, ch.reset), (1, false));
    }

    #[test]
    fn unknown_fields_are_ignored_everywhere() {
        let mut profile = serde_json::to_value(record(1)).unwrap();
        profile["created_at"] = 1_700_000_000.into();
        profile["labels"] = serde_json::json!({"team": "sales"});
        let body =
            serde_json::json!({"version": 1, "revision": 3, "generated_by": "sidecar 9.9", "profiles": [profile]});
        let snap = Snapshot::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(snap.profiles, vec![record(1)]);
        let body = serde_json::json!({"revision": 4, "reset": false, "hint": 1,
            "changes": [{"id": record(1).id, "profile": profile, "why": "rotated"}]});
        assert_eq!(Changes::parse(body.to_string().as_bytes()).unwrap().changes[0].profile, Some(record(1)));
    }

    #[test]
    fn another_version_is_refused_before_its_shape_is_read() {
        let e = Snapshot::parse(br#"{"version":2,"revision":1,"profiles":[]}"#).unwrap_err();
        assert_eq!(e, ContractError::UnsupportedVersion { document: Document::Snapshot, found: 2 });
        // A version-2 shape we cannot parse is still reported as a version.
        let e = Changes::parse(br#"{"version":2,"entries":{}}"#).unwrap_err();
        assert_eq!(e, ContractError::UnsupportedVersion { document: Document::Changes, found: 2 });
        assert!(e.to_string().contains("version 2"));
        assert!(matches!(Snapshot::parse(b"nope"), Err(ContractError::Malformed { .. })));
        assert!(matches!(
            Snapshot::parse(br#"{"version":"1","revision":1,"profiles":[]}"#),
            Err(ContractError::Malformed { .. })
        ));
        assert!(matches!(Snapshot::parse(br#"{"revision":1}"#), Err(ContractError::Malformed { .. })));
    }

    #[test]
    fn errors_never_echo_records() {
        let mut bad = serde_json::to_value(record(1)).unwrap();
        bad["allowed_prefixes"] = record(1).signing_key.into();
        let body = serde_json::json!({"revision": 1, "profiles": [bad]});
        let e = Snapshot::parse(body.to_string().as_bytes()).unwrap_err().to_string();
        assert!(!e.contains(&record(1).signing_key) && !e.contains(&record(1).client_secret_sha256), "{e}");
    }
}
