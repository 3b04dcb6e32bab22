//! Brute-force lockout at the token endpoint: failed client authentications
//! are counted in proxy-wasm shared data, so every worker of one Envoy sees
//! them, and a client id (or, for unknown client ids, a source address) that
//! fails too often is refused with `429` for an escalating while.
//!
//! Shared data can never delete a key, so no key is ever made from an
//! attacker-chosen string: the state lives in a fixed table of `slots` keys
//! per kind (`<ns>.lock.c.<n>` for client ids, `<ns>.lock.s.<n>` for
//! sources, `<ns>` the `shared_data_namespace`), each value 32 bytes, whatever the traffic. A client id
//! picks its slot with SipHash keyed by a secret derived from the plugin
//! configuration (the same on every worker, unknown to clients), so nobody can
//! aim at a victim's slot offline.
//!
//! * Client slots hold one entry, tagged with a 64-bit fingerprint. A client
//!   id whose slot holds another client's live entry does not evict it (that
//!   would let two colliding ids reset each other forever): its failures and
//!   its lock check go to the source slot instead.
//! * Source slots count failures for unknown client ids (and the overflow
//!   above). Their entries are shared by whoever hashes there: a failure is
//!   never left uncounted, and the price of a collision is paid only by
//!   requests that would have failed anyway.
//! * Only known client ids get a client slot: an unknown id has no secret to
//!   guess, and letting a spray of random ids claim slots would evict the
//!   entries that protect real clients. (Client ids are not secrets, RFC 6749
//!   §2.2: the difference between a known and an unknown id is no oracle.)
//!
//! The check comes before the secret is looked at, so a locked client gets
//! the same 429 with the right secret and with a wrong one. A success does
//! not reset the count: an attacker interleaving guesses with a busy client's
//! successes would otherwise never be locked, and the success path stays a
//! single shared-data read.

use std::hash::Hasher;

use crate::shared::{SharedStore, StoreError};

/// The lockout policy, from the plugin configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Failures within `window_seconds` that lock a client id.
    pub max_failures: u32,
    pub window_seconds: u64,
    /// The first lock; each further lock doubles it, up to `max_seconds`.
    pub base_seconds: u64,
    /// The cap on one lock, and the quiet time that forgives one doubling.
    pub max_seconds: u64,
    /// Failures with unknown client ids within the window that lock a source
    /// address; 0 turns the per-source bucket off.
    pub per_source_max_failures: u32,
    /// Keys per table (client ids, sources).
    pub slots: u32,
    /// SipHash key, derived from the plugin configuration.
    pub hash_key: (u64, u64),
}

/// Refused without looking at the secret: answer 429 with `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locked {
    pub retry_after: u64,
}

/// Lost CAS races before a failure is given up uncounted; contention on one
/// slot is short-lived (two workers at once), so a few suffice.
const MAX_CAS_RETRIES: usize = 8;
/// Doublings beyond this change nothing (the cap is reached long before).
const MAX_STRIKES: u32 = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    fp: u64,
    window_start: u64,
    failures: u32,
    locked_until: u64,
    /// Recent locks; the next one lasts `base << strikes`.
    strikes: u32,
}

/// Encoded size: fixed, so shared data is exactly `2 * slots` values of this.
const ENTRY_BYTES: usize = 32;

impl Entry {
    /// Fixed-width little-endian fields: no formatting or parsing code in
    /// the .wasm, and a value's size never depends on its contents.
    fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[..8].copy_from_slice(&self.fp.to_le_bytes());
        out[8..16].copy_from_slice(&self.window_start.to_le_bytes());
        out[16..24].copy_from_slice(&self.locked_until.to_le_bytes());
        out[24..28].copy_from_slice(&self.failures.to_le_bytes());
        out[28..].copy_from_slice(&self.strikes.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; ENTRY_BYTES] = bytes.try_into().ok()?;
        let u64_at =
            |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            fp: u64_at(0),
            window_start: u64_at(8),
            locked_until: u64_at(16),
            failures: u32_at(24),
            strikes: u32_at(28).min(MAX_STRIKES),
        })
    }
}

/// The two tables: client ids (known ones only) and source addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Client,
    Source,
}

impl Table {
    fn key(self, slot: u32) -> String {
        let mut key = String::with_capacity(17);
        key.push_str(match self {
            Self::Client => "lock.c.",
            Self::Source => "lock.s.",
        });
        crate::profile::push_decimal(&mut key, u64::from(slot));
        key
    }
}

/// Where an attempt is counted: a table slot and the fingerprint it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    table: Table,
    slot: u32,
    fp: u64,
}

impl Lockout {
    fn locked_for(&self, e: &Entry, now: u64) -> Option<u64> {
        (now < e.locked_until).then(|| e.locked_until - now)
    }

    /// Strikes left after the quiet time since the last lock ended.
    fn strikes_now(&self, e: &Entry, now: u64) -> u32 {
        if now < e.locked_until {
            return e.strikes;
        }
        let forgiven = (now - e.locked_until) / self.max_seconds.max(1);
        e.strikes.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
    }

    fn in_window(&self, e: &Entry, now: u64) -> bool {
        now < e.window_start.saturating_add(self.window_seconds)
    }

    /// Nothing left to remember: a newcomer may take the slot.
    fn idle(&self, e: &Entry, now: u64) -> bool {
        self.locked_for(e, now).is_none()
            && (e.failures == 0 || !self.in_window(e, now))
            && self.strikes_now(e, now) == 0
    }

    fn hash(&self, domain: u8, bytes: &[u8]) -> u64 {
        // SipHash-2-4 with a key of our own: std's only keyed SipHash is the
        // deprecated `SipHasher`, which is exactly that and costs no crate.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.hash_key.0, self.hash_key.1);
        h.write_u8(domain);
        h.write(bytes);
        h.finish()
    }

    fn bucket(&self, table: Table, bytes: &[u8]) -> Bucket {
        let fp = self.hash(table as u8, bytes);
        let slot = u32::try_from(fp % u64::from(self.slots.max(1))).unwrap_or(0);
        Bucket { table, slot, fp }
    }

    fn source_bucket(&self, source: Option<&str>) -> Option<Bucket> {
        if self.per_source_max_failures == 0 {
            return None;
        }
        source.map(|s| self.bucket(Table::Source, &source_key(s)))
    }

    fn read(store: &(impl SharedStore + ?Sized), b: Bucket) -> (Option<Entry>, Option<u32>) {
        match store.get(&b.table.key(b.slot)) {
            Some((v, cas)) => (Entry::decode(&v), Some(cas)),
            None => (None, None),
        }
    }

    /// Where this attempt's failures count: the client's own slot if it holds
    /// the client's entry or nothing live, else the source bucket.
    fn route(
        &self,
        store: &(impl SharedStore + ?Sized),
        known_client: Option<&str>,
        source: &dyn Fn() -> Option<String>,
        now: u64,
    ) -> Option<(Bucket, Option<Entry>, Option<u32>)> {
        if let Some(client_id) = known_client {
            let b = self.bucket(Table::Client, client_id.as_bytes());
            let (entry, cas) = Self::read(store, b);
            match entry {
                Some(e) if e.fp != b.fp && !self.idle(&e, now) => {}
                _ => return Some((b, entry, cas)),
            }
        }
        let b = self.source_bucket(source().as_deref())?;
        let (entry, cas) = Self::read(store, b);
        Some((b, entry, cas))
    }

    /// Before authentication: `Err` if this attempt is locked out. `known_client`
    /// is the client id when a profile has it; `source` yields the peer
    /// address, asked for only when needed.
    pub fn check(
        &self,
        store: &(impl SharedStore + ?Sized),
        known_client: Option<&str>,
        source: &dyn Fn() -> Option<String>,
        now: u64,
    ) -> Result<(), Locked> {
        let Some((b, Some(e), _)) = self.route(store, known_client, source, now) else {
            return Ok(());
        };
        // Client entries lock their own fingerprint; source entries lock the
        // slot (their collisions share fate, see the module docs).
        if b.table == Table::Client && e.fp != b.fp {
            return Ok(());
        }
        match self.locked_for(&e, now) {
            Some(retry_after) => Err(Locked { retry_after }),
            None => Ok(()),
        }
    }

    /// After a failed authentication. Returns the lock it started, if any
    /// (for the log). A failure lost to CAS contention is given up.
    pub fn record_failure(
        &self,
        store: &(impl SharedStore + ?Sized),
        known_client: Option<&str>,
        source: &dyn Fn() -> Option<String>,
        now: u64,
    ) -> Option<Locked> {
        for _ in 0..MAX_CAS_RETRIES {
            let (b, current, cas) = self.route(store, known_client, source, now)?;
            let limit = match b.table {
                Table::Client => self.max_failures,
                Table::Source => self.per_source_max_failures,
            };
            let (next, locked) = self.count_failure(current, b, limit, now);
            // An absent key has no CAS to hold (Envoy ignores CAS on create):
            // two workers creating one slot at once may lose one count.
            match store.set(&b.table.key(b.slot), &next.encode(), cas) {
                Ok(()) => return locked,
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Other) => return None,
            }
        }
        None
    }

    fn count_failure(&self, current: Option<Entry>, b: Bucket, limit: u32, now: u64) -> (Entry, Option<Locked>) {
        let mut e = match current {
            Some(e) if e.fp == b.fp || b.table == Table::Source => e,
            // Empty, garbage, or an idle entry of another client: ours now.
            _ => Entry { fp: b.fp, ..Entry::default() },
        };
        if b.table == Table::Source && self.idle(&e, now) {
            e = Entry { fp: b.fp, ..Entry::default() };
        }
        if self.locked_for(&e, now).is_some() {
            // Raced with a lock another worker just set: nothing to add.
            return (e, None);
        }
        if !self.in_window(&e, now) {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures < limit {
            return (e, None);
        }
        let strikes = self.strikes_now(&e, now);
        let duration = self.base_seconds.saturating_mul(1u64 << strikes.min(MAX_STRIKES)).min(self.max_seconds);
        e.strikes = (strikes + 1).min(MAX_STRIKES);
        e.locked_until = now.saturating_add(duration);
        e.window_start = now;
        e.failures = 0;
        (e, Some(Locked { retry_after: duration }))
    }
}

/// The bytes a source address is bucketed by: the host without the port, and
/// for IPv6 its /64 (one host usually holds a whole /64, so counting single
/// addresses would let it rotate through 2^64 of them). Hand-rolled rather
/// than `std::net` parsing, which costs the .wasm more than this module.
fn source_key(address: &str) -> Vec<u8> {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if address.matches(':').count() == 1 => address.split(':').next().unwrap_or(address),
        None => address,
    };
    if !host.contains(':') {
        // IPv4 (Envoy prints it canonically), or not an IP at all.
        return host.as_bytes().to_vec();
    }
    match ipv6_groups(host) {
        Some([0, 0, 0, 0, 0, 0xffff, hi, lo]) => {
            format!("{}.{}.{}.{}", hi >> 8, hi & 0xff, lo >> 8, lo & 0xff).into_bytes()
        }
        Some(g) => g[..4].iter().flat_map(|x| x.to_be_bytes()).collect(),
        None => host.as_bytes().to_vec(),
    }
}

/// The eight groups of an IPv6 address in text (with `::` and an optional
/// dotted IPv4 tail), or `None` if it is not one.
fn ipv6_groups(text: &str) -> Option<[u16; 8]> {
    fn groups(part: &str) -> Option<Vec<u16>> {
        let mut out = Vec::new();
        if part.is_empty() {
            return Some(out);
        }
        for g in part.split(':') {
            if g.contains('.') {
                let mut octets = g.split('.').map(|o| o.parse::<u8>().ok());
                let mut next = || octets.next().flatten();
                let (a, b, c, d) = (next()?, next()?, next()?, next()?);
                out.push(u16::from_be_bytes([a, b]));
                out.push(u16::from_be_bytes([c, d]));
            } else if (1..=4).contains(&g.len()) {
                out.push(u16::from_str_radix(g, 16).ok()?);
            } else {
                return None;
            }
        }
        Some(out)
    }
    let (head, tail) = match text.split_once("::") {
        Some((h, t)) => (groups(h)?, Some(groups(t)?)),
        None => (groups(text)?, None),
    };
    let mut out = [0u16; 8];
    match tail {
        None if head.len() == 8 => out.copy_from_slice(&head),
        Some(tail) if head.len() + tail.len() < 8 => {
            out[..head.len()].copy_from_slice(&head);
            out[8 - tail.len()..].copy_from_slice(&tail);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::shared::tests::MemStore;

    pub fn policy() -> Lockout {
        Lockout {
            max_failures: 10,
            window_seconds: 60,
            base_seconds: 60,
            max_seconds: 900,
            per_source_max_failures: 20,
            slots: 64,
            hash_key: (1, 2),
        }
    }

    fn addr(a: &'static str) -> impl Fn() -> Option<String> {
        move || Some(a.to_owned())
    }

    /// Fails `n` times as `client` from `src`; returns the last lock started.
    fn fail(l: &Lockout, s: &MemStore, client: Option<&str>, src: &'static str, n: u32, now: u64) -> Option<Locked> {
        let mut last = None;
        for _ in 0..n {
            last = l.record_failure(s, client, &addr(src), now).or(last);
        }
        last
    }

    #[test]
    fn entry_round_trip_and_garbage() {
        let e = Entry { fp: u64::MAX, window_start: 5, failures: 3, locked_until: 9, strikes: 2 };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        for bad in [&b""[..], &[0; 31], &[0; 33], b"1 2 3 4 5"] {
            assert_eq!(Entry::decode(bad), None, "{bad:?}");
        }
        let mut huge = e.encode();
        huge[28..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Entry::decode(&huge).unwrap().strikes, MAX_STRIKES);
    }

    #[test]
    fn ten_failures_lock_whatever_comes_next_then_expire() {
        let (l, s) = (policy(), MemStore::default());
        let t = 1_000;
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 9, t), None);
        assert_eq!(l.check(&s, Some("c1"), &addr("10.0.0.1:1"), t), Ok(()));
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 1, t + 5), Some(Locked { retry_after: 60 }));
        // Locked for every source, and the check never sees the secret.
        assert_eq!(l.check(&s, Some("c1"), &addr("10.9.9.9:2"), t + 5), Err(Locked { retry_after: 60 }));
        assert_eq!(l.check(&s, Some("c1"), &addr("10.0.0.1:1"), t + 64), Err(Locked { retry_after: 1 }));
        assert_eq!(l.check(&s, Some("c2"), &addr("10.0.0.1:1"), t + 5), Ok(()), "other clients unaffected");
        assert_eq!(l.check(&s, Some("c1"), &addr("10.0.0.1:1"), t + 65), Ok(()), "never permanent");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let (l, s) = (policy(), MemStore::default());
        fail(&l, &s, Some("c1"), "10.0.0.1:1", 9, 0);
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 9, 60), None);
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 1, 61), Some(Locked { retry_after: 60 }));
    }

    #[test]
    fn locks_double_to_the_cap_and_decay() {
        let (l, s) = (policy(), MemStore::default());
        let mut now = 0;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let lock = fail(&l, &s, Some("c1"), "10.0.0.1:1", 10, now).unwrap();
            seen.push(lock.retry_after);
            now += lock.retry_after;
        }
        assert_eq!(seen, [60, 120, 240, 480, 900, 900]);
        // One quiet max_seconds forgives one doubling; enough of them, all.
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 10, now + 900).unwrap().retry_after, 900);
        let now = now + 900 + 900;
        assert_eq!(fail(&l, &s, Some("c1"), "10.0.0.1:1", 10, now + 900 * 40).unwrap().retry_after, 60);
    }

    #[test]
    fn unknown_client_ids_fill_only_the_source_bucket() {
        let (l, s) = (policy(), MemStore::default());
        for i in 0..19 {
            let id = format!("unknown-{i}");
            assert_eq!(l.check(&s, None, &addr("192.0.2.7:4000"), 10), Ok(()), "{id}");
            l.record_failure(&s, None, &addr("192.0.2.7:4000"), 10);
        }
        assert_eq!(l.record_failure(&s, None, &addr("192.0.2.7:4001"), 10), Some(Locked { retry_after: 60 }));
        assert_eq!(l.check(&s, None, &addr("192.0.2.7:5555"), 11), Err(Locked { retry_after: 59 }), "port ignored");
        assert_eq!(l.check(&s, None, &addr("192.0.2.8:4000"), 11), Ok(()), "other addresses unaffected");
        // A known client from the same address is judged by its own slot.
        assert_eq!(l.check(&s, Some("c1"), &addr("192.0.2.7:4000"), 11), Ok(()));
        assert!(s.0.borrow().keys().all(|k| k.starts_with("lock.s.")), "no client slot used");
    }

    #[test]
    fn per_source_zero_turns_the_bucket_off() {
        let (l, s) = (Lockout { per_source_max_failures: 0, ..policy() }, MemStore::default());
        assert_eq!(fail(&l, &s, None, "192.0.2.7:1", 1000, 10), None);
        assert_eq!(l.check(&s, None, &addr("192.0.2.7:1"), 10), Ok(()));
        assert!(s.0.borrow().is_empty());
    }

    #[test]
    fn ipv6_sources_count_by_slash_64() {
        assert_eq!(source_key("[2001:db8:1:2:aaaa::1]:443"), source_key("[2001:db8:1:2:bbbb::9]:80"));
        assert_ne!(source_key("[2001:db8:1:2::1]:443"), source_key("[2001:db8:1:3::1]:443"));
        assert_eq!(source_key("[::ffff:192.0.2.1]:1"), source_key("192.0.2.1:2"));
        assert_eq!(source_key("192.0.2.1"), b"192.0.2.1".to_vec());
        assert_eq!(source_key("[2001:db8::1]:1"), source_key("[2001:0db8:0:0:ffff::]:2"));
        assert_eq!(source_key("[::1]:1"), vec![0; 8]);
        assert_eq!(source_key("[1:2:3:4:5:6:7:8]:1"), vec![0, 1, 0, 2, 0, 3, 0, 4]);
        for odd in ["pipe", "[1:2:3]:4", "[::g]:1", "[1::2::3]:1", "[1:2:3:4:5:6:7:8:9]:1"] {
            assert_eq!(source_key(odd), odd.trim_start_matches('[').split(']').next().unwrap().as_bytes(), "{odd}");
        }
    }

    /// Finds two client ids that share a slot under `l`.
    fn colliding(l: &Lockout) -> (String, String) {
        let first = "victim".to_owned();
        let slot = l.bucket(Table::Client, first.as_bytes()).slot;
        let other = (0..).map(|i| format!("other-{i}")).find(|c| l.bucket(Table::Client, c.as_bytes()).slot == slot);
        (first, other.unwrap())
    }

    #[test]
    fn a_live_slot_is_not_stolen_the_overflow_goes_to_the_source() {
        let (l, s) = (policy(), MemStore::default());
        let (a, b) = colliding(&l);
        fail(&l, &s, Some(&a), "10.0.0.1:1", 3, 0);
        // b's failures cannot evict a's live entry (no mutual resetting):
        // they count against b's source instead, which locks at 20.
        assert_eq!(fail(&l, &s, Some(&b), "10.0.0.2:1", 19, 1), None);
        assert_eq!(fail(&l, &s, Some(&b), "10.0.0.2:1", 1, 1), Some(Locked { retry_after: 60 }));
        assert_eq!(l.check(&s, Some(&b), &addr("10.0.0.2:1"), 2), Err(Locked { retry_after: 59 }));
        assert_eq!(l.check(&s, Some(&a), &addr("10.0.0.2:1"), 2), Ok(()), "a is judged by its own entry");
        // a's entry kept its count: 7 more lock it.
        assert_eq!(fail(&l, &s, Some(&a), "10.0.0.1:1", 7, 3), Some(Locked { retry_after: 60 }));
        // Once a's entry is idle, b takes the slot.
        let later = 3 + 60 + 900;
        assert_eq!(fail(&l, &s, Some(&b), "10.0.0.3:1", 10, later), Some(Locked { retry_after: 60 }));
        assert_eq!(l.check(&s, Some(&a), &addr("10.0.0.1:1"), later), Ok(()));
    }

    #[test]
    fn shared_data_stays_bounded_whatever_the_traffic() {
        let (l, s) = (policy(), MemStore::default());
        for i in 0..5_000u32 {
            let id = format!("{i}-{}", "x".repeat(200));
            let src = format!("198.51.{}.{}:{}", i % 200, i % 250, i);
            l.record_failure(&s, Some(&id), &|| Some(src.clone()), u64::from(i));
            l.record_failure(&s, None, &|| Some(src.clone()), u64::from(i));
        }
        let cells = s.0.borrow();
        assert!(cells.len() <= 2 * l.slots as usize, "{} keys", cells.len());
        let bytes: usize = cells.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
        assert!(bytes <= 2 * 64 * (18 + ENTRY_BYTES), "{bytes} bytes");
        assert!(cells.values().all(|(v, _)| v.len() == ENTRY_BYTES), "no client bytes stored");
    }

    #[test]
    fn cas_races_are_retried() {
        /// A store whose first `set` of each call loses a race to another worker.
        struct Racy(MemStore, std::cell::Cell<bool>);
        impl SharedStore for Racy {
            fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
                self.0.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
                if self.1.replace(false) {
                    // The other worker's failure lands first.
                    let (v, c) = self.0.get(key).unwrap();
                    let mut e = Entry::decode(&v).unwrap();
                    e.failures += 1;
                    self.0.set(key, &e.encode(), Some(c)).unwrap();
                }
                self.0.set(key, value, cas)
            }
        }
        let l = policy();
        let s = Racy(MemStore::default(), std::cell::Cell::new(false));
        l.record_failure(&s, Some("c1"), &addr("10.0.0.1:1"), 0);
        for _ in 0..4 {
            s.1.set(true);
            l.record_failure(&s, Some("c1"), &addr("10.0.0.1:1"), 0);
        }
        // 5 of ours and 4 of theirs: 9, so the next one locks.
        assert_eq!(l.record_failure(&s.0, Some("c1"), &addr("10.0.0.1:1"), 0), Some(Locked { retry_after: 60 }));
    }

    #[test]
    fn the_source_is_asked_for_only_when_needed() {
        let (l, s) = (policy(), MemStore::default());
        let never = || -> Option<String> { panic!("source asked for a known client with its own slot") };
        l.check(&s, Some("c1"), &never, 0).unwrap();
        l.record_failure(&s, Some("c1"), &never, 0);
    }
}
