//! The access-profile store: one model, one interface ([`ProfileStore`]),
//! two engines.
//!
//! * [`sqlite`] — one SQLite file, the zero-set-up default.
//! * [`postgres`] — a PostgreSQL database shared by a fleet of sidecars, with
//!   changes pushed by `LISTEN`/`NOTIFY`.
//!
//! Both keep the same semantics, proved by one test suite run against each
//! (`tests/store_suite.rs`): every mutation is a single transaction that bumps
//! the store-wide revision by exactly one and stamps the touched row with it,
//! writers are serialized (so revisions commit in order and "everything after
//! revision N" never skips a row), and a mutation may carry the revision its
//! author last saw of the profile (`if_revision`): a mismatch is refused with
//! [`StoreError::Conflict`] and changes nothing.
//!
//! Client secrets are generated here, handed back exactly once (by create and
//! rotate) and never stored: only the hex of their SHA-256 digest is kept.
//! Signing keys are sealed here with the key file's key ([`crate::keyring`])
//! before any engine sees them, so to the engines key material is an opaque
//! string; only the data views unseal it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::keyring::{Keyring, KeyringError};

pub mod postgres;
pub mod sqlite;

pub use self::postgres::PgStore;
pub use self::sqlite::SqliteStore;

/// Default SQLite database location, relative to the working directory.
pub const DEFAULT_DB_PATH: &str = "var/tollgate.db";

/// Longest accepted profile name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Most allowed prefixes per profile (after de-duplication).
pub const MAX_PREFIXES: usize = 64;

/// Errors of the store domain.
///
/// [`StoreError::is_invalid_input`], [`StoreError::is_not_found`],
/// [`StoreError::is_conflict`] and [`StoreError::is_unavailable`] classify
/// them for the HTTP layer (400 / 404 / 409 / 503) and the CLI (exit codes
/// 2 / 3 / 4 / 1); every other variant is an operational failure (HTTP 500,
/// exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The profile name is empty, too long or contains control characters.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// One allowed prefix failed validation.
    #[error("invalid allowed prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The offending prefix (truncated for display).
        prefix: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The prefix list as a whole is unacceptable (empty or too long).
    #[error("invalid allowed prefixes: {0}")]
    InvalidPrefixes(String),
    /// No profile has this id or client_id.
    #[error("profile not found: {0}")]
    NotFound(String),
    /// The caller's `if_revision` is not the profile's current revision:
    /// someone else changed it first.
    #[error("profile changed concurrently: expected revision {expected}, current revision is {current}")]
    Conflict {
        /// The revision the caller last saw.
        expected: u64,
        /// The profile's revision now.
        current: u64,
    },
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    UnsupportedSchema {
        /// Schema version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored value does not have the expected shape.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The signing keys' key file is missing, wrong, exposed or unreadable,
    /// or a sealed key does not open.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The database file's permissions could not be checked or set.
    #[error("cannot make {path} private to this user: {source}")]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The database's parent directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("operating-system randomness unavailable: {0}")]
    Random(String),
    /// The store URL or path cannot be used.
    #[error("invalid store: {0}")]
    InvalidStore(String),
    /// The database server cannot be reached (down, restarting, network cut).
    /// Nothing was written; the caller may retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Any SQLite failure (cannot open, busy, I/O, constraint, …).
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// A PostgreSQL failure that is not a lost connection.
    #[error("database error: {0}")]
    Pg(String),
}

impl StoreError {
    /// True for errors caused by the caller's input (HTTP 400, exit code 2).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, StoreError::InvalidName(_) | StoreError::InvalidPrefix { .. } | StoreError::InvalidPrefixes(_))
    }

    /// True when the addressed profile does not exist (HTTP 404, exit code 3).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// True when a compare-and-set on the profile revision lost (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// True when the database could not be reached (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One access profile as stored, including its key material.
///
/// `Debug` redacts `secret_sha256` and `sealed_signing_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredProfile {
    /// 64 hex chars (32 random bytes).
    pub id: String,
    /// Human-readable label.
    pub name: String,
    /// 32 hex chars (16 random bytes), the OAuth `client_id`.
    pub client_id: String,
    /// Hex SHA-256 of the client secret string's UTF-8 bytes.
    pub secret_sha256: String,
    /// JWT key id, 64 hex chars.
    pub kid: String,
    /// The HS256 signing key (32 bytes) sealed with the key file's key;
    /// [`Keyring::unseal`] with this profile's id and kid opens it.
    pub sealed_signing_key: String,
    /// Path prefixes the profile's tokens may access.
    pub allowed_prefixes: Vec<String>,
    /// Disabled profiles cannot obtain or use tokens.
    pub enabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last rotation, if any.
    pub rotated_at: Option<i64>,
    /// Store revision of this profile's last change.
    pub rev: u64,
}

impl fmt::Debug for StoredProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredProfile")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("secret_sha256", &"<redacted>")
            .field("kid", &self.kid)
            .field("sealed_signing_key", &"<redacted>")
            .field("allowed_prefixes", &self.allowed_prefixes)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .field("rotated_at", &self.rotated_at)
            .field("rev", &self.rev)
            .finish()
    }
}

/// A client secret in plain text. Only ever returned by create and rotate.
///
/// `Debug` and `Display` are redacted; use [`ClientSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// The secret itself (43 base64url characters; 64 hex digits if it was
    /// generated before base64url).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// A profile together with its freshly generated client secret.
#[derive(Debug, Clone)]
pub struct WithSecret {
    /// The profile after the change.
    pub profile: StoredProfile,
    /// The new client secret (not stored anywhere).
    pub client_secret: ClientSecret,
}

/// All profiles at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Store revision the list reflects.
    pub revision: u64,
    /// Every profile, enabled or not, oldest first.
    pub profiles: Vec<StoredProfile>,
}

/// One entry of the change feed.
#[derive(Debug, Clone)]
pub struct Change {
    /// Profile id.
    pub id: String,
    /// The profile now, or `None` if it was deleted.
    pub profile: Option<StoredProfile>,
}

/// Everything that changed after some revision.
#[derive(Debug, Clone)]
pub struct Changes {
    /// Current store revision.
    pub revision: u64,
    /// True when the caller's revision is ahead of the store (the store was
    /// replaced): the caller must re-fetch the snapshot. `changes` is empty.
    pub reset: bool,
    /// Changed and deleted profiles, in revision order.
    pub changes: Vec<Change>,
}

/// The store interface the server and the CLI use; each engine implements it
/// with the same semantics.
pub trait ProfileStore: Send {
    /// Where the data lives, for logs (never a password).
    fn describe(&self) -> String;

    /// The key the signing keys are sealed with; the data views unseal with
    /// it.
    fn keyring(&self) -> &Keyring;

    /// Store files that were open to other users when the store was opened
    /// (files have been made private since): for the operator's log.
    fn exposures(&self) -> &[crate::permissions::Exposure] {
        &[]
    }

    /// Current store revision.
    fn revision(&mut self) -> Result<u64>;

    /// Creates a profile and returns it with its client secret.
    fn create(&mut self, name: &str, prefixes: &[String]) -> Result<WithSecret>;

    /// Every profile, oldest first, with the revision they reflect.
    fn list(&mut self) -> Result<Snapshot>;

    /// One profile, addressed by id or client_id.
    fn get(&mut self, key: &str) -> Result<StoredProfile>;

    /// Replaces the client secret, kid and signing key; sets `rotated_at`.
    fn rotate(&mut self, key: &str, if_revision: Option<u64>) -> Result<WithSecret>;

    /// Enables or disables a profile. A no-op (no revision bump) if it is
    /// already so.
    fn set_enabled(&mut self, key: &str, enabled: bool, if_revision: Option<u64>) -> Result<StoredProfile>;

    /// Replaces the allowed prefixes. A no-op (no revision bump) if the
    /// validated list equals the current one.
    fn set_prefixes(&mut self, key: &str, prefixes: &[String], if_revision: Option<u64>) -> Result<StoredProfile>;

    /// Deletes a profile, leaving a tombstone for the change feed. Returns the
    /// deleted profile's id.
    fn delete(&mut self, key: &str, if_revision: Option<u64>) -> Result<String>;

    /// Everything with a revision greater than `since`, read at one
    /// revision. If `since` is ahead of the store the result has
    /// `reset = true` and no changes, telling the caller to re-fetch the
    /// snapshot.
    fn changes_since(&mut self, since: u64) -> Result<Changes>;

    /// Closes the connection, reporting any error.
    fn close(self: Box<Self>) -> Result<()>;

    /// Same as [`ProfileStore::list`]; the data API's name for it.
    fn snapshot(&mut self) -> Result<Snapshot> {
        self.list()
    }

    /// Disables a profile (no-op if already disabled).
    fn disable(&mut self, key: &str) -> Result<StoredProfile> {
        self.set_enabled(key, false, None)
    }

    /// Enables a profile (no-op if already enabled).
    fn enable(&mut self, key: &str) -> Result<StoredProfile> {
        self.set_enabled(key, true, None)
    }
}

/// Which store to open: a SQLite file or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A SQLite database file (its directory is created if needed).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` connection URL.
    Postgres(String),
}

impl StoreSpec {
    /// `postgres://…` and `postgresql://…` name a PostgreSQL database,
    /// `sqlite:PATH` or anything else a SQLite file.
    pub fn parse(text: &str) -> StoreSpec {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StoreSpec::Postgres(text.to_string())
        } else {
            StoreSpec::Sqlite(PathBuf::from(text.strip_prefix("sqlite:").unwrap_or(text)))
        }
    }

    /// Opens the store, applying pending migrations. `key_file` holds the
    /// key that seals the signing keys; it is created only while the store
    /// holds no sealed key.
    pub fn open(&self, key_file: &Path) -> Result<Box<dyn ProfileStore>> {
        Ok(match self {
            StoreSpec::Sqlite(path) => Box::new(SqliteStore::open(path, key_file)?),
            StoreSpec::Postgres(url) => Box::new(PgStore::open(url, key_file)?),
        })
    }

    /// The key file when the operator names none: beside a SQLite database
    /// ([`crate::keyring::default_key_file`]); for PostgreSQL, beside the
    /// default database path (`var/tollgate.key`), which every sidecar of a
    /// fleet must share.
    pub fn default_key_file(&self) -> PathBuf {
        match self {
            StoreSpec::Sqlite(path) => crate::keyring::default_key_file(path),
            StoreSpec::Postgres(_) => crate::keyring::default_key_file(Path::new(DEFAULT_DB_PATH)),
        }
    }

    /// For logs and error messages: the path, or the URL without its
    /// password.
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Sqlite(path) => path.display().to_string(),
            StoreSpec::Postgres(url) => postgres::redact_url(url),
        }
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreSpec({})", self.describe())
    }
}

/// What a profile gets at creation and again at every rotation: a client
/// secret (kept only as its SHA-256) and a fresh signing key with its kid,
/// all 256-bit values from the OS; the key is sealed for `profile_id`.
pub(crate) struct Credentials {
    pub(crate) secret: String,
    pub(crate) secret_sha256: String,
    pub(crate) kid: String,
    pub(crate) sealed_signing_key: String,
}

impl Credentials {
    pub(crate) fn new(keyring: &Keyring, profile_id: &str) -> Result<Self> {
        let secret = random_secret()?;
        let kid = random_hex(32)?;
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(key.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
        let sealed_signing_key = keyring.seal(profile_id, &kid, key.as_ref())?;
        Ok(Self { secret_sha256: sha256_hex(&secret), secret, kid, sealed_signing_key })
    }

    /// The secret to hand back, once.
    pub(crate) fn client_secret(self) -> ClientSecret {
        ClientSecret(self.secret)
    }
}

/// A new profile's identity and validated fields, computed before any
/// transaction so both engines insert exactly the same thing.
pub(crate) struct NewProfile {
    pub(crate) id: String,
    pub(crate) client_id: String,
    pub(crate) prefixes_json: String,
    pub(crate) credentials: Credentials,
    pub(crate) created_at: i64,
}

impl NewProfile {
    pub(crate) fn new(keyring: &Keyring, name: &str, prefixes: &[String]) -> Result<Self> {
        validate_name(name)?;
        let prefixes = validate_prefixes(prefixes)?;
        let id = random_hex(32)?;
        Ok(NewProfile {
            prefixes_json: encode_prefixes(&prefixes)?,
            client_id: random_hex(16)?,
            credentials: Credentials::new(keyring, &id)?,
            created_at: unix_now(),
            id,
        })
    }
}

/// Refuses a mutation whose author saw another revision of the profile.
pub(crate) fn check_revision(current: &StoredProfile, if_revision: Option<u64>) -> Result<()> {
    match if_revision {
        Some(expected) if expected != current.rev => Err(StoreError::Conflict { expected, current: current.rev }),
        _ => Ok(()),
    }
}

/// Checks a profile name: 1..=100 characters, no control characters.
pub fn validate_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(StoreError::InvalidName("must not be empty".into()));
    }
    if chars > MAX_NAME_CHARS {
        return Err(StoreError::InvalidName(format!("must be at most {MAX_NAME_CHARS} characters (got {chars})")));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::InvalidName("must not contain control characters".into()));
    }
    Ok(())
}

/// Checks one allowed prefix with the filter's own rule
/// ([`tollgate::path::validate_prefix`]: absolute, ending in `/`, at most 256
/// visible ASCII characters without `?`, `#`, `%` or `\\`, no empty, `.` or
/// `..` segment; `/` alone means everything), so the filter accepts every
/// stored profile.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    tollgate::path::validate_prefix(prefix).map_err(|reason| StoreError::InvalidPrefix {
        prefix: truncate_for_display(prefix),
        reason: reason.to_string(),
    })
}

/// Validates a prefix list and returns it de-duplicated (first occurrence
/// kept, order preserved).
pub fn validate_prefixes(prefixes: &[String]) -> Result<Vec<String>> {
    if prefixes.is_empty() {
        return Err(StoreError::InvalidPrefixes("at least one allowed prefix is required".into()));
    }
    let mut out: Vec<String> = Vec::new();
    for prefix in prefixes {
        validate_prefix(prefix)?;
        if !out.contains(prefix) {
            if out.len() == MAX_PREFIXES {
                return Err(StoreError::InvalidPrefixes(format!("at most {MAX_PREFIXES} distinct allowed prefixes")));
            }
            out.push(prefix.clone());
        }
    }
    Ok(out)
}

/// Hex of SHA-256 of `s`'s UTF-8 bytes.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A client secret: 32 bytes from the OS random number generator, base64url
/// without padding (43 characters). Short enough that the filter checks it
/// with one SHA-256 block (55 bytes at most), where 64 hex digits took two;
/// secrets already handed out keep working (only their SHA-256 is stored).
pub fn random_secret() -> Result<String> {
    let mut buf = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(buf.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(tollgate::b64::url_encode(buf.as_ref()))
}

/// `n` bytes from the OS random number generator, hex encoded.
pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

pub(crate) fn truncate_for_display(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub(crate) fn encode_prefixes(prefixes: &[String]) -> Result<String> {
    serde_json::to_string(prefixes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode_prefixes(id: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("allowed_prefixes of profile {id} is not a JSON string array: {e}")))
}

pub(crate) fn to_sql_rev(rev: u64) -> Result<i64> {
    i64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("revision {rev} out of range")))
}

pub(crate) fn from_sql_rev(rev: i64) -> Result<u64> {
    u64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("negative revision {rev}")))
}

/// Orders changed rows and tombstones by revision.
pub(crate) fn into_changes(revision: u64, mut entries: Vec<(u64, Change)>) -> Changes {
    entries.sort_by_key(|(rev, _)| *rev);
    Changes { revision, reset: false, changes: entries.into_iter().map(|(_, c)| c).collect() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(StoreSpec::parse("var/t.db"), StoreSpec::Sqlite(PathBuf::from("var/t.db")));
        assert_eq!(StoreSpec::parse("sqlite:/tmp/x.db"), StoreSpec::Sqlite(PathBuf::from("/tmp/x.db")));
        assert_eq!(StoreSpec::parse("postgres://u@h:5/d"), StoreSpec::Postgres("postgres://u@h:5/d".into()));
        assert_eq!(StoreSpec::parse("postgresql://h/d"), StoreSpec::Postgres("postgresql://h/d".into()));
        let spec = StoreSpec::parse("postgres://admin:hunter2@db:5432/tollgate");
        assert!(!spec.describe().contains("hunter2"));
        assert!(!format!("{spec:?}").contains("hunter2"));
    }

    #[test]
    fn name_validation() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name("Sales – read only ✓").is_ok());
        assert!(validate_name(&"x".repeat(100)).is_ok());
        assert!(validate_name(&"é".repeat(100)).is_ok());
        assert!(validate_name("").unwrap_err().is_invalid_input());
        assert!(validate_name(&"x".repeat(101)).unwrap_err().is_invalid_input());
        assert!(validate_name("a\nb").unwrap_err().is_invalid_input());
        assert!(validate_name("a\u{7f}").unwrap_err().is_invalid_input());
        assert!(validate_name("\u{1b}[31m").unwrap_err().is_invalid_input());
    }

    #[test]
    fn prefix_validation() {
        for ok in
            ["/", "/sales/", "/a/b/c/", "/v1.2/", "/a..b/", "/.well-known/", "/~user/", "/a-b_c.d~e!$&'()*+,;=:@/"]
        {
            assert!(validate_prefix(ok).is_ok(), "{ok} should be accepted");
        }
        let long_ok = format!("/{}/", "a".repeat(254));
        assert!(validate_prefix(&long_ok).is_ok());
        let too_long = format!("/{}/", "a".repeat(255));
        for bad in [
            "",
            "sales/",
            "/sales",
            "//",
            "/a//b/",
            "/../",
            "/a/../b/",
            "/./",
            "/a b/",
            "/a\tb/",
            "/a\u{0}/",
            "/a?x/",
            "/a#x/",
            "/a\\b/",
            "/\u{a0}/",
            "/\u{e9}/",
            "/%7Euser/",
            "/a%2fb/",
            too_long.as_str(),
        ] {
            let err = validate_prefix(bad).unwrap_err();
            assert!(err.is_invalid_input(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefix_list_validation() {
        assert_eq!(validate_prefixes(&p(&["/a/", "/b/", "/a/"])).unwrap(), p(&["/a/", "/b/"]));
        assert!(validate_prefixes(&[]).unwrap_err().is_invalid_input());
        let many: Vec<String> = (0..64).map(|i| format!("/p{i}/")).collect();
        assert_eq!(validate_prefixes(&many).unwrap().len(), 64);
        let mut dup_heavy = many.clone();
        dup_heavy.extend(many.iter().cloned());
        assert_eq!(validate_prefixes(&dup_heavy).unwrap().len(), 64);
        let too_many: Vec<String> = (0..65).map(|i| format!("/p{i}/")).collect();
        assert!(validate_prefixes(&too_many).unwrap_err().is_invalid_input());
        assert!(validate_prefixes(&p(&["/a/", "bad"])).unwrap_err().is_invalid_input());
    }

    #[test]
    fn sha256_hex_matches_known_vector() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn conflict_check() {
        let profile = StoredProfile {
            id: "i".into(),
            name: "n".into(),
            client_id: "c".into(),
            secret_sha256: String::new(),
            kid: String::new(),
            sealed_signing_key: String::new(),
            allowed_prefixes: vec![],
            enabled: true,
            created_at: 0,
            rotated_at: None,
            rev: 7,
        };
        assert!(check_revision(&profile, None).is_ok());
        assert!(check_revision(&profile, Some(7)).is_ok());
        let err = check_revision(&profile, Some(6)).unwrap_err();
        assert!(err.is_conflict());
        assert_eq!(err.to_string(), "profile changed concurrently: expected revision 6, current revision is 7");
    }
}
