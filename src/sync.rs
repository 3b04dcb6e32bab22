//! The sync role: one worker per Envoy (elected by a lease in shared data)
//! long-polls the sidecar and publishes what it learns into shared data.
//! Pure: the host dispatches the HTTP calls this state machine asks for and
//! hands back the responses.

use crate::shared::{self, Changes, Publisher, SharedStore, Snapshot};

/// How long a poller's lease lasts without renewal. Workers tick every
/// [`TICK_MS`], so a dead poller is replaced within about this long.
pub const LEASE_TTL_MS: u64 = 3_000;
pub const TICK_MS: u64 = 250;
const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 5_000;

/// A call to the sidecar's data API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Snapshot,
    Changes { since: u64 },
}

impl Request {
    pub fn path(&self, wait_seconds: u64) -> String {
        match self {
            Self::Snapshot => "/data/v1/snapshot".to_owned(),
            Self::Changes { since } => format!("/data/v1/changes?since={since}&wait={wait_seconds}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// The poller's state; each state carries its data.
#[derive(Debug)]
enum Phase {
    /// Another worker holds the lease.
    Follower,
    /// Leader, waiting until `not_before_ms` (backoff) to call.
    Idle { publisher: Publisher, not_before_ms: u64 },
    /// Leader with one call out; only the response to `token` counts.
    InFlight { publisher: Publisher, token: u32, request: Request },
}

#[derive(Debug)]
pub struct Poller {
    me: u64,
    phase: Phase,
    failures: u32,
    /// Sync outcomes not yet taken by the host (metrics).
    outcomes: SyncOutcomes,
}

/// Sync contacts since the host last asked: successful answers (snapshots,
/// change batches, quiet long polls) and failed ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOutcomes {
    pub succeeded: u64,
    pub failed: u64,
}

impl Poller {
    /// `me` must be unique per worker (random), since context ids repeat
    /// across worker VMs.
    pub fn new(me: u64) -> Self {
        Self { me, phase: Phase::Follower, failures: 0, outcomes: SyncOutcomes::default() }
    }

    /// The outcomes since the last call.
    pub fn take_outcomes(&mut self) -> SyncOutcomes {
        std::mem::take(&mut self.outcomes)
    }

    /// How many profiles the published snapshot holds, if this worker is the
    /// poller and knows.
    pub fn profiles_published(&self) -> Option<usize> {
        match &self.phase {
            Phase::Idle { publisher, .. } | Phase::InFlight { publisher, .. } if publisher.has_baseline => {
                Some(publisher.profile_count())
            }
            _ => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        !matches!(self.phase, Phase::Follower)
    }

    /// Every tick: take or renew the lease; return a call to make, if any.
    pub fn on_tick(
        &mut self,
        store: &impl SharedStore,
        now_ms: u64,
        log: &mut impl FnMut(Level, &str),
    ) -> Option<Request> {
        if !shared::hold_lease(store, self.me, now_ms, LEASE_TTL_MS) {
            if self.is_leader() {
                log(Level::Warn, "lost the poller lease to another worker");
            }
            self.phase = Phase::Follower;
            return None;
        }
        self.phase = match std::mem::replace(&mut self.phase, Phase::Follower) {
            Phase::Follower => {
                log(Level::Info, "this worker is now the profile poller");
                Phase::Idle { publisher: Publisher::resume(store), not_before_ms: 0 }
            }
            other => other,
        };
        match &self.phase {
            Phase::Idle { publisher, not_before_ms } if now_ms >= *not_before_ms => Some(next_request(publisher)),
            _ => None,
        }
    }

    /// The host dispatched `request` as `token`.
    pub fn dispatched(&mut self, request: Request, token: u32) {
        if let Phase::Idle { publisher, .. } = std::mem::replace(&mut self.phase, Phase::Follower) {
            self.phase = Phase::InFlight { publisher, token, request };
        }
    }

    /// The host could not dispatch (e.g. unknown cluster).
    pub fn dispatch_failed(&mut self, now_ms: u64, log: &mut impl FnMut(Level, &str)) {
        self.fail(now_ms, "could not dispatch the call to the sidecar", log);
    }

    /// A response (or a failure: `status` None) for `token`. Returns the next
    /// call to make at once (the next long poll), if any.
    pub fn on_response(
        &mut self,
        store: &impl SharedStore,
        token: u32,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
        log: &mut impl FnMut(Level, &str),
    ) -> Option<Request> {
        let (mut publisher, request) = match std::mem::replace(&mut self.phase, Phase::Follower) {
            Phase::InFlight { publisher, token: t, request } if t == token => (publisher, request),
            other => {
                self.phase = other; // not ours: ignore
                return None;
            }
        };
        if !shared::holds_lease(store, self.me, now_ms) {
            log(Level::Warn, "lost the poller lease while a call was out; dropping its answer");
            return None;
        }
        let now = now_ms / 1000;
        let outcome: Result<(), String> = match (status, request) {
            (Some(200), Request::Snapshot) => match serde_json::from_slice::<Snapshot>(body) {
                Ok(snap) => publisher
                    .apply_snapshot(store, &snap, now)
                    .map(|p| {
                        log(
                            Level::Info,
                            &format!("loaded profile snapshot: revision {}, {} profile(s)", snap.revision, p.written),
                        );
                        report_refused(&p.refused, log);
                    })
                    .map_err(|e| format!("could not publish the snapshot to shared data: {e:?}")),
                Err(e) => Err(format!("sidecar snapshot is not valid: {e}")),
            },
            (Some(200), Request::Changes { since }) => match serde_json::from_slice::<Changes>(body) {
                Ok(ch) if ch.reset => {
                    log(Level::Warn, "sidecar asked for a full resync (store replaced)");
                    publisher.has_baseline = false;
                    Ok(())
                }
                Ok(ch) if ch.changes.is_empty() && ch.revision == since => {
                    publisher.touch(store, now).map_err(|e| format!("could not update the sync stamp: {e:?}"))
                }
                Ok(ch) => publisher
                    .apply_changes(store, &ch, now)
                    .map(|p| {
                        log(
                            Level::Info,
                            &format!("applied {} profile change(s), revision {}", ch.changes.len(), ch.revision),
                        );
                        report_refused(&p.refused, log);
                    })
                    .map_err(|e| format!("could not publish changes to shared data: {e:?}")),
                Err(e) => Err(format!("sidecar change feed is not valid: {e}")),
            },
            (Some(401), _) => Err("the sidecar refused the data token (401)".to_owned()),
            (Some(s), _) => Err(format!("the sidecar answered {s}")),
            (None, _) => Err("the sidecar did not answer (unreachable or timed out)".to_owned()),
        };
        match outcome {
            Ok(()) => {
                self.outcomes.succeeded += 1;
                if self.failures > 0 {
                    log(Level::Info, "profile sync with the sidecar restored");
                }
                self.failures = 0;
                let next = next_request(&publisher);
                self.phase = Phase::Idle { publisher, not_before_ms: now_ms };
                Some(next)
            }
            Err(why) => {
                // A failed publish leaves shared data in an unknown state:
                // start again from a snapshot.
                if status == Some(200) {
                    publisher.has_baseline = false;
                }
                self.phase = Phase::Idle { publisher, not_before_ms: 0 };
                self.fail(now_ms, &why, log);
                None
            }
        }
    }

    fn fail(&mut self, now_ms: u64, why: &str, log: &mut impl FnMut(Level, &str)) {
        self.outcomes.failed += 1;
        self.failures = self.failures.saturating_add(1);
        let delay = BACKOFF_MIN_MS.saturating_mul(1 << self.failures.min(6)).min(BACKOFF_MAX_MS);
        // Log the first failure and then every 20th, not every retry.
        if self.failures == 1 || self.failures % 20 == 0 {
            log(
                Level::Warn,
                &format!(
                    "profile sync failed ({why}); serving the last snapshot, retry #{} in {delay} ms",
                    self.failures
                ),
            );
        }
        let publisher = match std::mem::replace(&mut self.phase, Phase::Follower) {
            Phase::Idle { publisher, .. } | Phase::InFlight { publisher, .. } => publisher,
            Phase::Follower => return,
        };
        self.phase = Phase::Idle { publisher, not_before_ms: now_ms + delay };
    }
}

fn next_request(p: &Publisher) -> Request {
    if p.has_baseline {
        Request::Changes { since: p.revision() }
    } else {
        Request::Snapshot
    }
}

fn report_refused(refused: &[String], log: &mut impl FnMut(Level, &str)) {
    if !refused.is_empty() {
        log(Level::Warn, &format!("refused {} invalid profile record(s), e.g. id {}", refused.len(), &refused[0]));
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::tests::record;
    use crate::profile::ProfileLookup;
    use crate::shared::tests::MemStore;
    use crate::shared::SharedProfiles;

    fn quiet() -> impl FnMut(Level, &str) {
        |_, _| {}
    }

    fn snapshot_body(revision: u64, n: u8) -> Vec<u8> {
        let profiles: Vec<_> = (1..=n).map(record).collect();
        serde_json::to_vec(&serde_json::json!({"revision": revision, "profiles": profiles})).unwrap()
    }

    #[test]
    fn one_leader_snapshot_then_long_polls() {
        let store = MemStore::default();
        let (mut a, mut b) = (Poller::new(1), Poller::new(2));
        assert_eq!(a.on_tick(&store, 0, &mut quiet()), Some(Request::Snapshot));
        assert_eq!(b.on_tick(&store, 0, &mut quiet()), None, "one poller per Envoy");
        a.dispatched(Request::Snapshot, 7);
        assert_eq!(a.on_tick(&store, 250, &mut quiet()), None, "one call at a time");
        // A response to a token we did not issue is ignored.
        assert_eq!(a.on_response(&store, 99, Some(200), b"{}", 300, &mut quiet()), None);
        assert_eq!(a.profiles_published(), None, "no snapshot yet");
        let next = a.on_response(&store, 7, Some(200), &snapshot_body(4, 2), 300, &mut quiet());
        assert_eq!(next, Some(Request::Changes { since: 4 }));
        assert_eq!((a.profiles_published(), b.profiles_published()), (Some(2), None));
        assert_eq!(Request::Changes { since: 4 }.path(25), "/data/v1/changes?since=4&wait=25");
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert!(view.by_client_id("client-2").is_some());
    }

    #[test]
    fn failures_back_off_and_keep_the_snapshot() {
        let store = MemStore::default();
        let mut a = Poller::new(1);
        a.on_tick(&store, 0, &mut quiet());
        a.dispatched(Request::Snapshot, 1);
        a.on_response(&store, 1, Some(200), &snapshot_body(1, 1), 0, &mut quiet());
        a.dispatched(Request::Changes { since: 1 }, 2);
        let mut warned = Vec::new();
        let mut log = |l: Level, m: &str| warned.push((l, m.to_owned()));
        assert_eq!(a.on_response(&store, 2, None, b"", 1000, &mut log), None);
        assert_eq!(warned.len(), 1);
        assert!(warned[0].1.contains("serving the last snapshot"));
        assert_eq!(a.on_tick(&store, 1100, &mut quiet()), None, "backing off");
        assert_eq!(a.on_tick(&store, 1600, &mut quiet()), Some(Request::Changes { since: 1 }));
        let view = SharedProfiles::new(store.clone());
        assert!(view.refresh(0, None).is_ok(), "the last snapshot stays");
        assert_eq!(a.take_outcomes(), SyncOutcomes { succeeded: 1, failed: 1 });
        assert_eq!(a.take_outcomes(), SyncOutcomes::default(), "taken once");
        assert_eq!(a.profiles_published(), Some(1));
    }

    #[test]
    fn reset_and_bad_bodies_go_back_to_a_snapshot() {
        let store = MemStore::default();
        let mut a = Poller::new(1);
        a.on_tick(&store, 0, &mut quiet());
        a.dispatched(Request::Snapshot, 1);
        a.on_response(&store, 1, Some(200), &snapshot_body(9, 1), 0, &mut quiet());
        a.dispatched(Request::Changes { since: 9 }, 2);
        let reset = br#"{"revision":2,"reset":true,"changes":[]}"#;
        assert_eq!(a.on_response(&store, 2, Some(200), reset, 0, &mut quiet()), Some(Request::Snapshot));
        a.dispatched(Request::Snapshot, 3);
        assert_eq!(a.on_response(&store, 3, Some(200), b"not json", 0, &mut quiet()), None);
        assert_eq!(a.on_tick(&store, 10_000, &mut quiet()), Some(Request::Snapshot));
    }

    #[test]
    fn takeover_when_the_leader_stops_renewing() {
        let store = MemStore::default();
        let (mut a, mut b) = (Poller::new(1), Poller::new(2));
        a.on_tick(&store, 0, &mut quiet());
        a.dispatched(Request::Snapshot, 1);
        a.on_response(&store, 1, Some(200), &snapshot_body(3, 1), 0, &mut quiet());
        assert_eq!(b.on_tick(&store, 2_000, &mut quiet()), None);
        // a stops ticking (its VM died); b takes over after the TTL and
        // continues from the published revision, not from scratch.
        assert_eq!(b.on_tick(&store, LEASE_TTL_MS + 1, &mut quiet()), Some(Request::Changes { since: 3 }));
        assert!(b.is_leader());
        // a's late answer is dropped.
        a.dispatched(Request::Changes { since: 3 }, 5);
        assert_eq!(
            a.on_response(&store, 5, Some(200), br#"{"revision":4,"changes":[]}"#, LEASE_TTL_MS + 2, &mut quiet()),
            None
        );
        assert_eq!(a.on_tick(&store, LEASE_TTL_MS + 3, &mut quiet()), None);
        assert!(!a.is_leader());
    }
}
