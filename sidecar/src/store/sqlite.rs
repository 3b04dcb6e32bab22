//! The SQLite engine: one database file, the zero-set-up default.
//!
//! Every mutation is a single `BEGIN IMMEDIATE … COMMIT` transaction (SQLite
//! has one writer at a time, so writers are serialized and revisions commit
//! in order) that bumps `meta.revision` by exactly one and stamps the touched
//! row (`profiles.rev` or `tombstones.rev`) with the new revision. A process
//! killed mid-write therefore loses nothing that was committed and leaves
//! nothing half-written.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::{
    check_revision, decode_prefixes, encode_prefixes, from_sql_rev, into_changes, to_sql_rev, truncate_for_display,
    unix_now, validate_prefixes, Change, Changes, Credentials, NewProfile, Profile, ProfileStore, Result, Snapshot,
    StoreError, WithSecret,
};

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
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const PROFILE_COLUMNS: &str = "id, name, client_id, secret_sha256, kid, signing_key, \
     allowed_prefixes, enabled, created_at, rotated_at, rev";

/// A handle on the database file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, creating its parent
    /// directory, enabling WAL and applying pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| StoreError::CreateDir { path: parent.to_path_buf(), source })?;
            }
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!("could not enable WAL journal mode (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = SqliteStore { conn, path };
        store.migrate()?;
        Ok(store)
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

    fn migrate(&mut self) -> Result<()> {
        // Cheap check first, so an up-to-date database is never write-locked.
        if self.schema_version()? == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema { found, supported: SCHEMA_VERSION });
        }
        let start =
            usize::try_from(found).map_err(|_| StoreError::Corrupt(format!("negative schema version {found}")))?;
        for sql in MIGRATIONS.iter().skip(start) {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
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
        unchanged: impl FnOnce(&Profile) -> bool,
    ) -> Result<Profile> {
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

    fn revision(&mut self) -> Result<u64> {
        read_revision(&self.conn)
    }

    fn create(&mut self, name: &str, prefixes: &[String]) -> Result<WithSecret> {
        let new = NewProfile::new(name, prefixes)?;
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
                c.signing_key,
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

    fn get(&mut self, key: &str) -> Result<Profile> {
        find(&self.conn, key)
    }

    fn rotate(&mut self, key: &str, if_revision: Option<u64>) -> Result<WithSecret> {
        let credentials = Credentials::new()?;
        let now = unix_now();
        let tx = self.write_tx()?;
        let current = find(&tx, key)?;
        check_revision(&current, if_revision)?;
        let rev = bump_revision(&tx)?;
        let c = &credentials;
        tx.execute(
            "UPDATE profiles SET secret_sha256 = ?1, kid = ?2, signing_key = ?3, \
             rotated_at = ?4, rev = ?5 WHERE id = ?6",
            params![c.secret_sha256, c.kid, c.signing_key, now, to_sql_rev(rev)?, current.id],
        )?;
        let profile = load_by_id(&tx, &current.id)?;
        tx.commit()?;
        Ok(WithSecret { profile, client_secret: credentials.client_secret() })
    }

    fn set_enabled(&mut self, key: &str, enabled: bool, if_revision: Option<u64>) -> Result<Profile> {
        self.update_column(key, if_revision, "enabled", &enabled, |current| current.enabled == enabled)
    }

    fn set_prefixes(&mut self, key: &str, prefixes: &[String], if_revision: Option<u64>) -> Result<Profile> {
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
fn find(conn: &Connection, key: &str) -> Result<Profile> {
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

fn load_by_id(conn: &Connection, id: &str) -> Result<Profile> {
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
    signing_key: String,
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
            signing_key: r.get(5)?,
            allowed_prefixes: r.get(6)?,
            enabled: r.get(7)?,
            created_at: r.get(8)?,
            rotated_at: r.get(9)?,
            rev: r.get(10)?,
        })
    }

    fn into_profile(self) -> Result<Profile> {
        Ok(Profile {
            allowed_prefixes: decode_prefixes(&self.id, &self.allowed_prefixes)?,
            rev: from_sql_rev(self.rev)?,
            id: self.id,
            name: self.name,
            client_id: self.client_id,
            secret_sha256: self.secret_sha256,
            kid: self.kid,
            signing_key: self.signing_key,
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

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("sub/dir/t.db")).unwrap();
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
            let mut s = SqliteStore::open(&path).unwrap();
            s.create("a", &p(&["/a/"])).unwrap().profile.id
        };
        for _ in 0..3 {
            let mut s = SqliteStore::open(&path).unwrap();
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
            let s = SqliteStore::open(&path).unwrap();
            s.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        match SqliteStore::open(&path) {
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
        assert!(!format!("{:?}", created.profile).contains(&created.profile.signing_key));
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
        let mut one = SqliteStore::open(&path).unwrap();
        let mut two = SqliteStore::open(&path).unwrap();
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
}
