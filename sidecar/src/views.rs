//! JSON shapes shared by the HTTP API and the CLI.
//!
//! Admin views never contain `secret_sha256` or a signing key; the data view
//! (for the Envoy filter) contains both, the key unsealed, in the filter's
//! own contract types ([`tollgate::contract`]): one definition serialised
//! here and parsed there.

use serde::Serialize;
use tollgate::contract::{self, ProfileRecord};

use crate::keyring::{Keyring, KeyringError};
use crate::store::{Changes, Snapshot, StoredProfile, WithSecret};

/// Admin profile: `{"id","name","client_id","kid","allowed_prefixes",
/// "enabled","created_at","rotated_at","revision"}`.
#[derive(Debug, Serialize)]
pub struct AdminProfile<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub client_id: &'a str,
    pub kid: &'a str,
    pub allowed_prefixes: &'a [String],
    pub enabled: bool,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub revision: u64,
}

impl<'a> From<&'a StoredProfile> for AdminProfile<'a> {
    fn from(p: &'a StoredProfile) -> Self {
        AdminProfile {
            id: &p.id,
            name: &p.name,
            client_id: &p.client_id,
            kid: &p.kid,
            allowed_prefixes: &p.allowed_prefixes,
            enabled: p.enabled,
            created_at: p.created_at,
            rotated_at: p.rotated_at,
            revision: p.rev,
        }
    }
}

/// `{"profile":{...}}`
#[derive(Debug, Serialize)]
pub struct ProfileEnvelope<'a> {
    pub profile: AdminProfile<'a>,
}

impl<'a> ProfileEnvelope<'a> {
    pub fn new(p: &'a StoredProfile) -> Self {
        ProfileEnvelope { profile: p.into() }
    }
}

/// HTTP create/rotate answer: `{"profile":{...},"client_secret":"..."}`.
#[derive(Debug, Serialize)]
pub struct SecretEnvelope<'a> {
    pub profile: AdminProfile<'a>,
    pub client_secret: &'a str,
}

impl<'a> SecretEnvelope<'a> {
    pub fn new(w: &'a WithSecret) -> Self {
        SecretEnvelope { profile: (&w.profile).into(), client_secret: w.client_secret.expose() }
    }
}

/// CLI create/rotate output:
/// `{"profile":{...},"client_id":"...","client_secret":"..."}`.
#[derive(Debug, Serialize)]
pub struct CliSecretEnvelope<'a> {
    pub profile: AdminProfile<'a>,
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

impl<'a> CliSecretEnvelope<'a> {
    pub fn new(w: &'a WithSecret) -> Self {
        CliSecretEnvelope {
            profile: (&w.profile).into(),
            client_id: &w.profile.client_id,
            client_secret: w.client_secret.expose(),
        }
    }
}

/// `{"revision":N,"profiles":[admin profile...]}`
#[derive(Debug, Serialize)]
pub struct AdminList<'a> {
    pub revision: u64,
    pub profiles: Vec<AdminProfile<'a>>,
}

impl<'a> AdminList<'a> {
    pub fn new(s: &'a Snapshot) -> Self {
        AdminList { revision: s.revision, profiles: s.profiles.iter().map(AdminProfile::from).collect() }
    }
}

/// `{"deleted":"<id>"}`
#[derive(Debug, Serialize)]
pub struct Deleted<'a> {
    pub deleted: &'a str,
}

/// The data API's record for `p` (the filter's own contract type), with its
/// signing key unsealed: the only place a plaintext signing key exists.
fn data_record(p: &StoredProfile, keyring: &Keyring) -> Result<ProfileRecord, KeyringError> {
    let key = keyring.unseal(&p.id, &p.kid, &p.sealed_signing_key)?;
    Ok(ProfileRecord {
        id: p.id.clone(),
        client_id: p.client_id.clone(),
        client_secret_sha256: p.secret_sha256.clone(),
        kid: p.kid.clone(),
        signing_key: hex::encode(key.as_slice()),
        allowed_prefixes: p.allowed_prefixes.clone(),
        disabled: !p.enabled,
        name: None,
    })
}

/// `{"version":1,"revision":N,"profiles":[data profile...]}`, and the
/// profiles left out because their key did not unseal (a tampered row): the
/// proxies then treat them as absent, which refuses their tokens.
pub fn data_snapshot(s: &Snapshot, keyring: &Keyring) -> (contract::Snapshot, Vec<KeyringError>) {
    let mut failed = Vec::new();
    let profiles = s.profiles.iter().filter_map(|p| data_record(p, keyring).map_err(|e| failed.push(e)).ok()).collect();
    (contract::Snapshot::new(s.revision, profiles), failed)
}

/// `{"version":1,"revision":M,"reset":bool,"changes":[{"id","profile":P|null}...]}`;
/// a profile whose key does not unseal is sent as deleted (`null`).
pub fn data_changes(c: &Changes, keyring: &Keyring) -> (contract::Changes, Vec<KeyringError>) {
    let mut failed = Vec::new();
    let changes = c
        .changes
        .iter()
        .map(|ch| contract::Change {
            id: ch.id.clone(),
            profile: ch.profile.as_ref().and_then(|p| data_record(p, keyring).map_err(|e| failed.push(e)).ok()),
        })
        .collect();
    (contract::Changes::new(c.revision, c.reset, changes), failed)
}
