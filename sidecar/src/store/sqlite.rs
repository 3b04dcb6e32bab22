//! The SQLite engine: one database file, the zero-set-up default.
//!
//! Every mutation is a single `BEGIN IMMEDIATE … COMMIT` transaction (SQLite
//! has one writer at a time, so writers are serialized and revisions commit
//! in order) that bumps `meta.revision` by exactly one and stamps the touched
//! row (`profiles.rev` or `tombstones.rev`) with the new revision. A process
//! killed mid-write therefore loses nothing that was committed and leaves
//! nothing half-written.
//!
//! The database file and its `-wal`/`-shm` companions are private to the
//! sidecar's user ([`crate::permissions`]); the signing keys it holds are
//! sealed ([`crate::keyring`]), and the id of the key that seals them is
//! recorded in the `keyring` table.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::{
    check_revision, decode_prefixes, encode_prefixes, from_sql_rev, into_changes, to_sql_rev, truncate_for_display,
    unix_now, validate_prefixes, Change, Changes, Credentials, NewProfile, ProfileStore, Result, Snapshot, StoreError,
    StoredProfile, WithSecret,
};
use crate::keyring::{self, Keyring};
use crate::permissions::{self, Exposure};

/// How long a connection waits for another writer (the CLI or the server)
/// before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A handle on the database file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    keyring: Keyring,
    exposures: Vec<Exposure>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).field("keyring", &self.keyring).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, creating its parent
    /// directory (0700), the file (0600), enabling WAL and applying pending
    /// migrations. `key_file` holds the key that seals the signing keys
    /// ([`keyring::default_key_file`] when the operator names none); it is
    /// created only while the database holds no sealed key.
    pub fn open(path: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Result<SqliteStore> {
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
        Ok(SqliteStore { conn, path, keyring, exposures })
    }

    /// Path this store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current `PRAGMA user_version`.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs `PRAGMA integrity_check` and returns its first line (`"ok"` when
    /// healthy).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    fn write_tx(&mut self) -> Result<Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Sets one column of a profile in one transaction, bumping the revision,
    /// unless `unchanged` says the value is already there (then nothing is
    /// written and long-polls are not woken). `column` is one of our own
    /// constants, never input.
    fn update_column(
        &mut self,
        key: &str,
        if_revision: Option<u64>,
        column: &'static str,
        value: &dyn rusqlite::ToSql,
        unchanged: impl FnOnce(&StoredProfile) -> bool,
    ) -> Result<StoredProfile> {
        let tx = self.write_tx()?;
        let current = find(&tx, key)?;
        check_revision(&current, if_revision)?;
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
}

impl ProfileStore for SqliteStore {
    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn exposures(&self) -> &[Exposure] {
        &self.exposures
    }

    fn revision(&mut self) -> Result<u64> {
        read_revision(&self.conn)
    }

    fn create(&mut self, name: &str, prefixes: &[String]) -> Result<WithSecret> {
        let new = NewProfile::new(&self.keyring, name, prefixes)?;
        let c = &new.credentials;
        let tx = self.write_tx()?;
        let rev = bump_revision(&tx)?;
        tx.execute("DELETE FROM tombstones WHERE id = ?1", params![new.id])?;
        tx.execute(
            "INSERT INTO profiles (id, name, client_id, secret_sha256, kid, signing_key, \
             allowed_prefixes, enabled, created_at, rotated_at, rev) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, NULL, ?9)",
            params![
                new.id,
                name,
                new.client_id,
                c.secret_sha256,
                c.kid,
                c.sealed_signing_key,
                new.prefixes_json,
                new.created_at,
                to_sql_rev(rev)?
            ],
        )?;
        let profile = load_by_id(&tx, &new.id)?;
        tx.commit()?;
        Ok(WithSecret { profile, client_secret: new.credentials.client_secret() })
    }

    fn list(&mut self) -> Result<Snapshot> {
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

    fn get(&mut self, key: &str) -> Result<StoredProfile> {
        find(&self.conn, key)
    }

    fn rotate(&mut self, key: &str, if_revision: Option<u64>) -> Result<WithSecret> {
        let now = unix_now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = find(&tx, key)?;
        check_revision(&current, if_revision)?;
        // Sealed for this profile's id, so only known once it is found.
        let credentials = Credentials::new(&self.keyring, &current.id)?;
        let rev = bump_revision(&tx)?;
        let c = &credentials;
        tx.execute(
            "UPDATE profiles SET secret_sha256 = ?1, kid = ?2, signing_key = ?3, \
             rotated_at = ?4, rev = ?5 WHERE id = ?6",
            params![c.secret_sha256, c.kid, c.sealed_signing_key, now, to_sql_rev(rev)?, current.id],
        )?;
        let profile = load_by_id(&tx, &current.id)?;
        tx.commit()?;
        Ok(WithSecret { profile, client_secret: credentials.client_secret() })
    }

    fn set_enabled(&mut self, key: &str, enabled: bool, if_revision: Option<u64>) -> Result<StoredProfile> {
        self.update_column(key, if_revision, "enabled", &enabled, |current| current.enabled == enabled)
    }

    fn set_prefixes(&mut self, key: &str, prefixes: &[String], if_revision: Option<u64>) -> Result<StoredProfile> {
        let prefixes = validate_prefixes(prefixes)?;
        let prefixes_json = encode_prefixes(&prefixes)?;
        self.update_column(key, if_revision, "allowed_prefixes", &prefixes_json, |current| {
            current.allowed_prefixes == prefixes
        })
    }

    fn delete(&mut self, key: &str, if_revision: Option<u64>) -> Result<String> {
        let tx = self.write_tx()?;
        let current = find(&tx, key)?;
        check_revision(&current, if_revision)?;
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

    fn changes_since(&mut self, since: u64) -> Result<Changes> {
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
        Ok(into_changes(revision, entries))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.conn.close().map_err(|(_, e)| StoreError::Db(e))
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
        Ok(StoredProfile {
            allowed_prefixes: decode_prefixes(&self.id, &self.allowed_prefixes)?,
            rev: from_sql_rev(self.rev)?,
            id: self.id,
            name: self.name,
            client_id: self.client_id,
            secret_sha256: self.secret_sha256,
            kid: self.kid,
            sealed_signing_key: self.sealed_signing_key,
            enabled: self.enabled,
            created_at: self.created_at,
            rotated_at: self.rotated_at,
        })
    }
}

/// SQLite-specific checks; the engine-independent semantics are proved by
/// `tests/store_suite.rs` against both engines.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::keyring::KeyringError;

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn open_at(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open(path.as_ref(), keyring::default_key_file(path.as_ref()))
    }

    fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_at(dir.path().join("sub/dir/t.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn open_creates_parent_dir_wal_and_schema() {
        let (dir, mut store) = open_temp();
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
            let mut s = open_at(&path).unwrap();
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
        assert!(keyring::is_sealed(&created.profile.sealed_signing_key));
        let key = s.keyring().unseal(&created.profile.id, &created.profile.kid, &created.profile.sealed_signing_key);
        assert_eq!(key.unwrap().len(), 32);
    }

    #[test]
    fn delete_writes_tombstone() {
        let (_d, mut s) = open_temp();
        let a = s.create("a", &p(&["/a/"])).unwrap().profile;
        s.create("b", &p(&["/b/"])).unwrap();
        s.delete(&a.client_id, None).unwrap();
        let rev: i64 =
            s.conn.query_row("SELECT rev FROM tombstones WHERE id = ?1", params![a.id], |r| r.get(0)).unwrap();
        assert_eq!(rev, 3);
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
        s.rotate(&a.id, None).unwrap();
        s.delete(&b.id, None).unwrap();
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
            Box::new(s).close().unwrap();
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
        let mut s = SqliteStore::open(&copy, keyring::default_key_file(&path)).unwrap();
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
        let mut s = open_at(&path).unwrap();
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
        let mut again = open_at(&path).unwrap();
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
