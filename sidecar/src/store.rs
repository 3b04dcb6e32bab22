//! The SQLite-backed access-profile store.
//!
//! Every mutation is a single `BEGIN IMMEDIATE … COMMIT` transaction that also
//! bumps the store-wide revision counter (`meta.revision`) by exactly one and
//! stamps the touched row (`profiles.rev` or `tombstones.rev`) with the new
//! revision. A process killed mid-write therefore loses nothing that was
//! committed and leaves nothing half-written, and "everything that changed
//! after revision N" is simply every row whose `rev` is greater than N.
//!
//! Client secrets are generated here, handed back exactly once (by
//! [`Store::create`] and [`Store::rotate`]) and never stored: only the hex of
//! their SHA-256 digest is kept. Signing keys are stored sealed with the key
//! file's key ([`crate::keyring`]); only the data views unseal them.
//!
//! The database file and its `-wal`/`-shm` companions are private to the
//! sidecar's user ([`crate::permissions`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::keyring::{self, Keyring, KeyringError};
use crate::permissions::{self, Exposure};

/// Default database location, relative to the working directory.
pub const DEFAULT_DB_PATH: &str = "var/tollgate.db";

/// How long a connection waits for another writer (the CLI or the server)
/// before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted profile name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Most allowed prefixes per profile (after de-duplication).
pub const MAX_PREFIXES: usize = 64;

/// Schema migrations; entry `i` upgrades `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value INTEGER NOT NULL
     );
     INSERT INTO meta (key, value) VALUES ('revision', 0);
     CREATE TABLE profiles (
         id               TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 64),
         name             TEXT NOT NULL,
         client_id        TEXT NOT NULL UNIQUE,
         secret_sha256    TEXT NOT NULL CHECK (length(secret_sha256) = 64),
         kid              TEXT NOT NULL CHECK (length(kid) = 64),
         signing_key      TEXT NOT NULL CHECK (length(signing_key) = 64),
         allowed_prefixes TEXT NOT NULL,
         enabled          INTEGER NOT NULL CHECK (enabled IN (0, 1)),
         created_at       INTEGER NOT NULL,
         rotated_at       INTEGER,
         rev              INTEGER NOT NULL
     );
     CREATE INDEX profiles_rev ON profiles (rev);
     CREATE TABLE tombstones (
         id  TEXT PRIMARY KEY NOT NULL,
         rev INTEGER NOT NULL
     );
     CREATE INDEX tombstones_rev ON tombstones (rev);",
    // 2: signing keys sealed (longer than 64 hex digits), and the id of the
    // key they are sealed with. The plaintext rows of a version-1 database
    // are sealed by `seal_plaintext_keys` in the same transaction.
    "CREATE TABLE profiles_v2 (
         id               TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 64),
         name             TEXT NOT NULL,
         client_id        TEXT NOT NULL UNIQUE,
         secret_sha256    TEXT NOT NULL CHECK (length(secret_sha256) = 64),
         kid              TEXT NOT NULL CHECK (length(kid) = 64),
         signing_key      TEXT NOT NULL,
         allowed_prefixes TEXT NOT NULL,
         enabled          INTEGER NOT NULL CHECK (enabled IN (0, 1)),
         created_at       INTEGER NOT NULL,
         rotated_at       INTEGER,
         rev              INTEGER NOT NULL
     );
     INSERT INTO profiles_v2 SELECT id, name, client_id, secret_sha256, kid, signing_key,
         allowed_prefixes, enabled, created_at, rotated_at, rev FROM profiles;
     DROP TABLE profiles;
     ALTER TABLE profiles_v2 RENAME TO profiles;
     CREATE INDEX profiles_rev ON profiles (rev);
     CREATE TABLE keyring (
         one    INTEGER PRIMARY KEY NOT NULL CHECK (one = 1),
         key_id TEXT NOT NULL
     );",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const PROFILE_COLUMNS: &str = "id, name, client_id, secret_sha256, kid, signing_key, \
     allowed_prefixes, enabled, created_at, rotated_at, rev";

/// Errors of the store domain.
///
/// [`StoreError::is_invalid_input`] and [`StoreError::is_not_found`] classify
/// them for the HTTP layer (400 / 404) and the CLI (exit codes 2 / 3); every
/// other variant is an operational failure (HTTP 500, exit code 1).
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
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    UnsupportedSchema {
        /// `PRAGMA user_version` found in the file.
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
    /// Any SQLite failure (cannot open, busy, I/O, constraint, …).
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
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
    /// The secret itself (64 hex chars).
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
    /// StoredProfile id.
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

/// A handle on the database file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    keyring: Keyring,
    exposures: Vec<Exposure>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("keyring", &self.keyring).finish()
    }
}

/// What a profile gets at creation and again at every rotation: a client
/// secret (kept only as its SHA-256) and a fresh signing key with its kid,
/// all 256-bit values from the OS; the key is sealed for `profile_id`.
struct Credentials {
    secret: String,
    secret_sha256: String,
    kid: String,
    sealed_signing_key: String,
}

impl Credentials {
    fn new(keyring: &Keyring, profile_id: &str) -> Result<Self> {
        let secret = random_hex(32)?;
        let kid = random_hex(32)?;
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(key.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
        let sealed_signing_key = keyring.seal(profile_id, &kid, key.as_ref())?;
        Ok(Self { secret_sha256: sha256_hex(&secret), secret, kid, sealed_signing_key })
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, creating its parent
    /// directory (0700), the file (0600), enabling WAL and applying pending
    /// migrations. `key_file` holds the key that seals the signing keys
    /// ([`keyring::default_key_file`] when the operator names none); it is
    /// created only while the database holds no sealed key.
    pub fn open(path: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        fn private(p: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
            move |source| StoreError::Permissions { path: p.to_path_buf(), source }
        }
        let mut exposures = Vec::new();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                exposures.extend(
                    permissions::private_dir(parent)
                        .map_err(|source| StoreError::CreateDir { path: parent.to_path_buf(), source })?,
                );
            }
        }
        exposures.extend(permissions::private_file(&path, true).map_err(private(&path))?);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!("could not enable WAL journal mode (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // SQLite gives new companions the database's mode; these may predate
        // that (or this build).
        for suffix in ["-wal", "-shm"] {
            let companion = permissions::companion(&path, suffix);
            exposures.extend(permissions::private_file(&companion, false).map_err(private(&companion))?);
        }
        let keyring = migrate(&mut conn, key_file.as_ref())?;
        Ok(Store { conn, path, keyring, exposures })
    }

    /// Files and directories that were open to other users when this store
    /// was opened (files have been made private since): for the operator.
    pub fn exposures(&self) -> &[Exposure] {
        &self.exposures
    }

    /// The key the signing keys are sealed with; the data views unseal with it.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Path this store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connection, reporting any error.
    pub fn close(self) -> Result<()> {
        self.conn.close().map_err(|(_, e)| StoreError::Db(e))
    }

    /// Current `PRAGMA user_version`.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Current store revision.
    pub fn revision(&self) -> Result<u64> {
        read_revision(&self.conn)
    }

    /// Runs `PRAGMA integrity_check` and returns its first line (`"ok"` when
    /// healthy).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Creates a profile and returns it with its client secret.
    pub fn create(&mut self, name: &str, prefixes: &[String]) -> Result<WithSecret> {
        validate_name(name)?;
        let prefixes = validate_prefixes(prefixes)?;
        let prefixes_json = encode_prefixes(&prefixes)?;
        let id = random_hex(32)?;
        let client_id = random_hex(16)?;
        let Credentials { secret, secret_sha256, kid, sealed_signing_key } = Credentials::new(&self.keyring, &id)?;
        let now = unix_now();

        let tx = self.write_tx()?;
        let rev = bump_revision(&tx)?;
        tx.execute("DELETE FROM tombstones WHERE id = ?1", params![id])?;
        tx.execute(
            "INSERT INTO profiles (id, name, client_id, secret_sha256, kid, signing_key, \
             allowed_prefixes, enabled, created_at, rotated_at, rev) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, NULL, ?9)",
            params![id, name, client_id, secret_sha256, kid, sealed_signing_key, prefixes_json, now, to_sql_rev(rev)?],
        )?;
        let profile = load_by_id(&tx, &id)?;
        tx.commit()?;
        Ok(WithSecret { profile, client_secret: ClientSecret(secret) })
    }

    /// Every profile, oldest first, with the revision they reflect.
    pub fn list(&mut self) -> Result<Snapshot> {
        let tx = self.conn.transaction()?;
        let revision = read_revision(&tx)?;
        let profiles = {
            let mut stmt =
                tx.prepare(&format!("SELECT {PROFILE_COLUMNS} FROM profiles ORDER BY created_at, rev, id"))?;
            let rows = stmt.query_map([], RawProfile::from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.into_profile()?);
            }
            out
        };
        tx.commit()?;
        Ok(Snapshot { revision, profiles })
    }

    /// Same as [`Store::list`]; the data API's name for it.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.list()
    }

    /// One profile, addressed by id or client_id.
    pub fn get(&self, key: &str) -> Result<StoredProfile> {
        find(&self.conn, key)
    }

    /// Replaces the client secret, kid and signing key; sets `rotated_at`.
    pub fn rotate(&mut self, key: &str) -> Result<WithSecret> {
        let now = unix_now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = find(&tx, key)?;
        let Credentials { secret, secret_sha256, kid, sealed_signing_key } =
            Credentials::new(&self.keyring, &current.id)?;
        let rev = bump_revision(&tx)?;
        tx.execute(
            "UPDATE profiles SET secret_sha256 = ?1, kid = ?2, signing_key = ?3, \
             rotated_at = ?4, rev = ?5 WHERE id = ?6",
            params![secret_sha256, kid, sealed_signing_key, now, to_sql_rev(rev)?, current.id],
        )?;
        let profile = load_by_id(&tx, &current.id)?;
        tx.commit()?;
        Ok(WithSecret { profile, client_secret: ClientSecret(secret) })
    }

    /// Disables a profile. A no-op (no revision bump) if already disabled.
    pub fn disable(&mut self, key: &str) -> Result<StoredProfile> {
        self.set_enabled(key, false)
    }

    /// Enables a profile. A no-op (no revision bump) if already enabled.
    pub fn enable(&mut self, key: &str) -> Result<StoredProfile> {
        self.set_enabled(key, true)
    }

    fn set_enabled(&mut self, key: &str, enabled: bool) -> Result<StoredProfile> {
        self.update_column(key, "enabled", &enabled, |current| current.enabled == enabled)
    }

    /// Replaces the allowed prefixes. A no-op (no revision bump) if the
    /// validated list equals the current one.
    pub fn set_prefixes(&mut self, key: &str, prefixes: &[String]) -> Result<StoredProfile> {
        let prefixes = validate_prefixes(prefixes)?;
        let prefixes_json = encode_prefixes(&prefixes)?;
        self.update_column(key, "allowed_prefixes", &prefixes_json, |current| current.allowed_prefixes == prefixes)
    }

    /// Sets one column of a profile in one transaction, bumping the revision,
    /// unless `unchanged` says the value is already there (then nothing is
    /// written and long-polls are not woken). `column` is one of our own
    /// constants, never input.
    fn update_column(
        &mut self,
        key: &str,
        column: &'static str,
        value: &dyn rusqlite::ToSql,
        unchanged: impl FnOnce(&StoredProfile) -> bool,
    ) -> Result<StoredProfile> {
        let tx = self.write_tx()?;
        let current = find(&tx, key)?;
        if unchanged(&current) {
            tx.commit()?;
            return Ok(current);
        }
        let rev = bump_revision(&tx)?;
        tx.execute(
            &format!("UPDATE profiles SET {column} = ?1, rev = ?2 WHERE id = ?3"),
            params![value, to_sql_rev(rev)?, current.id],
        )?;
        let profile = load_by_id(&tx, &current.id)?;
        tx.commit()?;
        Ok(profile)
    }

    /// Deletes a profile, leaving a tombstone for the change feed. Returns the
    /// deleted profile's id.
    pub fn delete(&mut self, key: &str) -> Result<String> {
        let tx = self.write_tx()?;
        let current = find(&tx, key)?;
        let rev = bump_revision(&tx)?;
        tx.execute("DELETE FROM profiles WHERE id = ?1", params![current.id])?;
        tx.execute(
            "INSERT INTO tombstones (id, rev) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET rev = excluded.rev",
            params![current.id, to_sql_rev(rev)?],
        )?;
        tx.commit()?;
        Ok(current.id)
    }

    /// Everything with a revision greater than `since`.
    ///
    /// If `since` is ahead of the store the result has `reset = true` and no
    /// changes, telling the caller to re-fetch the snapshot.
    pub fn changes_since(&mut self, since: u64) -> Result<Changes> {
        let tx = self.conn.transaction()?;
        let revision = read_revision(&tx)?;
        if since > revision {
            tx.commit()?;
            return Ok(Changes { revision, reset: true, changes: Vec::new() });
        }
        let since_sql = to_sql_rev(since)?;
        let mut entries: Vec<(u64, Change)> = Vec::new();
        {
            let mut stmt =
                tx.prepare(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE rev > ?1 ORDER BY rev"))?;
            let rows = stmt.query_map(params![since_sql], RawProfile::from_row)?;
            for row in rows {
                let profile = row?.into_profile()?;
                entries.push((profile.rev, Change { id: profile.id.clone(), profile: Some(profile) }));
            }
        }
        {
            let mut stmt = tx.prepare("SELECT id, rev FROM tombstones WHERE rev > ?1 ORDER BY rev")?;
            let rows = stmt.query_map(params![since_sql], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (id, rev) = row?;
                entries.push((from_sql_rev(rev)?, Change { id, profile: None }));
            }
        }
        tx.commit()?;
        entries.sort_by_key(|(rev, _)| *rev);
        Ok(Changes { revision, reset: false, changes: entries.into_iter().map(|(_, c)| c).collect() })
    }

    fn write_tx(&mut self) -> Result<Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

/// Applies pending migrations and returns the keyring the signing keys are
/// sealed with. The key file is created only in the transaction that
/// records its id, i.e. while no key is sealed yet; a database with sealed
/// keys and no key file (a copy taken alone) fails to open.
fn migrate(conn: &mut Connection, key_file: &Path) -> Result<Keyring> {
    // Cheap check first, so an up-to-date database is never write-locked.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        if let Some(key_id) = read_key_id(conn)? {
            return Ok(Keyring::load(key_file, &key_id)?);
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema { found, supported: SCHEMA_VERSION });
    }
    let start = usize::try_from(found).map_err(|_| StoreError::Corrupt(format!("negative schema version {found}")))?;
    for sql in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(sql)?;
    }
    let keyring = match read_key_id(&tx)? {
        Some(key_id) => Keyring::load(key_file, &key_id)?,
        None => {
            let keyring = Keyring::load_or_create(key_file)?;
            tx.execute("INSERT INTO keyring (one, key_id) VALUES (1, ?1)", params![keyring.id()])?;
            keyring
        }
    };
    seal_plaintext_keys(&tx, &keyring)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(keyring)
}

fn read_key_id(conn: &Connection) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT key_id FROM keyring WHERE one = 1", [], |r| r.get(0)).optional()?)
}

/// Seals the plaintext signing keys a version-1 database kept. The keys
/// themselves do not change (tokens stay valid; no revision bump: the data
/// API serves the same bytes).
fn seal_plaintext_keys(tx: &Transaction<'_>, keyring: &Keyring) -> Result<()> {
    let rows: Vec<(String, String, zeroize::Zeroizing<String>)> = {
        let mut stmt = tx.prepare("SELECT id, kid, signing_key FROM profiles")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, zeroize::Zeroizing::new(r.get(2)?))))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, kid, stored) in rows.iter().filter(|(_, _, k)| !keyring::is_sealed(k)) {
        let key =
            zeroize::Zeroizing::new(hex::decode(stored.as_str()).ok().filter(|k| k.len() == 32).ok_or_else(|| {
                StoreError::Corrupt(format!("the plaintext signing key of profile {id} is not 64 hex digits"))
            })?);
        let sealed = keyring.seal(id, kid, &key)?;
        tx.execute("UPDATE profiles SET signing_key = ?1 WHERE id = ?2", params![sealed, id])?;
    }
    Ok(())
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

/// `n` bytes from the OS random number generator, hex encoded.
pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn truncate_for_display(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn encode_prefixes(prefixes: &[String]) -> Result<String> {
    serde_json::to_string(prefixes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_sql_rev(rev: u64) -> Result<i64> {
    i64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("revision {rev} out of range")))
}

fn from_sql_rev(rev: i64) -> Result<u64> {
    u64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("negative revision {rev}")))
}

fn read_revision(conn: &Connection) -> Result<u64> {
    let rev: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0))?;
    from_sql_rev(rev)
}

/// Increments the revision counter inside `tx` and returns the new value.
fn bump_revision(tx: &Transaction<'_>) -> Result<u64> {
    let rev: i64 =
        tx.query_row("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value", [], |r| r.get(0))?;
    from_sql_rev(rev)
}

/// Finds a profile by id or client_id.
fn find(conn: &Connection, key: &str) -> Result<StoredProfile> {
    let raw = conn
        .query_row(
            &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = ?1 OR client_id = ?1"),
            params![key],
            RawProfile::from_row,
        )
        .optional()?;
    match raw {
        Some(raw) => raw.into_profile(),
        None => Err(StoreError::NotFound(truncate_for_display(key))),
    }
}

fn load_by_id(conn: &Connection, id: &str) -> Result<StoredProfile> {
    conn.query_row(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = ?1"), params![id], RawProfile::from_row)?
        .into_profile()
}

/// A profile row before its JSON and integer columns are decoded.
struct RawProfile {
    id: String,
    name: String,
    client_id: String,
    secret_sha256: String,
    kid: String,
    sealed_signing_key: String,
    allowed_prefixes: String,
    enabled: bool,
    created_at: i64,
    rotated_at: Option<i64>,
    rev: i64,
}

impl RawProfile {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawProfile> {
        Ok(RawProfile {
            id: r.get(0)?,
            name: r.get(1)?,
            client_id: r.get(2)?,
            secret_sha256: r.get(3)?,
            kid: r.get(4)?,
            sealed_signing_key: r.get(5)?,
            allowed_prefixes: r.get(6)?,
            enabled: r.get(7)?,
            created_at: r.get(8)?,
            rotated_at: r.get(9)?,
            rev: r.get(10)?,
        })
    }

    fn into_profile(self) -> Result<StoredProfile> {
        let allowed_prefixes: Vec<String> = serde_json::from_str(&self.allowed_prefixes).map_err(|e| {
            StoreError::Corrupt(format!("allowed_prefixes of profile {} is not a JSON string array: {e}", self.id))
        })?;
        Ok(StoredProfile {
            rev: from_sql_rev(self.rev)?,
            id: self.id,
            name: self.name,
            client_id: self.client_id,
            secret_sha256: self.secret_sha256,
            kid: self.kid,
            sealed_signing_key: self.sealed_signing_key,
            allowed_prefixes,
            enabled: self.enabled,
            created_at: self.created_at,
            rotated_at: self.rotated_at,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn open_at(path: impl AsRef<Path>) -> Result<Store> {
        Store::open(path.as_ref(), keyring::default_key_file(path.as_ref()))
    }

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_at(dir.path().join("sub/dir/t.db")).unwrap();
        (dir, store)
    }

    fn is_hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn open_creates_parent_dir_wal_and_schema() {
        let (dir, store) = open_temp();
        assert!(dir.path().join("sub/dir/t.db").exists());
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.revision().unwrap(), 0);
        let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let busy: i64 = store.conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0)).unwrap();
        assert_eq!(busy, 5000);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn reopen_is_idempotent_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let id = {
            let mut s = open_at(&path).unwrap();
            s.create("a", &p(&["/a/"])).unwrap().profile.id
        };
        for _ in 0..3 {
            let s = open_at(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(s.revision().unwrap(), 1);
            assert_eq!(s.get(&id).unwrap().name, "a");
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let s = open_at(&path).unwrap();
            s.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        match open_at(&path) {
            Err(StoreError::UnsupportedSchema { found, supported }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn create_generates_values_and_bumps_revision() {
        let (_d, mut s) = open_temp();
        let created = s.create("Sales reader", &p(&["/sales/", "/hr/", "/sales/"])).unwrap();
        let pr = &created.profile;
        assert!(is_hex(&pr.id, 64));
        assert!(is_hex(&pr.client_id, 32));
        assert!(is_hex(&pr.kid, 64));
        assert!(keyring::is_sealed(&pr.sealed_signing_key));
        let key = s.keyring().unseal(&pr.id, &pr.kid, &pr.sealed_signing_key).unwrap();
        assert_eq!(key.len(), 32);
        assert!(is_hex(created.client_secret.expose(), 64));
        assert_eq!(pr.secret_sha256, sha256_hex(created.client_secret.expose()));
        assert_eq!(pr.allowed_prefixes, p(&["/sales/", "/hr/"]));
        assert!(pr.enabled);
        assert!(pr.created_at > 1_600_000_000);
        assert_eq!(pr.rotated_at, None);
        assert_eq!(pr.rev, 1);
        assert_eq!(s.revision().unwrap(), 1);

        let second = s.create("other", &p(&["/"])).unwrap();
        assert_eq!(second.profile.rev, 2);
        assert_ne!(second.profile.id, pr.id);
        assert_ne!(second.profile.sealed_signing_key, pr.sealed_signing_key);
        assert_eq!(s.revision().unwrap(), 2);
    }

    #[test]
    fn secret_is_not_stored() {
        let (_d, mut s) = open_temp();
        let created = s.create("x", &p(&["/x/"])).unwrap();
        let secret = created.client_secret.expose().to_string();
        let hits: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM profiles WHERE name = ?1 OR client_id = ?1 \
                 OR secret_sha256 = ?1 OR kid = ?1 OR signing_key = ?1 \
                 OR allowed_prefixes LIKE '%' || ?1 || '%'",
                params![secret],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hits, 0);
        assert!(!format!("{created:?}").contains(&secret));
        assert!(!format!("{:?}", created.profile).contains(&created.profile.sealed_signing_key));
    }

    #[test]
    fn list_and_get_by_id_or_client_id() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        let b = s.create("b", &p(&["/b/"])).unwrap().profile;
        let snap = s.list().unwrap();
        assert_eq!(snap.revision, 2);
        assert_eq!(snap.profiles, vec![a.clone(), b.clone()]);
        assert_eq!(s.get(&a.id).unwrap(), a);
        assert_eq!(s.get(&b.client_id).unwrap(), b);
        assert!(s.get("nope").unwrap_err().is_not_found());
        assert!(s.get(&"0".repeat(64)).unwrap_err().is_not_found());
    }

    #[test]
    fn rotate_replaces_key_material() {
        let (_d, mut s) = open_temp();
        let c = s.create("a", &p(&["/a/"])).unwrap();
        let r = s.rotate(&c.profile.client_id).unwrap();
        assert_eq!(r.profile.id, c.profile.id);
        assert_eq!(r.profile.client_id, c.profile.client_id);
        assert_ne!(r.profile.kid, c.profile.kid);
        assert_ne!(r.profile.sealed_signing_key, c.profile.sealed_signing_key);
        let unseal = |p: &StoredProfile| s.keyring().unseal(&p.id, &p.kid, &p.sealed_signing_key).unwrap();
        assert_ne!(unseal(&r.profile), unseal(&c.profile));
        assert_ne!(r.profile.secret_sha256, c.profile.secret_sha256);
        assert_ne!(r.client_secret, c.client_secret);
        assert_eq!(r.profile.secret_sha256, sha256_hex(r.client_secret.expose()));
        assert!(r.profile.rotated_at.is_some());
        assert_eq!(r.profile.rev, 2);
        assert_eq!(s.revision().unwrap(), 2);
        assert_eq!(s.get(&c.profile.id).unwrap(), r.profile);
    }

    #[test]
    fn disable_enable_bump_only_on_change() {
        let (_d, mut s) = open_temp();
        let c = s.create("a", &p(&["/a/"])).unwrap().profile;
        let d = s.disable(&c.id).unwrap();
        assert!(!d.enabled);
        assert_eq!(d.rev, 2);
        let d2 = s.disable(&c.id).unwrap();
        assert_eq!(d2, d);
        assert_eq!(s.revision().unwrap(), 2);
        let e = s.enable(&c.client_id).unwrap();
        assert!(e.enabled);
        assert_eq!(e.rev, 3);
        assert_eq!(s.enable(&c.id).unwrap().rev, 3);
        assert_eq!(s.revision().unwrap(), 3);
    }

    #[test]
    fn set_prefixes_validates_and_bumps() {
        let (_d, mut s) = open_temp();
        let c = s.create("a", &p(&["/a/"])).unwrap().profile;
        let u = s.set_prefixes(&c.id, &p(&["/x/", "/y/z/", "/x/"])).unwrap();
        assert_eq!(u.allowed_prefixes, p(&["/x/", "/y/z/"]));
        assert_eq!(u.rev, 2);
        // Same list again: no change, no bump.
        let same = s.set_prefixes(&c.id, &p(&["/x/", "/y/z/"])).unwrap();
        assert_eq!(same.rev, 2);
        assert_eq!(s.revision().unwrap(), 2);
        assert!(s.set_prefixes(&c.id, &p(&["nope"])).unwrap_err().is_invalid_input());
        assert!(s.set_prefixes(&c.id, &[]).unwrap_err().is_invalid_input());
        assert!(s.set_prefixes("missing", &p(&["/a/"])).unwrap_err().is_not_found());
        assert_eq!(s.revision().unwrap(), 2);
        assert_eq!(s.get(&c.id).unwrap().allowed_prefixes, p(&["/x/", "/y/z/"]));
    }

    #[test]
    fn delete_writes_tombstone() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        let b = s.create("b", &p(&["/b/"])).unwrap().profile;
        assert_eq!(s.delete(&a.client_id).unwrap(), a.id);
        assert_eq!(s.revision().unwrap(), 3);
        assert!(s.get(&a.id).unwrap_err().is_not_found());
        assert!(s.delete(&a.id).unwrap_err().is_not_found());
        assert_eq!(s.revision().unwrap(), 3);
        let rev: i64 =
            s.conn.query_row("SELECT rev FROM tombstones WHERE id = ?1", params![a.id], |r| r.get(0)).unwrap();
        assert_eq!(rev, 3);
        assert_eq!(s.list().unwrap().profiles, vec![b]);
    }

    #[test]
    fn failed_operations_change_nothing() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        assert!(s.create("", &p(&["/a/"])).unwrap_err().is_invalid_input());
        assert!(s.create("ok", &p(&["/a"])).unwrap_err().is_invalid_input());
        assert!(s.rotate("missing").unwrap_err().is_not_found());
        assert!(s.disable("missing").unwrap_err().is_not_found());
        assert!(s.enable("missing").unwrap_err().is_not_found());
        assert!(s.delete("missing").unwrap_err().is_not_found());
        assert_eq!(s.revision().unwrap(), 1);
        assert_eq!(s.list().unwrap().profiles, vec![a]);
    }

    #[test]
    fn changes_since_covers_updates_and_deletes() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile; // rev 1
        let b = s.create("b", &p(&["/b/"])).unwrap().profile; // rev 2
        let c = s.create("c", &p(&["/c/"])).unwrap().profile; // rev 3
        s.disable(&a.id).unwrap(); // rev 4
        s.delete(&b.id).unwrap(); // rev 5

        let all = s.changes_since(0).unwrap();
        assert_eq!(all.revision, 5);
        assert!(!all.reset);
        let ids: Vec<(&str, bool)> = all.changes.iter().map(|ch| (ch.id.as_str(), ch.profile.is_some())).collect();
        assert_eq!(ids, vec![(c.id.as_str(), true), (a.id.as_str(), true), (b.id.as_str(), false)]);

        let since3 = s.changes_since(3).unwrap();
        assert_eq!(since3.changes.len(), 2);
        assert_eq!(since3.changes[0].id, a.id);
        assert!(!since3.changes[0].profile.as_ref().unwrap().enabled);
        assert_eq!(since3.changes[1].id, b.id);
        assert!(since3.changes[1].profile.is_none());

        let none = s.changes_since(5).unwrap();
        assert_eq!(none.revision, 5);
        assert!(!none.reset);
        assert!(none.changes.is_empty());

        let ahead = s.changes_since(99).unwrap();
        assert_eq!(ahead.revision, 5);
        assert!(ahead.reset);
        assert!(ahead.changes.is_empty());
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
    fn two_connections_see_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut one = open_at(&path).unwrap();
        let mut two = open_at(&path).unwrap();
        let a = one.create("a", &p(&["/a/"])).unwrap().profile;
        assert_eq!(two.revision().unwrap(), 1);
        two.disable(&a.id).unwrap();
        assert_eq!(one.revision().unwrap(), 2);
        assert!(!one.get(&a.id).unwrap().enabled);
        assert_eq!(one.changes_since(1).unwrap().changes.len(), 1);
    }

    #[test]
    fn revision_equals_max_row_rev() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        let b = s.create("b", &p(&["/b/"])).unwrap().profile;
        s.rotate(&a.id).unwrap();
        s.delete(&b.id).unwrap();
        let max: i64 = s
            .conn
            .query_row(
                "SELECT max(rev) FROM (SELECT rev FROM profiles UNION ALL SELECT rev FROM tombstones)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(u64::try_from(max).unwrap(), s.revision().unwrap());
    }

    fn mode(path: &Path) -> u32 {
        permissions::mode(path).unwrap()
    }

    #[test]
    fn store_files_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/t.db");
        let mut s = open_at(&path).unwrap();
        s.create("a", &p(&["/a/"])).unwrap();
        assert!(s.exposures().is_empty(), "{:?}", s.exposures());
        let wal = permissions::companion(&path, "-wal");
        let shm = permissions::companion(&path, "-shm");
        assert!(wal.exists() && shm.exists(), "WAL mode keeps both while open");
        for f in [&path, &wal, &shm, &keyring::default_key_file(&path)] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn exposed_files_are_tightened_and_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        open_at(&path).unwrap().create("a", &p(&["/a/"])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = open_at(&path).unwrap();
        assert_eq!(
            s.exposures(),
            &[
                Exposure::OpenDirectory { path: dir.path().to_path_buf(), mode: 0o755 },
                Exposure::FileTightened { path: path.clone(), was: 0o644 },
            ]
        );
        assert_eq!(mode(&path), 0o600);
        drop(s);
        // An exposed key file is refused, not silently used.
        let key = keyring::default_key_file(&path);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_at(&path).unwrap_err();
        assert!(matches!(e, StoreError::Keyring(KeyringError::Exposed { mode: 0o644, .. })), "{e}");
    }

    #[test]
    fn a_copied_database_without_its_key_file_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let created = {
            let mut s = open_at(&path).unwrap();
            let created = s.create("a", &p(&["/a/"])).unwrap().profile;
            s.close().unwrap();
            created
        };
        let key_text = std::fs::read_to_string(keyring::default_key_file(&path)).unwrap();
        let plain = {
            let s = open_at(&path).unwrap();
            hex::encode(s.keyring().unseal(&created.id, &created.kid, &created.sealed_signing_key).unwrap().as_slice())
        };
        // The file holds no plaintext key.
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "plaintext key in the db file");

        let copy = dir.path().join("elsewhere/copy.db");
        std::fs::create_dir(copy.parent().unwrap()).unwrap();
        std::fs::copy(&path, &copy).unwrap();
        let e = open_at(&copy).unwrap_err();
        assert!(matches!(e, StoreError::Keyring(KeyringError::Missing { .. })), "{e}");
        assert!(!keyring::default_key_file(&copy).exists(), "no key is invented for sealed data");
        // A key file of its own (another key) is named as the wrong one.
        Keyring::load_or_create(&keyring::default_key_file(&copy)).unwrap();
        let e = open_at(&copy).unwrap_err();
        assert!(matches!(e, StoreError::Keyring(KeyringError::Mismatch { .. })), "{e}");
        for message in [e.to_string(), format!("{e:?}")] {
            assert!(!message.contains(key_text.trim()) && !message.contains(&plain), "{message}");
        }
        // The right key file, named explicitly, opens it.
        let s = Store::open(&copy, keyring::default_key_file(&path)).unwrap();
        assert_eq!(s.get(&created.id).unwrap(), created);
    }

    #[test]
    fn a_plaintext_version_1_database_is_sealed_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let plain = "ab".repeat(32);
        let id = "11".repeat(32);
        let kid = "22".repeat(32);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO profiles VALUES (?1, 'old', 'c1', ?2, ?3, ?4, '[\"/a/\"]', 1, 1700000000, NULL, 1)",
                params![id, "33".repeat(32), kid, plain],
            )
            .unwrap();
            conn.execute("UPDATE meta SET value = 1 WHERE key = 'revision'", []).unwrap();
        }
        let key_file = keyring::default_key_file(&path);
        assert!(!key_file.exists());
        let s = open_at(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.revision().unwrap(), 1, "sealing is not a change the proxies see");
        assert_eq!(mode(&key_file), 0o600);
        let p1 = s.get(&id).unwrap();
        assert!(keyring::is_sealed(&p1.sealed_signing_key));
        assert_eq!(hex::encode(s.keyring().unseal(&id, &kid, &p1.sealed_signing_key).unwrap().as_slice()), plain);
        assert_eq!(read_key_id(&s.conn).unwrap().as_deref(), Some(s.keyring().id()));
        assert_eq!(s.integrity_check().unwrap(), "ok");
        drop(s);
        // Reopening neither re-seals nor needs a write lock.
        let again = open_at(&path).unwrap();
        assert_eq!(again.get(&id).unwrap(), p1);
    }

    #[test]
    fn a_tampered_row_does_not_unseal() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        let b = s.create("b", &p(&["/b/"])).unwrap().profile;
        // Someone with write access moves a's sealed key into b's row.
        s.conn
            .execute("UPDATE profiles SET signing_key = ?1 WHERE id = ?2", params![a.sealed_signing_key, b.id])
            .unwrap();
        let b = s.get(&b.id).unwrap();
        let e = s.keyring().unseal(&b.id, &b.kid, &b.sealed_signing_key).unwrap_err();
        assert!(matches!(e, KeyringError::Unseal { ref profile_id } if *profile_id == b.id), "{e}");
        let (snap, failed) = crate::views::data_snapshot(&s.snapshot().unwrap(), s.keyring());
        assert_eq!(snap.profiles.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec![a.id.as_str()]);
        assert_eq!(failed.len(), 1);
    }
}
