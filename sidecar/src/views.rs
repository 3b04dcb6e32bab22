//! JSON shapes shared by the HTTP API and the CLI.
//!
//! Admin views never contain `secret_sha256` or `signing_key`; the data view
//! (for the Envoy filter) contains both.

use serde::Serialize;

use crate::store::{Change, Changes, Profile, Snapshot, WithSecret};

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

impl<'a> From<&'a Profile> for AdminProfile<'a> {
    fn from(p: &'a Profile) -> Self {
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
    pub fn new(p: &'a Profile) -> Self {
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

/// Data profile for the proxies: `{"id","client_id","client_secret_sha256",
/// "kid","signing_key","allowed_prefixes","disabled"}`.
#[derive(Serialize)]
pub struct DataProfile<'a> {
    pub id: &'a str,
    pub client_id: &'a str,
    pub client_secret_sha256: &'a str,
    pub kid: &'a str,
    pub signing_key: &'a str,
    pub allowed_prefixes: &'a [String],
    pub disabled: bool,
}

impl<'a> From<&'a Profile> for DataProfile<'a> {
    fn from(p: &'a Profile) -> Self {
        DataProfile {
            id: &p.id,
            client_id: &p.client_id,
            client_secret_sha256: &p.secret_sha256,
            kid: &p.kid,
            signing_key: &p.signing_key,
            allowed_prefixes: &p.allowed_prefixes,
            disabled: !p.enabled,
        }
    }
}

/// `{"revision":N,"profiles":[data profile...]}`
#[derive(Serialize)]
pub struct DataSnapshot<'a> {
    pub revision: u64,
    pub profiles: Vec<DataProfile<'a>>,
}

impl<'a> DataSnapshot<'a> {
    pub fn new(s: &'a Snapshot) -> Self {
        DataSnapshot { revision: s.revision, profiles: s.profiles.iter().map(DataProfile::from).collect() }
    }
}

/// `{"id":"...","profile":P|null}`
#[derive(Serialize)]
pub struct DataChange<'a> {
    pub id: &'a str,
    pub profile: Option<DataProfile<'a>>,
}

impl<'a> From<&'a Change> for DataChange<'a> {
    fn from(c: &'a Change) -> Self {
        DataChange { id: &c.id, profile: c.profile.as_ref().map(DataProfile::from) }
    }
}

/// `{"revision":M,"reset":bool,"changes":[...]}`
#[derive(Serialize)]
pub struct DataChanges<'a> {
    pub revision: u64,
    pub reset: bool,
    pub changes: Vec<DataChange<'a>>,
}

impl<'a> DataChanges<'a> {
    pub fn new(c: &'a Changes) -> Self {
        DataChanges { revision: c.revision, reset: c.reset, changes: c.changes.iter().map(DataChange::from).collect() }
    }
}
