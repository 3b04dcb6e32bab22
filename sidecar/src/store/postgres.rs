//! The PostgreSQL engine: one database shared by a fleet of sidecars.
//!
//! Same model and semantics as the SQLite engine. Writers are serialized on
//! the revision row (`SELECT … FOR UPDATE` first in every write transaction),
//! so revisions commit in order, a reader that sees revision N sees every row
//! stamped ≤ N, and no check-then-write inside a mutation can act on a stale
//! read (READ COMMITTED re-reads after the lock). Each write bumps the
//! revision and `NOTIFY`s only that number on [`CHANNEL`] in the same
//! transaction, so the notification leaves exactly when the change is visible.
//! Notifications are capped and never replayed to a listener that was away:
//! [`listen`] LISTENs first on every (re)connect, then reads the current
//! revision, so nothing committed while it was away is missed.
//!
//! A lost connection is [`StoreError::Unavailable`] (HTTP 503): the write
//! did not happen, the next call reconnects.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Transaction};

use super::{
    check_revision, decode_prefixes, encode_prefixes, from_sql_rev, into_changes, to_sql_rev, truncate_for_display,
    unix_now, validate_prefixes, Change, Changes, Credentials, NewProfile, ProfileStore, Result, Snapshot, StoreError,
    StoredProfile, WithSecret,
};
use crate::keyring::Keyring;

/// The `NOTIFY` channel; the payload is the new store revision in decimal.
pub const CHANNEL: &str = "tollgate_revision";

/// How long connecting may take before the database counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Unacknowledged data older than this marks a connection dead even when the
/// peer vanished without a reset (a cut network), so no call hangs for the
/// kernel's default of many minutes.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory lock key that serializes migrations of concurrently starting
/// sidecars ("tollgate" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// Schema migrations; entry `i` upgrades schema version `i` to `i + 1`.
/// Signing keys are stored sealed ([`crate::keyring`]), an opaque string
/// here; `keyring` records the id of the key that seals them.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value BIGINT NOT NULL
     );
     INSERT INTO meta (key, value) VALUES ('revision', 0);
     CREATE TABLE profiles (
         id               TEXT PRIMARY KEY CHECK (length(id) = 64),
         name             TEXT NOT NULL,
         client_id        TEXT NOT NULL UNIQUE,
         secret_sha256    TEXT NOT NULL CHECK (length(secret_sha256) = 64),
         kid              TEXT NOT NULL CHECK (length(kid) = 64),
         signing_key      TEXT NOT NULL,
         allowed_prefixes TEXT NOT NULL,
         enabled          BOOLEAN NOT NULL,
         created_at       BIGINT NOT NULL,
         rotated_at       BIGINT,
         rev              BIGINT NOT NULL
     );
     CREATE INDEX profiles_rev ON profiles (rev);
     CREATE TABLE tombstones (
         id  TEXT PRIMARY KEY,
         rev BIGINT NOT NULL
     );
     CREATE INDEX tombstones_rev ON tombstones (rev);
     CREATE TABLE keyring (
         one    INTEGER PRIMARY KEY CHECK (one = 1),
         key_id TEXT NOT NULL
     );",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const PROFILE_COLUMNS: &str = "id, name, client_id, secret_sha256, kid, signing_key, \
     allowed_prefixes, enabled, created_at, rotated_at, rev";

/// A PostgreSQL-backed store: one connection, re-opened on demand after a
/// failure.
pub struct PgStore {
    conn: Conn,
    display: String,
    keyring: Keyring,
}

/// The connection, apart from the keyring so a transaction's closure can
/// seal with the keyring while the connection is borrowed.
struct Conn {
    config: Config,
    client: Option<Client>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.display).field("keyring", &self.keyring).finish()
    }
}

/// The URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    // scheme://[user[:password]@]host…: drop everything between ':' and '@'
    // in the authority.
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid postgres URL>".to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => {
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{authority}{tail}")
        }
    }
}

/// Parses a connection URL and sets our timeouts unless the URL set them.
pub fn parse_config(url: &str) -> Result<Config> {
    let mut config =
        Config::from_str(url).map_err(|e| StoreError::InvalidStore(format!("{}: {e}", redact_url(url))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("tollgate-sidecar");
    }
    Ok(config)
}

/// Classifies a driver error: a lost or refused connection, or a server
/// shutting down, is "unavailable" (503, retry later); anything else is an
/// operational error.
pub(crate) fn pg_error(e: postgres::Error) -> StoreError {
    let lost = e.is_closed()
        || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code.starts_with("57P") || *c == SqlState::TOO_MANY_CONNECTIONS
        });
    if lost {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Pg(e.to_string())
    }
}

fn connect(config: &Config) -> Result<Client> {
    config.connect(NoTls).map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl PgStore {
    /// Connects and applies pending migrations. `key_file` holds the key
    /// that seals the signing keys; it is created only while the database
    /// records no key (the first sidecar of a fleet), and every other
    /// sidecar must be given the same file.
    pub fn open(url: &str, key_file: &Path) -> Result<PgStore> {
        let config = parse_config(url)?;
        let mut client = connect(&config)?;
        let keyring = migrate(&mut client, key_file)?;
        Ok(PgStore { conn: Conn { config, client: Some(client) }, display: redact_url(url), keyring })
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&mut self) -> Result<i64> {
        self.conn.with_client(|c| Ok(c.query_one("SELECT version FROM tollgate_schema", &[]).map_err(pg_error)?.get(0)))
    }

    fn update_column<V: postgres::types::ToSql + Sync>(
        &mut self,
        key: &str,
        if_revision: Option<u64>,
        column: &'static str,
        value: V,
        unchanged: impl FnOnce(&StoredProfile) -> bool,
    ) -> Result<StoredProfile> {
        self.conn.write(|tx| {
            let current = find(tx, key)?;
            check_revision(&current, if_revision)?;
            if unchanged(&current) {
                return Ok(current);
            }
            let rev = bump_revision(tx)?;
            // `column` is one of our own constants, never input.
            tx.execute(
                &format!("UPDATE profiles SET {column} = $1, rev = $2 WHERE id = $3"),
                &[&value, &rev, &current.id],
            )
            .map_err(pg_error)?;
            load_by_id(tx, &current.id)
        })
    }
}

impl Conn {
    /// Runs `f` on a live connection, (re)connecting first if needed, and
    /// drops the connection when `f` found it lost.
    fn with_client<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        let client = match &mut self.client {
            Some(client) => client,
            slot => slot.insert(connect(&self.config)?),
        };
        let result = f(client);
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.client = None;
        }
        result
    }

    /// Like [`Conn::with_client`] for reads, which are safe to repeat: a
    /// connection that died while idle (a database restart) is only noticed
    /// by its next query, so one failure on a kept connection is retried on
    /// a fresh one rather than reported.
    fn read_with_client<T>(&mut self, f: impl Fn(&mut Client) -> Result<T>) -> Result<T> {
        let had_connection = self.client.as_ref().is_some_and(|c| !c.is_closed());
        match self.with_client(&f) {
            Err(StoreError::Unavailable(_)) if had_connection => self.with_client(f),
            other => other,
        }
    }

    /// One write transaction: the revision row locked first, `f`, commit.
    fn write<T>(&mut self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with_client(|client| {
            let mut tx = client.transaction().map_err(pg_error)?;
            tx.query_one("SELECT value FROM meta WHERE key = 'revision' FOR UPDATE", &[]).map_err(pg_error)?;
            let value = f(&mut tx)?;
            tx.commit().map_err(pg_error)?;
            Ok(value)
        })
    }

    /// One read-only transaction at one snapshot.
    fn read<T>(&mut self, f: impl Fn(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.read_with_client(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg_error)?;
            let value = f(&mut tx)?;
            tx.commit().map_err(pg_error)?;
            Ok(value)
        })
    }
}

/// Applies pending migrations and returns the keyring, all under an
/// advisory lock, so sidecars starting together neither race on the schema
/// nor record two keys.
fn migrate(client: &mut Client, key_file: &Path) -> Result<Keyring> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tollgate_schema (version BIGINT NOT NULL)").map_err(pg_error)?;
    let found: i64 = match tx.query_opt("SELECT version FROM tollgate_schema", &[]).map_err(pg_error)? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO tollgate_schema (version) VALUES (0)", &[]).map_err(pg_error)?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema { found, supported: SCHEMA_VERSION });
    }
    let start = usize::try_from(found).map_err(|_| StoreError::Corrupt(format!("negative schema version {found}")))?;
    for sql in MIGRATIONS.iter().skip(start) {
        tx.batch_execute(sql).map_err(pg_error)?;
    }
    tx.execute("UPDATE tollgate_schema SET version = $1", &[&SCHEMA_VERSION]).map_err(pg_error)?;
    let recorded: Option<String> =
        tx.query_opt("SELECT key_id FROM keyring WHERE one = 1", &[]).map_err(pg_error)?.map(|row| row.get(0));
    let keyring = match recorded {
        Some(key_id) => Keyring::load(key_file, &key_id)?,
        None => {
            let keyring = Keyring::load_or_create(key_file)?;
            tx.execute("INSERT INTO keyring (one, key_id) VALUES (1, $1)", &[&keyring.id()]).map_err(pg_error)?;
            keyring
        }
    };
    tx.commit().map_err(pg_error)?;
    Ok(keyring)
}

impl ProfileStore for PgStore {
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.display)
    }

    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn revision(&mut self) -> Result<u64> {
        self.conn.read_with_client(read_revision)
    }

    fn create(&mut self, name: &str, prefixes: &[String]) -> Result<WithSecret> {
        let new = NewProfile::new(&self.keyring, name, prefixes)?;
        let profile = self.conn.write(|tx| {
            let c = &new.credentials;
            let rev = bump_revision(tx)?;
            tx.execute("DELETE FROM tombstones WHERE id = $1", &[&new.id]).map_err(pg_error)?;
            tx.execute(
                "INSERT INTO profiles (id, name, client_id, secret_sha256, kid, signing_key, \
                 allowed_prefixes, enabled, created_at, rotated_at, rev) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, NULL, $9)",
                &[
                    &new.id,
                    &name,
                    &new.client_id,
                    &c.secret_sha256,
                    &c.kid,
                    &c.sealed_signing_key,
                    &new.prefixes_json,
                    &new.created_at,
                    &rev,
                ],
            )
            .map_err(pg_error)?;
            load_by_id(tx, &new.id)
        })?;
        Ok(WithSecret { profile, client_secret: new.credentials.client_secret() })
    }

    fn list(&mut self) -> Result<Snapshot> {
        self.conn.read(|tx| {
            let revision = read_revision(tx)?;
            let rows = tx
                .query(&format!("SELECT {PROFILE_COLUMNS} FROM profiles ORDER BY created_at, rev, id"), &[])
                .map_err(pg_error)?;
            let profiles = rows.iter().map(profile_from_row).collect::<Result<Vec<_>>>()?;
            Ok(Snapshot { revision, profiles })
        })
    }

    fn get(&mut self, key: &str) -> Result<StoredProfile> {
        self.conn.read_with_client(|c| find(c, key))
    }

    fn rotate(&mut self, key: &str, if_revision: Option<u64>) -> Result<WithSecret> {
        let now = unix_now();
        let keyring = &self.keyring;
        let mut secret = None;
        let profile = self.conn.write(|tx| {
            let current = find(tx, key)?;
            check_revision(&current, if_revision)?;
            // Sealed for this profile's id, so only known once it is found.
            let c = Credentials::new(keyring, &current.id)?;
            let rev = bump_revision(tx)?;
            tx.execute(
                "UPDATE profiles SET secret_sha256 = $1, kid = $2, signing_key = $3, \
                 rotated_at = $4, rev = $5 WHERE id = $6",
                &[&c.secret_sha256, &c.kid, &c.sealed_signing_key, &now, &rev, &current.id],
            )
            .map_err(pg_error)?;
            secret = Some(c.client_secret());
            load_by_id(tx, &current.id)
        })?;
        let client_secret = secret.ok_or_else(|| StoreError::Corrupt("rotation produced no secret".into()))?;
        Ok(WithSecret { profile, client_secret })
    }

    fn set_enabled(&mut self, key: &str, enabled: bool, if_revision: Option<u64>) -> Result<StoredProfile> {
        self.update_column(key, if_revision, "enabled", enabled, |current| current.enabled == enabled)
    }

    fn set_prefixes(&mut self, key: &str, prefixes: &[String], if_revision: Option<u64>) -> Result<StoredProfile> {
        let prefixes = validate_prefixes(prefixes)?;
        let prefixes_json = encode_prefixes(&prefixes)?;
        self.update_column(key, if_revision, "allowed_prefixes", prefixes_json, |current| {
            current.allowed_prefixes == prefixes
        })
    }

    fn delete(&mut self, key: &str, if_revision: Option<u64>) -> Result<String> {
        self.conn.write(|tx| {
            let current = find(tx, key)?;
            check_revision(&current, if_revision)?;
            let rev = bump_revision(tx)?;
            tx.execute("DELETE FROM profiles WHERE id = $1", &[&current.id]).map_err(pg_error)?;
            tx.execute(
                "INSERT INTO tombstones (id, rev) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET rev = excluded.rev",
                &[&current.id, &rev],
            )
            .map_err(pg_error)?;
            Ok(current.id)
        })
    }

    fn changes_since(&mut self, since: u64) -> Result<Changes> {
        let since_sql = to_sql_rev(since)?;
        self.conn.read(|tx| {
            let revision = read_revision(tx)?;
            if since > revision {
                return Ok(Changes { revision, reset: true, changes: Vec::new() });
            }
            let mut entries: Vec<(u64, Change)> = Vec::new();
            let rows = tx
                .query(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE rev > $1 ORDER BY rev"), &[&since_sql])
                .map_err(pg_error)?;
            for row in &rows {
                let profile = profile_from_row(row)?;
                entries.push((profile.rev, Change { id: profile.id.clone(), profile: Some(profile) }));
            }
            let rows = tx
                .query("SELECT id, rev FROM tombstones WHERE rev > $1 ORDER BY rev", &[&since_sql])
                .map_err(pg_error)?;
            for row in &rows {
                let id: String = row.try_get(0).map_err(pg_error)?;
                let rev: i64 = row.try_get(1).map_err(pg_error)?;
                entries.push((from_sql_rev(rev)?, Change { id, profile: None }));
            }
            Ok(into_changes(revision, entries))
        })
    }

    fn close(self: Box<Self>) -> Result<()> {
        match self.conn.client {
            Some(client) => client.close().map_err(pg_error),
            None => Ok(()),
        }
    }
}

fn read_revision(c: &mut impl GenericClient) -> Result<u64> {
    let rev: i64 = c.query_one("SELECT value FROM meta WHERE key = 'revision'", &[]).map_err(pg_error)?.get(0);
    from_sql_rev(rev)
}

/// Increments the revision inside `tx`, queues its `NOTIFY` (sent at
/// commit), and returns the new value for stamping rows.
fn bump_revision(tx: &mut Transaction<'_>) -> Result<i64> {
    let rev: i64 = tx
        .query_one("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value", &[])
        .map_err(pg_error)?
        .get(0);
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &rev.to_string()]).map_err(pg_error)?;
    Ok(rev)
}

fn find(c: &mut impl GenericClient, key: &str) -> Result<StoredProfile> {
    let row = c
        .query_opt(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = $1 OR client_id = $1"), &[&key])
        .map_err(pg_error)?;
    match row {
        Some(row) => profile_from_row(&row),
        None => Err(StoreError::NotFound(truncate_for_display(key))),
    }
}

fn load_by_id(c: &mut impl GenericClient, id: &str) -> Result<StoredProfile> {
    let row =
        c.query_one(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = $1"), &[&id]).map_err(pg_error)?;
    profile_from_row(&row)
}

fn profile_from_row(r: &Row) -> Result<StoredProfile> {
    let id: String = r.try_get(0).map_err(pg_error)?;
    let prefixes: String = r.try_get(6).map_err(pg_error)?;
    Ok(StoredProfile {
        allowed_prefixes: decode_prefixes(&id, &prefixes)?,
        name: r.try_get(1).map_err(pg_error)?,
        client_id: r.try_get(2).map_err(pg_error)?,
        secret_sha256: r.try_get(3).map_err(pg_error)?,
        kid: r.try_get(4).map_err(pg_error)?,
        sealed_signing_key: r.try_get(5).map_err(pg_error)?,
        enabled: r.try_get(7).map_err(pg_error)?,
        created_at: r.try_get(8).map_err(pg_error)?,
        rotated_at: r.try_get(9).map_err(pg_error)?,
        rev: from_sql_rev(r.try_get(10).map_err(pg_error)?)?,
        id,
    })
}

/// What the change listener reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenEvent {
    /// The store is at this revision (a notification, or the catch-up read
    /// after a (re)connect).
    Revision(u64),
    /// The listening connection was (re)established; the `Revision` that
    /// follows is the catch-up.
    Connected,
    /// The listening connection failed or was lost; it is retried with
    /// backoff.
    Lost(String),
}

/// How often the listener looks at `stopping` while no notification comes.
const LISTEN_TICK: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Follows the store's revision over `LISTEN` until `stopping()` says so,
/// reconnecting with backoff. Blocking: run it on its own thread.
///
/// On every (re)connect it LISTENs first and only then reads the current
/// revision, so a change committed while it was away, or between connect
/// and LISTEN, is reported by the catch-up read.
pub fn listen(config: &Config, mut on_event: impl FnMut(ListenEvent), stopping: impl Fn() -> bool) {
    let mut backoff = RECONNECT_MIN;
    while !stopping() {
        match listen_once(config, &mut on_event, &stopping, &mut backoff) {
            Ok(()) => return,
            Err(e) => on_event(ListenEvent::Lost(e.to_string())),
        }
        let deadline = std::time::Instant::now() + backoff;
        while !stopping() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

fn listen_once(
    config: &Config,
    on_event: &mut impl FnMut(ListenEvent),
    stopping: &impl Fn() -> bool,
    backoff: &mut Duration,
) -> Result<()> {
    let mut client = connect(config)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(pg_error)?;
    let caught_up = read_revision(&mut client)?;
    *backoff = RECONNECT_MIN;
    on_event(ListenEvent::Connected);
    on_event(ListenEvent::Revision(caught_up));
    loop {
        if stopping() {
            return Ok(());
        }
        let mut latest = None;
        {
            let mut notifications = client.notifications();
            let mut it = notifications.timeout_iter(LISTEN_TICK);
            while let Some(note) = it.next().map_err(pg_error)? {
                // A payload we cannot read still says "something changed":
                // fall back to reading the revision.
                latest = Some(note.payload().parse::<u64>().ok());
                if it.size_hint().0 == 0 {
                    break;
                }
            }
        }
        if client.is_closed() {
            return Err(StoreError::Unavailable("the listening connection was closed".into()));
        }
        match latest {
            Some(Some(rev)) => on_event(ListenEvent::Revision(rev)),
            Some(None) => on_event(ListenEvent::Revision(read_revision(&mut client)?)),
            None => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact_url("postgres://u:secret@h/db?password=x"), "postgres://u@h/db");
        assert_eq!(redact_url("postgresql://h:1/d"), "postgresql://h:1/d");
        assert_eq!(redact_url("postgres://h/d?sslmode=disable&password=x"), "postgres://h/d");
        assert_eq!(redact_url("nonsense"), "<invalid postgres URL>");
    }

    #[test]
    fn bad_urls_are_invalid_store() {
        let err = PgStore::open("postgres://h:notaport/d", Path::new("/nonexistent/k")).unwrap_err();
        assert!(matches!(err, StoreError::InvalidStore(_)), "{err:?}");
    }

    #[test]
    fn unreachable_server_is_unavailable() {
        // Port 1 on loopback: nothing listens there, the connect is refused.
        let err = PgStore::open("postgres://u@127.0.0.1:1/d", Path::new("/nonexistent/k")).unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
}
