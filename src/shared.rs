//! The profile cache in proxy-wasm shared data: its key layout, the worker
//! side that reads it lazily, and the publishing side that the elected poller
//! writes with. Pure: the store is a trait the host implements with
//! `get_shared_data`/`set_shared_data`, and tests with a map.
//!
//! Layout, under the plugin's key namespace `<ns>` (`shared_data_namespace`,
//! default `tollgate`; see [`Namespaced`]):
//! * `<ns>.stamp` = `generation revision synced_at`: written last, with
//!   CAS; `generation` moves on every content change, so a worker compares one
//!   small value per request and re-reads profiles only when it moved.
//! * `<ns>.kid.<kid>` = the profile record (JSON), `<ns>.cid.<client id>` =
//!   its kid. An empty value means absent (shared data cannot delete).
//! * `<ns>.id.<id>` = `kid client_id`: what a profile id owns, so a
//!   deletion (which names only the id) can blank its keys whoever wrote them.
//! * `<ns>.index` = the profile ids, one a line: rewritten only when the
//!   set of ids changes, read when a poller takes over.
//! * `<ns>.lease` = the poller lease.
//!
//! Per-profile keys keep a change cheap for 10,000 profiles: a rotation
//! rewrites a few small keys and the stamp, whatever the number of profiles,
//! and each worker re-reads only the profiles its requests touch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::contract::{Changes, ProfileRecord, Snapshot};
use crate::profile::{Profile, ProfileLookup};

// Keys relative to the namespace; [`Namespaced`] adds `<ns>.` in front.
pub const STAMP_KEY: &str = "stamp";
pub const INDEX_KEY: &str = "index";
pub const LEASE_KEY: &str = "lease";

pub fn kid_key(kid: &str) -> String {
    format!("kid.{kid}")
}

pub fn cid_key(client_id: &str) -> String {
    format!("cid.{client_id}")
}

pub fn id_key(id: &str) -> String {
    format!("id.{id}")
}

pub const DEFAULT_NAMESPACE: &str = "tollgate";

/// Whether `ns` may name a key namespace: 1 to 64 letters, digits, `-`, `_`.
/// No dot, so `<ns>.` can never be a prefix of another namespace's keys.
pub fn is_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len()) && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key since we read it.
    CasMismatch,
    Other,
}

/// The host's shared data. `get` returns `None` for absent and empty values.
pub trait SharedStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// One plugin's slice of the host's shared data: every key goes in as
/// `<namespace>.<key>`. Envoy keeps one shared-data space per `vm_id`, and
/// Istio never sets one, so two Tollgate plugins in one proxy (two gateways,
/// two profile sets) would otherwise read each other's profiles, stamp and
/// lease. Prefixing here, at the one door to the store, means no code path
/// can forget it.
pub struct Namespaced<S> {
    inner: S,
    prefix_len: usize,
    /// `<namespace>.` followed by the last key: reused so a lookup does not
    /// allocate.
    key: RefCell<String>,
}

impl<S: SharedStore> Namespaced<S> {
    pub fn new(inner: S, namespace: &str) -> Self {
        let prefix = format!("{namespace}.");
        Self { inner, prefix_len: prefix.len(), key: RefCell::new(prefix) }
    }

    fn with_key<T>(&self, key: &str, f: impl FnOnce(&str) -> T) -> T {
        let mut full = self.key.borrow_mut();
        full.truncate(self.prefix_len);
        full.push_str(key);
        f(&full)
    }
}

impl<S: SharedStore> SharedStore for Namespaced<S> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.with_key(key, |k| self.inner.get(k))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.with_key(key, |k| self.inner.set(k, value, cas))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub generation: u64,
    pub revision: u64,
    pub synced_at: u64,
}

impl Stamp {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.generation, self.revision, self.synced_at)
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split(' ').map(|n| n.parse::<u64>().ok());
        let stamp = Self { generation: it.next()??, revision: it.next()??, synced_at: it.next()?? };
        it.next().is_none().then_some(stamp)
    }
}

/// Why the shared cache cannot be used: the filter then answers 503.
pub const NOT_LOADED: &str = "no access profile snapshot has been loaded yet";
pub const STALE: &str = "the access profile snapshot is older than the configured limit";

/// What one worker may keep of the shared cache, in (estimated) heap bytes.
/// Only profiles that exist are remembered, never a miss: a lookup key is
/// attacker-chosen (a token's `kid`, a token request's client id), and a
/// miss costs one shared-data read, no more than its first sighting did.
pub const VIEW_BUDGET_BYTES: usize = 8 << 20;

#[derive(Default)]
struct View {
    generation: Option<u64>,
    by_kid: HashMap<String, Rc<Profile>>,
    by_client_id: HashMap<String, Rc<Profile>>,
    bytes: usize,
}

impl View {
    /// Remembers a hit; when the budget would overflow, starts over (the
    /// next lookups re-read shared data, as after a generation change).
    fn remember(&mut self, by_client_id: bool, key: &str, profile: &Rc<Profile>, budget: usize) {
        let cost = entry_bytes(key, profile);
        if self.bytes + cost > budget {
            self.by_kid.clear();
            self.by_client_id.clear();
            self.bytes = 0;
            if cost > budget {
                return;
            }
        }
        let map = if by_client_id { &mut self.by_client_id } else { &mut self.by_kid };
        if map.insert(key.to_owned(), Rc::clone(profile)).is_none() {
            self.bytes += cost;
        }
    }
}

/// A remembered entry's heap, over-estimated: the key, the map slot and the
/// whole profile (counted again for its second index; the estimate only has
/// to bound, not to measure).
fn entry_bytes(key: &str, p: &Profile) -> usize {
    use std::mem::size_of;
    let prefixes: usize = p.allowed_prefixes.iter().map(|x| x.len() + size_of::<String>()).sum();
    let strings = p.id.len() + p.client_id.len() + p.kid.len() + p.token_prefix().len() + p.claims_carry().len();
    key.len() + size_of::<(String, Rc<Profile>)>() + 16 + size_of::<Profile>() + strings + prefixes + 32
}

/// One worker's parsed view of the shared cache, refreshed only when the
/// stamp's generation moves.
pub struct SharedProfiles<S> {
    store: S,
    view: RefCell<View>,
    budget: usize,
    /// When the stamp was last read and found usable (ms), and its generation.
    checked: Cell<Option<(u64, u64)>>,
}

/// How long a usable stamp is trusted without reading it again. A stamp read
/// is a shared-data hostcall (a lock in Envoy, a copy into the VM); at
/// thousands of requests per second per worker, most requests then skip it,
/// and a published change (a rotation, a revocation) reaches this worker at
/// most this much later.
pub const STAMP_RECHECK_MS: u64 = 5;

impl<S: SharedStore> SharedProfiles<S> {
    pub fn new(store: S) -> Self {
        Self::with_budget(store, VIEW_BUDGET_BYTES)
    }

    pub fn with_budget(store: S, budget: usize) -> Self {
        Self { store, view: RefCell::new(View::default()), budget, checked: Cell::new(None) }
    }

    /// The estimated bytes this worker remembers (bounded by the budget).
    pub fn remembered_bytes(&self) -> usize {
        self.view.borrow().bytes
    }

    /// Reads the stamp (one small shared-data read per request) and returns
    /// the generation, or why the cache must not be used.
    pub fn refresh(&self, now: u64, max_staleness: Option<u64>) -> Result<u64, &'static str> {
        let stamp = self.store.get(STAMP_KEY).and_then(|(v, _)| Stamp::decode(&v)).ok_or(NOT_LOADED)?;
        if max_staleness.is_some_and(|max| now.saturating_sub(stamp.synced_at) > max) {
            return Err(STALE);
        }
        let mut view = self.view.borrow_mut();
        if view.generation != Some(stamp.generation) {
            *view = View { generation: Some(stamp.generation), ..View::default() };
        }
        Ok(stamp.generation)
    }

    /// [`Self::refresh`], at most once per [`STAMP_RECHECK_MS`]: in between,
    /// the generation last found usable. A stamp that was missing or stale is
    /// read again on the next call.
    pub fn refresh_recent(&self, now_ms: u64, max_staleness: Option<u64>) -> Result<u64, &'static str> {
        if let Some((at, generation)) = self.checked.get() {
            if now_ms.checked_sub(at).is_some_and(|age| age < STAMP_RECHECK_MS) {
                return Ok(generation);
            }
        }
        let result = self.refresh(now_ms / 1000, max_staleness);
        self.checked.set(result.ok().map(|generation| (now_ms, generation)));
        result
    }

    fn load_kid(&self, kid: &str) -> Option<Rc<Profile>> {
        let (bytes, _) = self.store.get(&kid_key(kid))?;
        let record: ProfileRecord = serde_json::from_slice(&bytes).ok()?;
        let profile = Profile::from_record(&record).ok()?;
        (profile.kid == kid).then(|| Rc::new(profile))
    }
}

impl<S: SharedStore> ProfileLookup for SharedProfiles<S> {
    fn by_kid(&self, kid: &str) -> Option<Rc<Profile>> {
        if let Some(hit) = self.view.borrow().by_kid.get(kid) {
            return Some(Rc::clone(hit));
        }
        let loaded = self.load_kid(kid)?;
        self.view.borrow_mut().remember(false, kid, &loaded, self.budget);
        Some(loaded)
    }

    fn by_client_id(&self, client_id: &str) -> Option<Rc<Profile>> {
        if let Some(hit) = self.view.borrow().by_client_id.get(client_id) {
            return Some(Rc::clone(hit));
        }
        let loaded = self
            .store
            .get(&cid_key(client_id))
            .and_then(|(kid, _)| String::from_utf8(kid).ok())
            .and_then(|kid| self.by_kid(&kid))
            .filter(|p| p.client_id == client_id)?;
        self.view.borrow_mut().remember(true, client_id, &loaded, self.budget);
        Some(loaded)
    }
}

// ---------------------------------------------------------------------------
// The publishing side, used by the one elected poller.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kid: String,
    client_id: String,
}

/// What a publish did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub written: usize,
    pub removed: usize,
    /// Records refused by validation (published as absent: fail closed).
    pub refused: Vec<String>,
}

/// The poller's memory of what it has written.
#[derive(Debug, Default)]
pub struct Publisher {
    index: HashMap<String, Entry>,
    /// Reverse maps, kept in step with `index`: who owns a kid / client id.
    kid_owner: HashMap<String, String>,
    cid_owner: HashMap<String, String>,
    stamp: Stamp,
    /// Whether this poller has a baseline (a snapshot, or a predecessor's
    /// stamp and index) to apply changes on.
    pub has_baseline: bool,
}

const MAX_CAS_RETRIES: usize = 5;

impl Publisher {
    /// Picks up where a previous poller (another worker) left off.
    pub fn resume(store: &impl SharedStore) -> Self {
        let Some(stamp) = store.get(STAMP_KEY).and_then(|(v, _)| Stamp::decode(&v)) else {
            return Self::default();
        };
        let mut p = Self { stamp, has_baseline: true, ..Self::default() };
        if let Some((bytes, _)) = store.get(INDEX_KEY) {
            for id in String::from_utf8_lossy(&bytes).lines() {
                let owned = store.get(&id_key(id)).and_then(|(v, _)| String::from_utf8(v).ok());
                if let Some((kid, cid)) = owned.as_deref().and_then(|o| o.split_once(' ')) {
                    p.own(id, Entry { kid: kid.to_owned(), client_id: cid.to_owned() });
                }
            }
        }
        p
    }

    /// The revision the next change-feed request starts from.
    pub fn revision(&self) -> u64 {
        self.stamp.revision
    }

    /// Profiles published (valid ones; disabled ones included).
    pub fn profile_count(&self) -> usize {
        self.index.len()
    }

    /// Replaces everything with a full snapshot.
    pub fn apply_snapshot(
        &mut self,
        store: &impl SharedStore,
        snap: &Snapshot,
        now: u64,
    ) -> Result<Published, StoreError> {
        let live: std::collections::HashSet<&str> = snap.profiles.iter().map(|r| r.id.as_str()).collect();
        let mut changes: Vec<(&str, Option<&ProfileRecord>)> =
            snap.profiles.iter().map(|r| (r.id.as_str(), Some(r))).collect();
        changes.extend(self.index.keys().filter(|id| !live.contains(id.as_str())).map(|id| (id.as_str(), None)));
        let changes: Vec<(String, Option<&ProfileRecord>)> =
            changes.into_iter().map(|(id, r)| (id.to_owned(), r)).collect();
        let out = self.apply(store, &changes, snap.revision, now)?;
        self.has_baseline = true;
        Ok(out)
    }

    /// Applies an incremental change batch.
    pub fn apply_changes(&mut self, store: &impl SharedStore, ch: &Changes, now: u64) -> Result<Published, StoreError> {
        let changes: Vec<(String, Option<&ProfileRecord>)> =
            ch.changes.iter().map(|c| (c.id.clone(), c.profile.as_ref())).collect();
        self.apply(store, &changes, ch.revision, now)
    }

    /// Records a successful contact with no change (for max staleness).
    pub fn touch(&mut self, store: &impl SharedStore, now: u64) -> Result<(), StoreError> {
        let next = Stamp { synced_at: now, ..self.stamp };
        self.write_stamp(store, next)
    }

    fn own(&mut self, id: &str, e: Entry) {
        self.kid_owner.insert(e.kid.clone(), id.to_owned());
        self.cid_owner.insert(e.client_id.clone(), id.to_owned());
        self.index.insert(id.to_owned(), e);
    }

    fn disown(&mut self, id: &str) -> Option<Entry> {
        let e = self.index.remove(id)?;
        if self.kid_owner.get(&e.kid).is_some_and(|o| o == id) {
            self.kid_owner.remove(&e.kid);
        }
        if self.cid_owner.get(&e.client_id).is_some_and(|o| o == id) {
            self.cid_owner.remove(&e.client_id);
        }
        Some(e)
    }

    /// Costs O(changes) shared-data writes, plus one index rewrite only when
    /// profiles were added or removed.
    fn apply(
        &mut self,
        store: &impl SharedStore,
        changes: &[(String, Option<&ProfileRecord>)],
        revision: u64,
        now: u64,
    ) -> Result<Published, StoreError> {
        let mut out = Published::default();
        let mut released: Vec<Entry> = Vec::new();
        let mut ids_changed = false;
        for (id, record) in changes {
            let valid = record.and_then(|r| match Profile::from_record(r) {
                Ok(p) if p.id == *id => Some((r, p)),
                _ => {
                    out.refused.push(id.clone());
                    None
                }
            });
            let old = self.disown(id);
            ids_changed |= old.is_some() != valid.is_some();
            if let Some((record, profile)) = valid {
                let body = serde_json::to_vec(record).map_err(|_| StoreError::Other)?;
                store.set(&kid_key(&profile.kid), &body, None)?;
                store.set(&cid_key(&profile.client_id), profile.kid.as_bytes(), None)?;
                store.set(&id_key(id), format!("{} {}", profile.kid, profile.client_id).as_bytes(), None)?;
                out.written += 1;
                self.own(id, Entry { kid: profile.kid, client_id: profile.client_id });
            } else if old.is_some() {
                store.set(&id_key(id), b"", None)?;
            }
            released.extend(old);
        }
        // Blank what no live profile owns any more (after the whole batch,
        // since a client id or kid may move between profiles in one batch).
        for e in &released {
            if !self.kid_owner.contains_key(&e.kid) {
                store.set(&kid_key(&e.kid), b"", None)?;
                out.removed += 1;
            }
            if !self.cid_owner.contains_key(&e.client_id) {
                store.set(&cid_key(&e.client_id), b"", None)?;
            }
        }
        if ids_changed {
            let mut index = String::with_capacity(self.index.len() * 65);
            for id in self.index.keys() {
                index.push_str(id);
                index.push('\n');
            }
            store.set(INDEX_KEY, index.as_bytes(), None)?;
        }
        // Wrapping, not `+ 1`: a stamp read back at u64::MAX (only a corrupt
        // or crafted one gets there) must not panic the poller. Wrap is safe:
        // workers compare generations for inequality only, and 0 != MAX.
        let next = Stamp { generation: self.stamp.generation.wrapping_add(1), revision, synced_at: now };
        self.write_stamp(store, next)?;
        Ok(out)
    }

    /// The stamp goes last and with CAS: if another poller wrote it since our
    /// last write, we have lost the lease and must not overwrite it.
    fn write_stamp(&mut self, store: &impl SharedStore, next: Stamp) -> Result<(), StoreError> {
        for _ in 0..MAX_CAS_RETRIES {
            let (current, cas) = match store.get(STAMP_KEY) {
                Some((v, cas)) => (Stamp::decode(&v), Some(cas)),
                None => (None, None),
            };
            if let Some(cur) = current {
                if cur.generation > self.stamp.generation {
                    return Err(StoreError::CasMismatch);
                }
            }
            match store.set(STAMP_KEY, next.encode().as_bytes(), cas) {
                Ok(()) => {
                    self.stamp = next;
                    return Ok(());
                }
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

// ---------------------------------------------------------------------------
// The poller lease: one worker per Envoy polls the sidecar.

/// Tries to take or renew the lease for `me`. Returns whether `me` holds it.
pub fn hold_lease(store: &impl SharedStore, me: u64, now_ms: u64, ttl_ms: u64) -> bool {
    for _ in 0..MAX_CAS_RETRIES {
        let (current, cas) = match store.get(LEASE_KEY) {
            Some((v, cas)) => (parse_lease(&v), Some(cas)),
            None => (None, None),
        };
        if let Some((owner, expires)) = current {
            if owner != me && expires > now_ms {
                return false;
            }
        }
        let value = format!("{me} {}", now_ms + ttl_ms);
        match store.set(LEASE_KEY, value.as_bytes(), cas) {
            Ok(()) => return true,
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return false,
        }
    }
    false
}

/// Whether `me` still holds an unexpired lease (checked before publishing).
pub fn holds_lease(store: &impl SharedStore, me: u64, now_ms: u64) -> bool {
    store.get(LEASE_KEY).and_then(|(v, _)| parse_lease(&v)).is_some_and(|(owner, exp)| owner == me && exp > now_ms)
}

fn parse_lease(v: &[u8]) -> Option<(u64, u64)> {
    let (owner, exp) = std::str::from_utf8(v).ok()?.split_once(' ')?;
    Some((owner.parse().ok()?, exp.parse().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::*;
    use crate::contract::Change;
    use crate::profile::tests::record;

    /// Envoy's shared data semantics: a CAS per key, bumped on every set.
    #[derive(Clone, Default)]
    pub struct MemStore(pub Rc<RefCell<Cells>>);

    /// Key → (value, CAS).
    type Cells = HashMap<String, (Vec<u8>, u32)>;

    impl SharedStore for MemStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.borrow().get(key).filter(|(v, _)| !v.is_empty()).cloned()
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut m = self.0.borrow_mut();
            let current = m.get(key).map_or(0, |(_, c)| *c);
            if let Some(cas) = cas {
                if m.contains_key(key) && cas != current {
                    return Err(StoreError::CasMismatch);
                }
            }
            m.insert(key.to_owned(), (value.to_vec(), current + 1));
            Ok(())
        }
    }

    fn snapshot(revision: u64, records: Vec<ProfileRecord>) -> Snapshot {
        Snapshot::new(revision, records)
    }

    #[test]
    fn stamp_round_trip() {
        let s = Stamp { generation: 3, revision: 9, synced_at: 1_700_000_000 };
        assert_eq!(Stamp::decode(s.encode().as_bytes()), Some(s));
        assert_eq!(Stamp::decode(b"1 2"), None);
        assert_eq!(Stamp::decode(b"1 2 3 4"), None);
        assert_eq!(Stamp::decode(b"a b c"), None);
    }

    /// Finding 3: a stamp at generation u64::MAX made the next publish
    /// overflow `generation + 1`; it wraps, and workers still see a change.
    #[test]
    fn publish_after_the_last_generation_wraps() {
        let store = MemStore::default();
        let mut p = Publisher::default();
        p.apply_snapshot(&store, &snapshot(1, vec![record(1)]), 0).unwrap();
        let max = Stamp { generation: u64::MAX, revision: 1, synced_at: 0 };
        store.set(STAMP_KEY, max.encode().as_bytes(), None).unwrap();
        let view = SharedProfiles::new(store.clone());
        assert_eq!(view.refresh(0, None), Ok(u64::MAX));
        let mut p = Publisher::resume(&store);
        p.apply_snapshot(&store, &snapshot(2, vec![record(1), record(2)]), 0).unwrap();
        assert_eq!(view.refresh(0, None), Ok(0));
        assert!(view.by_client_id("client-2").is_some(), "the new generation is read");
    }

    #[test]
    fn not_loaded_then_loaded_then_stale() {
        let store = MemStore::default();
        let view = SharedProfiles::new(store.clone());
        assert_eq!(view.refresh(100, None), Err(NOT_LOADED));
        let mut p = Publisher::default();
        p.apply_snapshot(&store, &snapshot(5, vec![record(1), record(2)]), 100).unwrap();
        let g = view.refresh(100, Some(30)).unwrap();
        assert_eq!(view.by_client_id("client-1").unwrap().id, record(1).id);
        assert_eq!(view.by_kid(&record(2).kid).unwrap().client_id, "client-2");
        assert!(view.by_kid(&record(3).kid).is_none());
        assert_eq!(view.refresh(131, Some(30)), Err(STALE));
        p.touch(&store, 131).unwrap();
        assert_eq!(view.refresh(131, Some(30)), Ok(g), "touch keeps the generation");
        assert_eq!(p.revision(), 5);
    }

    #[test]
    fn a_usable_stamp_is_trusted_for_a_few_milliseconds_only() {
        let store = MemStore::default();
        let view = SharedProfiles::new(store.clone());
        let t = 100_000; // ms
        assert_eq!(view.refresh_recent(t, None), Err(NOT_LOADED));
        let mut p = Publisher::default();
        p.apply_snapshot(&store, &snapshot(1, vec![record(1)]), 100).unwrap();
        // Not remembered while unusable: the snapshot is seen at once.
        let g1 = view.refresh_recent(t, None).unwrap();
        // Within the window the stamp is not read again...
        store.0.borrow_mut().remove(STAMP_KEY);
        assert_eq!(view.refresh_recent(t + STAMP_RECHECK_MS - 1, None), Ok(g1));
        // ...and after it, it is (here: gone, so unusable).
        assert_eq!(view.refresh_recent(t + STAMP_RECHECK_MS, None), Err(NOT_LOADED));
        p.apply_snapshot(&store, &snapshot(3, vec![record(3)]), 100).unwrap();
        let g3 = view.refresh_recent(t + STAMP_RECHECK_MS, None).unwrap();
        assert_ne!(g3, g1);
        // A clock that steps back does not extend the window.
        assert!(view.refresh_recent(t, None).is_ok());
        // Staleness is judged in seconds of the same clock.
        assert_eq!(view.refresh_recent(1_000_000, Some(30)), Err(STALE));
    }

    #[test]
    fn rotation_and_delete_are_seen_at_once() {
        let store = MemStore::default();
        let view = SharedProfiles::new(store.clone());
        let mut p = Publisher::default();
        p.apply_snapshot(&store, &snapshot(1, vec![record(1), record(2)]), 0).unwrap();
        view.refresh(0, None).unwrap();
        let old_kid = record(1).kid;
        assert!(view.by_kid(&old_kid).is_some());

        let mut rotated = record(1);
        rotated.kid = record(50).kid;
        rotated.signing_key = record(50).signing_key;
        let ch = Changes::new(
            2,
            false,
            vec![
                Change { id: record(1).id, profile: Some(rotated.clone()) },
                Change { id: record(2).id, profile: None },
            ],
        );
        let out = p.apply_changes(&store, &ch, 1).unwrap();
        assert_eq!((out.written, out.removed), (1, 2));
        view.refresh(1, None).unwrap();
        assert!(view.by_kid(&old_kid).is_none(), "old kid gone");
        assert_eq!(view.by_kid(&rotated.kid).unwrap().id, record(1).id);
        assert_eq!(view.by_client_id("client-1").unwrap().kid, rotated.kid);
        assert!(view.by_client_id("client-2").is_none());
        assert!(view.by_kid(&record(2).kid).is_none());
    }

    #[test]
    fn takeover_resumes_and_snapshot_cleans_up() {
        let store = MemStore::default();
        let mut first = Publisher::default();
        first.apply_snapshot(&store, &snapshot(7, vec![record(1), record(2)]), 0).unwrap();
        let mut second = Publisher::resume(&store);
        assert!(second.has_baseline);
        assert_eq!(second.revision(), 7);
        // A reset snapshot without profile 2: its keys are blanked.
        second.apply_snapshot(&store, &snapshot(1, vec![record(1)]), 0).unwrap();
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert!(view.by_client_id("client-2").is_none());
        assert!(view.by_kid(&record(2).kid).is_none());
        assert!(view.by_client_id("client-1").is_some());
        // The old poller may not overwrite the newer stamp.
        assert_eq!(first.touch(&store, 5), Err(StoreError::CasMismatch));
    }

    #[test]
    fn rotation_leaves_the_index_alone_and_takeover_still_revokes() {
        let store = MemStore::default();
        let mut first = Publisher::default();
        first.apply_snapshot(&store, &snapshot(1, vec![record(1), record(2)]), 0).unwrap();
        let index_cas = store.get(INDEX_KEY).unwrap().1;
        let mut rotated = record(1);
        rotated.kid = record(60).kid;
        let ch = Changes::new(2, false, vec![Change { id: record(1).id, profile: Some(rotated.clone()) }]);
        first.apply_changes(&store, &ch, 0).unwrap();
        assert_eq!(store.get(INDEX_KEY).unwrap().1, index_cas, "no index rewrite for a rotation");
        // A new poller learns the rotated kid from the id key, and a deletion
        // that names only the id blanks the right keys.
        let mut second = Publisher::resume(&store);
        let del = Changes::new(3, false, vec![Change { id: record(1).id, profile: None }]);
        second.apply_changes(&store, &del, 0).unwrap();
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert!(view.by_kid(&rotated.kid).is_none());
        assert!(view.by_client_id("client-1").is_none());
        assert!(view.by_client_id("client-2").is_some());
        assert_eq!(String::from_utf8(store.get(INDEX_KEY).unwrap().0).unwrap(), format!("{}\n", record(2).id));
    }

    #[test]
    fn client_id_moving_between_profiles_in_one_batch() {
        let store = MemStore::default();
        let mut p = Publisher::default();
        p.apply_snapshot(&store, &snapshot(1, vec![record(1)]), 0).unwrap();
        let mut successor = record(2);
        successor.client_id = "client-1".into();
        let ch = Changes::new(
            2,
            false,
            vec![Change { id: record(2).id, profile: Some(successor) }, Change { id: record(1).id, profile: None }],
        );
        p.apply_changes(&store, &ch, 0).unwrap();
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert_eq!(view.by_client_id("client-1").unwrap().id, record(2).id);
    }

    #[test]
    fn invalid_records_are_published_as_absent() {
        let store = MemStore::default();
        let mut p = Publisher::default();
        let mut bad = record(2);
        bad.allowed_prefixes = vec!["nope".into()];
        let out = p.apply_snapshot(&store, &snapshot(1, vec![record(1), bad]), 0).unwrap();
        assert_eq!(out.refused, vec![record(2).id]);
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert!(view.by_client_id("client-2").is_none());
    }

    #[test]
    fn default_namespace_keeps_the_tollgate_keys() {
        let mem = MemStore::default();
        let store = Namespaced::new(mem.clone(), DEFAULT_NAMESPACE);
        Publisher::default().apply_snapshot(&store, &snapshot(1, vec![record(1)]), 0).unwrap();
        assert!(hold_lease(&store, 1, 0, 3000));
        let mut keys: Vec<String> = mem.0.borrow().keys().cloned().collect();
        keys.sort();
        let r = record(1);
        let mut want = vec![
            "tollgate.cid.client-1".to_owned(),
            format!("tollgate.id.{}", r.id),
            "tollgate.index".to_owned(),
            format!("tollgate.kid.{}", r.kid),
            "tollgate.lease".to_owned(),
            "tollgate.stamp".to_owned(),
        ];
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn two_namespaces_in_one_store_do_not_collide() {
        // Two plugins in one proxy without a vm_id share one store.
        let mem = MemStore::default();
        let (a, b) = (Namespaced::new(mem.clone(), "gw-a"), Namespaced::new(mem.clone(), "gw-b"));
        let (mut pa, mut pb) = (Publisher::default(), Publisher::default());
        pa.apply_snapshot(&a, &snapshot(1, vec![record(1)]), 0).unwrap();
        pb.apply_snapshot(&b, &snapshot(1, vec![record(2)]), 0).unwrap();
        let (va, vb) = (SharedProfiles::new(a), SharedProfiles::new(b));
        let gen_b = vb.refresh(0, None).unwrap();
        va.refresh(0, None).unwrap();
        assert!(va.by_client_id("client-1").is_some());
        assert!(va.by_client_id("client-2").is_none(), "a does not know b's client");
        assert!(vb.by_client_id("client-2").is_some());
        assert!(vb.by_kid(&record(1).kid).is_none(), "b does not know a's kid");

        // A rotation in a neither moves b's generation nor blanks b's keys.
        let mut rotated = record(1);
        rotated.kid = record(70).kid;
        let ch = Changes::new(2, false, vec![Change { id: record(1).id, profile: Some(rotated) }]);
        pa.apply_changes(&Namespaced::new(mem.clone(), "gw-a"), &ch, 1).unwrap();
        assert_eq!(vb.refresh(1, None), Ok(gen_b));
        assert!(vb.by_client_id("client-2").is_some());
        va.refresh(1, None).unwrap();
        assert_eq!(va.by_client_id("client-1").unwrap().kid, record(70).kid);

        // Each namespace elects its own poller.
        let (la, lb) = (Namespaced::new(mem.clone(), "gw-a"), Namespaced::new(mem.clone(), "gw-b"));
        assert!(hold_lease(&la, 1, 0, 3000));
        assert!(hold_lease(&lb, 2, 0, 3000));
        assert!(!hold_lease(&la, 2, 1, 3000));
    }

    #[test]
    fn namespace_names() {
        for ok in ["tollgate", "gw-a", "GW_2", &"x".repeat(64)] {
            assert!(is_namespace(ok), "{ok}");
        }
        for bad in ["", "a.b", "tollgate.", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!is_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn lease() {
        let store = MemStore::default();
        assert!(hold_lease(&store, 1, 1000, 3000));
        assert!(!hold_lease(&store, 2, 2000, 3000), "held by 1 until 4000");
        assert!(hold_lease(&store, 1, 2000, 3000), "renewed");
        assert!(holds_lease(&store, 1, 4999));
        assert!(!holds_lease(&store, 2, 4999));
        assert!(hold_lease(&store, 2, 5001, 3000), "expired: 2 takes over");
        assert!(!holds_lease(&store, 1, 5001));
    }

    #[test]
    fn misses_are_not_remembered_and_hits_stay_within_the_byte_budget() {
        let store = MemStore::default();
        let records: Vec<ProfileRecord> = (1..=40).map(record).collect();
        Publisher::default().apply_snapshot(&store, &snapshot(1, records), 0).unwrap();
        // Issue 6 (5): 12 KB attacker-chosen client ids and kids leave nothing.
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        for i in 0..200 {
            let id = format!("{i:05}{}", "x".repeat(12_000));
            assert!(view.by_client_id(&id).is_none());
            assert!(view.by_kid(&id).is_none());
        }
        assert_eq!(view.remembered_bytes(), 0);
        // Hits are remembered, within a budget.
        let one = entry_bytes("client-1", &view.by_client_id("client-1").unwrap());
        assert!(view.remembered_bytes() >= one);
        let budget = 10 * one;
        let small = SharedProfiles::with_budget(store.clone(), budget);
        small.refresh(0, None).unwrap();
        for round in 0..3 {
            for n in 1..=40u8 {
                let p = small.by_client_id(&format!("client-{n}")).unwrap();
                assert_eq!(p.client_id, format!("client-{n}"), "round {round}");
                assert!(small.by_kid(&record(n).kid).is_some());
                assert!(small.remembered_bytes() <= budget);
            }
        }
    }
}
