//! One store test suite, run against both engines: every case gets a fresh
//! empty store and can open more handles on the same data (other
//! connections, as other sidecars or the CLI would). SQLite runs each case
//! as its own test; PostgreSQL runs them all against one server started by
//! the test (a fresh database per case), so the suite pays `initdb` once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use tollgate_sidecar::store::{sha256_hex, PgStore, ProfileStore, SqliteStore, StoreSpec};

/// Opens handles on one store.
trait Fixture: Sync {
    fn open(&self) -> Box<dyn ProfileStore>;
}

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Fixture for SqliteFixture {
    fn open(&self) -> Box<dyn ProfileStore> {
        Box::new(SqliteStore::open(&self.path, self.path.with_extension("key")).unwrap())
    }
}

fn sqlite_fixture() -> SqliteFixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/t.db");
    SqliteFixture { _dir: dir, path }
}

/// Every handle shares one key file, as the sidecars of a fleet must.
struct PgFixture {
    url: String,
    key_file: std::path::PathBuf,
}

impl Fixture for PgFixture {
    fn open(&self) -> Box<dyn ProfileStore> {
        Box::new(PgStore::open(&self.url, &self.key_file).unwrap())
    }
}

fn unsealed(s: &dyn ProfileStore, p: &tollgate_sidecar::store::StoredProfile) -> Vec<u8> {
    s.keyring().unseal(&p.id, &p.kid, &p.sealed_signing_key).unwrap().to_vec()
}

fn p(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// The cases

fn fresh_store_is_empty_at_revision_zero(f: &dyn Fixture) {
    let mut s = f.open();
    assert_eq!(s.revision().unwrap(), 0);
    let snap = s.list().unwrap();
    assert_eq!(snap.revision, 0);
    assert!(snap.profiles.is_empty());
    // Opening again (migrations already applied) is harmless.
    let mut again = f.open();
    assert_eq!(again.revision().unwrap(), 0);
}

fn create_generates_values_and_bumps_revision(f: &dyn Fixture) {
    let mut s = f.open();
    let created = s.create("Sales reader", &p(&["/sales/", "/hr/", "/sales/"])).unwrap();
    let pr = &created.profile;
    assert!(is_hex(&pr.id, 64));
    assert!(is_hex(&pr.client_id, 32));
    assert!(is_hex(&pr.kid, 64));
    assert!(tollgate_sidecar::keyring::is_sealed(&pr.sealed_signing_key));
    assert_eq!(unsealed(s.as_ref(), pr).len(), 32);
    // 256 bits as base64url without padding: one SHA-256 block in the filter.
    let secret = created.client_secret.expose();
    assert!(secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(pr.secret_sha256, sha256_hex(created.client_secret.expose()));
    assert_eq!(pr.allowed_prefixes, p(&["/sales/", "/hr/"]));
    assert!(pr.enabled);
    assert!(pr.created_at > 1_600_000_000);
    assert_eq!(pr.rotated_at, None);
    assert_eq!(pr.rev, 1);
    assert_eq!(s.revision().unwrap(), 1);
    assert!(!format!("{created:?}").contains(created.client_secret.expose()));
    assert!(!format!("{:?}", created.profile).contains(&created.profile.sealed_signing_key));

    let second = s.create("other", &p(&["/"])).unwrap();
    assert_eq!(second.profile.rev, 2);
    assert_ne!(second.profile.id, pr.id);
    assert_ne!(unsealed(s.as_ref(), &second.profile), unsealed(s.as_ref(), pr));
    assert_eq!(s.revision().unwrap(), 2);
}

fn list_and_get_by_id_or_client_id(f: &dyn Fixture) {
    let mut s = f.open();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile;
    let b = s.create("b", &p(&["/b/"])).unwrap().profile;
    let snap = s.list().unwrap();
    assert_eq!(snap.revision, 2);
    assert_eq!(snap.profiles, vec![a.clone(), b.clone()]);
    assert_eq!(s.snapshot().unwrap().profiles, snap.profiles);
    assert_eq!(s.get(&a.id).unwrap(), a);
    assert_eq!(s.get(&b.client_id).unwrap(), b);
    assert!(s.get("nope").unwrap_err().is_not_found());
    assert!(s.get(&"0".repeat(64)).unwrap_err().is_not_found());
}

fn rotate_replaces_key_material(f: &dyn Fixture) {
    let mut s = f.open();
    let c = s.create("a", &p(&["/a/"])).unwrap();
    let r = s.rotate(&c.profile.client_id, None).unwrap();
    assert_eq!(r.profile.id, c.profile.id);
    assert_eq!(r.profile.client_id, c.profile.client_id);
    assert_ne!(r.profile.kid, c.profile.kid);
    assert_ne!(unsealed(s.as_ref(), &r.profile), unsealed(s.as_ref(), &c.profile));
    assert_ne!(r.profile.secret_sha256, c.profile.secret_sha256);
    assert_ne!(r.client_secret, c.client_secret);
    assert_eq!(r.profile.secret_sha256, sha256_hex(r.client_secret.expose()));
    assert!(r.profile.rotated_at.is_some());
    assert_eq!(r.profile.rev, 2);
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(s.get(&c.profile.id).unwrap(), r.profile);
}

fn disable_enable_bump_only_on_change(f: &dyn Fixture) {
    let mut s = f.open();
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

fn set_prefixes_validates_and_bumps(f: &dyn Fixture) {
    let mut s = f.open();
    let c = s.create("a", &p(&["/a/"])).unwrap().profile;
    let u = s.set_prefixes(&c.id, &p(&["/x/", "/y/z/", "/x/"]), None).unwrap();
    assert_eq!(u.allowed_prefixes, p(&["/x/", "/y/z/"]));
    assert_eq!(u.rev, 2);
    // Same list again: no change, no bump.
    let same = s.set_prefixes(&c.id, &p(&["/x/", "/y/z/"]), None).unwrap();
    assert_eq!(same.rev, 2);
    assert_eq!(s.revision().unwrap(), 2);
    assert!(s.set_prefixes(&c.id, &p(&["nope"]), None).unwrap_err().is_invalid_input());
    assert!(s.set_prefixes(&c.id, &[], None).unwrap_err().is_invalid_input());
    assert!(s.set_prefixes("missing", &p(&["/a/"]), None).unwrap_err().is_not_found());
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(s.get(&c.id).unwrap().allowed_prefixes, p(&["/x/", "/y/z/"]));
}

fn delete_leaves_a_tombstone_in_the_feed(f: &dyn Fixture) {
    let mut s = f.open();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile;
    let b = s.create("b", &p(&["/b/"])).unwrap().profile;
    assert_eq!(s.delete(&a.client_id, None).unwrap(), a.id);
    assert_eq!(s.revision().unwrap(), 3);
    assert!(s.get(&a.id).unwrap_err().is_not_found());
    assert!(s.delete(&a.id, None).unwrap_err().is_not_found());
    assert_eq!(s.revision().unwrap(), 3);
    assert_eq!(s.list().unwrap().profiles, vec![b]);
    let feed = s.changes_since(2).unwrap();
    assert_eq!(feed.changes.len(), 1);
    assert_eq!(feed.changes[0].id, a.id);
    assert!(feed.changes[0].profile.is_none());
}

fn failed_operations_change_nothing(f: &dyn Fixture) {
    let mut s = f.open();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile;
    assert!(s.create("", &p(&["/a/"])).unwrap_err().is_invalid_input());
    assert!(s.create("ok", &p(&["/a"])).unwrap_err().is_invalid_input());
    assert!(s.rotate("missing", None).unwrap_err().is_not_found());
    assert!(s.disable("missing").unwrap_err().is_not_found());
    assert!(s.enable("missing").unwrap_err().is_not_found());
    assert!(s.delete("missing", None).unwrap_err().is_not_found());
    assert_eq!(s.revision().unwrap(), 1);
    assert_eq!(s.list().unwrap().profiles, vec![a]);
}

fn changes_since_covers_updates_and_deletes(f: &dyn Fixture) {
    let mut s = f.open();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile; // rev 1
    let b = s.create("b", &p(&["/b/"])).unwrap().profile; // rev 2
    let c = s.create("c", &p(&["/c/"])).unwrap().profile; // rev 3
    s.disable(&a.id).unwrap(); // rev 4
    s.delete(&b.id, None).unwrap(); // rev 5

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

fn other_handles_see_each_others_writes(f: &dyn Fixture) {
    let mut one = f.open();
    let mut two = f.open();
    let a = one.create("a", &p(&["/a/"])).unwrap().profile;
    assert_eq!(two.revision().unwrap(), 1);
    two.disable(&a.id).unwrap();
    assert_eq!(one.revision().unwrap(), 2);
    assert!(!one.get(&a.id).unwrap().enabled);
    assert_eq!(one.changes_since(1).unwrap().changes.len(), 1);
}

fn if_revision_is_a_compare_and_set(f: &dyn Fixture) {
    let mut s = f.open();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile; // rev 1
    let r = s.rotate(&a.id, Some(1)).unwrap().profile; // rev 2
                                                       // Every mutation with a stale revision is refused and changes nothing.
    let stale = Some(1);
    assert!(s.rotate(&a.id, stale).unwrap_err().is_conflict());
    assert!(s.set_enabled(&a.id, false, stale).unwrap_err().is_conflict());
    // Even a no-op: the caller's view is outdated, it must learn so.
    assert!(s.set_enabled(&a.id, true, stale).unwrap_err().is_conflict());
    assert!(s.set_prefixes(&a.id, &p(&["/b/"]), stale).unwrap_err().is_conflict());
    assert!(s.delete(&a.id, stale).unwrap_err().is_conflict());
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(s.get(&a.id).unwrap(), r);
    // The current revision passes.
    let d = s.set_enabled(&a.id, false, Some(2)).unwrap();
    assert_eq!(d.rev, 3);
    let u = s.set_prefixes(&a.id, &p(&["/b/"]), Some(3)).unwrap();
    assert_eq!(u.rev, 4);
    assert_eq!(s.delete(&a.id, Some(4)).unwrap(), a.id);
    assert!(s.rotate(&a.id, Some(4)).unwrap_err().is_not_found());
}

const WRITERS: usize = 4;
const ROUNDS: usize = 15;

/// Read-modify-write by several writers on their own handles, each with
/// compare-and-set on the profile revision and a retry on conflict: no
/// increment may be lost.
fn concurrent_cas_writers_lose_no_update(f: &dyn Fixture) {
    let id = f.open().create("counter", &p(&["/n/0/"])).unwrap().profile.id;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let conflicts: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (id, barrier) = (id.clone(), Arc::clone(&barrier));
                scope.spawn(move || {
                    let mut s = f.open();
                    barrier.wait();
                    let mut conflicts = 0;
                    for _ in 0..ROUNDS {
                        loop {
                            let current = s.get(&id).unwrap();
                            let n: usize = current.allowed_prefixes[0].trim_matches('/')[2..].parse().unwrap();
                            match s.set_prefixes(&id, &[format!("/n/{}/", n + 1)], Some(current.rev)) {
                                Ok(_) => break,
                                Err(e) if e.is_conflict() => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let mut s = f.open();
    let last = s.get(&id).unwrap();
    assert_eq!(last.allowed_prefixes, vec![format!("/n/{}/", WRITERS * ROUNDS)], "{conflicts} conflicts");
    // One revision per successful write, nothing else.
    assert_eq!(s.revision().unwrap(), 1 + (WRITERS * ROUNDS) as u64);
    assert_eq!(last.rev, s.revision().unwrap());
}

/// Concurrent rotations of one profile: each is whole (the stored secret
/// hash, kid and key all come from one rotation, the last committed), every
/// revision is used once, and the feed replays them in order.
fn concurrent_rotations_never_mix_key_material(f: &dyn Fixture) {
    let created = f.open().create("rotated", &p(&["/r/"])).unwrap().profile;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (id, barrier) = (created.id.clone(), Arc::clone(&barrier));
                scope.spawn(move || {
                    let mut s = f.open();
                    barrier.wait();
                    let mut out = Vec::new();
                    for i in 0..ROUNDS {
                        // Mix in other writes to the same row.
                        if (w + i) % 3 == 0 {
                            s.set_prefixes(&id, &[format!("/r/{w}/{i}/")], None).unwrap();
                        } else {
                            out.push(s.rotate(&id, None).unwrap());
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut s = f.open();
    let now = s.get(&created.id).unwrap();
    let revs: HashSet<u64> = results.iter().map(|r| r.profile.rev).collect();
    assert_eq!(revs.len(), results.len(), "two rotations got the same revision");
    let last = results.iter().max_by_key(|r| r.profile.rev).unwrap();
    if last.profile.rev == now.rev {
        assert_eq!(now, last.profile);
    }
    assert_eq!(now.secret_sha256, sha256_hex(last.client_secret.expose()));
    assert_eq!(now.kid, last.profile.kid);
    assert_eq!(now.sealed_signing_key, last.profile.sealed_signing_key);
    assert_eq!(unsealed(s.as_ref(), &now), unsealed(s.as_ref(), &last.profile));
    assert_eq!(s.revision().unwrap(), 1 + (WRITERS * ROUNDS) as u64);
    // Each rotation's answer is self-consistent too.
    for r in &results {
        assert_eq!(r.profile.secret_sha256, sha256_hex(r.client_secret.expose()));
    }
}

/// Readers of the feed never skip a revision while writers race: applying
/// `changes_since` repeatedly from a handle of its own ends at the final
/// state.
fn feed_reader_racing_writers_sees_every_change(f: &dyn Fixture) {
    let ids: Vec<String> = {
        let mut s = f.open();
        (0..WRITERS).map(|w| s.create(&format!("w{w}"), &p(&["/x/0/"])).unwrap().profile.id).collect()
    };
    let start_rev = f.open().revision().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut view: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    std::thread::scope(|scope| {
        for (w, id) in ids.iter().enumerate() {
            scope.spawn(move || {
                let mut s = f.open();
                for i in 1..=ROUNDS {
                    s.set_prefixes(id, &[format!("/x/{w}-{i}/")], None).unwrap();
                }
            });
        }
        let done = &done;
        let view = &mut view;
        scope.spawn(move || {
            let mut s = f.open();
            let mut since = start_rev;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let feed = s.changes_since(since).unwrap();
                assert!(!feed.reset);
                for c in feed.changes {
                    view.insert(c.id.clone(), c.profile.unwrap().allowed_prefixes);
                }
                since = feed.revision;
                if finished && since == start_rev + (WRITERS * ROUNDS) as u64 {
                    break;
                }
            }
        });
        // Let the writers finish, then tell the reader.
        std::thread::sleep(std::time::Duration::from_millis(10));
        while f.open().revision().unwrap() < start_rev + (WRITERS * ROUNDS) as u64 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    for (w, id) in ids.iter().enumerate() {
        assert_eq!(view[id], vec![format!("/x/{w}-{ROUNDS}/")]);
    }
}

type Case = (&'static str, fn(&dyn Fixture));

const CASES: &[Case] = &[
    ("fresh_store_is_empty_at_revision_zero", fresh_store_is_empty_at_revision_zero),
    ("create_generates_values_and_bumps_revision", create_generates_values_and_bumps_revision),
    ("list_and_get_by_id_or_client_id", list_and_get_by_id_or_client_id),
    ("rotate_replaces_key_material", rotate_replaces_key_material),
    ("disable_enable_bump_only_on_change", disable_enable_bump_only_on_change),
    ("set_prefixes_validates_and_bumps", set_prefixes_validates_and_bumps),
    ("delete_leaves_a_tombstone_in_the_feed", delete_leaves_a_tombstone_in_the_feed),
    ("failed_operations_change_nothing", failed_operations_change_nothing),
    ("changes_since_covers_updates_and_deletes", changes_since_covers_updates_and_deletes),
    ("other_handles_see_each_others_writes", other_handles_see_each_others_writes),
    ("if_revision_is_a_compare_and_set", if_revision_is_a_compare_and_set),
    ("concurrent_cas_writers_lose_no_update", concurrent_cas_writers_lose_no_update),
    ("concurrent_rotations_never_mix_key_material", concurrent_rotations_never_mix_key_material),
    ("feed_reader_racing_writers_sees_every_change", feed_reader_racing_writers_sees_every_change),
];

// ---------------------------------------------------------------------------
// The engines

macro_rules! sqlite_cases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::sqlite_fixture());
                }
            )*
        }
    };
}

sqlite_cases!(
    fresh_store_is_empty_at_revision_zero,
    create_generates_values_and_bumps_revision,
    list_and_get_by_id_or_client_id,
    rotate_replaces_key_material,
    disable_enable_bump_only_on_change,
    set_prefixes_validates_and_bumps,
    delete_leaves_a_tombstone_in_the_feed,
    failed_operations_change_nothing,
    changes_since_covers_updates_and_deletes,
    other_handles_see_each_others_writes,
    if_revision_is_a_compare_and_set,
    concurrent_cas_writers_lose_no_update,
    concurrent_rotations_never_mix_key_material,
    feed_reader_racing_writers_sees_every_change,
);

#[test]
fn sqlite_runs_every_case() {
    // The macro list and CASES must not drift apart.
    assert_eq!(CASES.len(), 14);
}

#[test]
fn postgres_every_case() {
    let pg = common::pg::Postgres::start();
    let keys = tempfile::tempdir().unwrap();
    for (i, (name, case)) in CASES.iter().enumerate() {
        eprintln!("postgres: {name}");
        let url = pg.create_database(&format!("case_{i}"));
        case(&PgFixture { url, key_file: keys.path().join(format!("case_{i}.key")) });
    }
}

#[test]
fn postgres_migrations_are_idempotent_and_guarded() {
    let pg = common::pg::Postgres::start();
    let url = pg.create_database("migrations");
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("fleet.key");
    // Several sidecars starting at once: the advisory lock serializes them,
    // and one key is recorded, created by whichever came first.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| PgStore::open(&url, &key_file).unwrap());
        }
    });
    let mut store = PgStore::open(&url, &key_file).unwrap();
    let a = store.create("a", &p(&["/a/"])).unwrap().profile;
    // A sidecar given another key file is refused at open, not at unseal.
    let err = PgStore::open(&url, &keys.path().join("other.key")).unwrap_err();
    assert!(
        matches!(
            err,
            tollgate_sidecar::store::StoreError::Keyring(tollgate_sidecar::keyring::KeyringError::Missing { .. })
        ),
        "{err:?}"
    );
    tollgate_sidecar::keyring::Keyring::load_or_create(&keys.path().join("other.key")).unwrap();
    let err = PgStore::open(&url, &keys.path().join("other.key")).unwrap_err();
    assert!(
        matches!(
            err,
            tollgate_sidecar::store::StoreError::Keyring(tollgate_sidecar::keyring::KeyringError::Mismatch { .. })
        ),
        "{err:?}"
    );
    // The database alone holds no plaintext key.
    let plain = hex::encode(unsealed(&store, &a));
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let dump: String = admin.query_one("SELECT string_agg(signing_key, ',') FROM profiles", &[]).unwrap().get(0);
    assert!(!dump.contains(&plain));
    assert_eq!(store.revision().unwrap(), 1);
    assert_eq!(store.schema_version().unwrap(), tollgate_sidecar::store::postgres::SCHEMA_VERSION);
    admin.batch_execute("UPDATE tollgate_schema SET version = version + 1").unwrap();
    let err = PgStore::open(&url, &key_file).unwrap_err();
    assert!(matches!(err, tollgate_sidecar::store::StoreError::UnsupportedSchema { .. }), "{err:?}");
    // The spec parser routes URLs to this engine.
    assert!(matches!(StoreSpec::parse(&url), StoreSpec::Postgres(_)));
}

#[test]
fn postgres_stopped_is_unavailable_then_recovers_without_reopen() {
    let mut pg = common::pg::Postgres::start();
    let url = pg.create_database("faults");
    let keys = tempfile::tempdir().unwrap();
    let mut s = PgStore::open(&url, &keys.path().join("k")).unwrap();
    let a = s.create("a", &p(&["/a/"])).unwrap().profile;
    pg.stop();
    let err = s.rotate(&a.id, None).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(s.revision().unwrap_err().is_unavailable());
    pg.restart();
    // The same handle reconnects; the failed rotation left nothing behind.
    assert_eq!(s.revision().unwrap(), 1);
    assert_eq!(s.get(&a.id).unwrap(), a);
    assert_eq!(s.rotate(&a.id, Some(1)).unwrap().profile.rev, 2);
}
