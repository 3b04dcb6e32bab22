//! The sync role: one worker per Envoy (elected by a lease in shared data)
//! long-polls the sidecar and publishes what it learns into shared data.
//! Pure: the host dispatches the HTTP calls this state machine asks for and
//! hands back the responses.
//!
//! A failing sync is loud: the first failure is logged at once, and an error
//! is logged again every [`FAILURE_LOG_INTERVAL_MS`] while it lasts, with the
//! cause and the age of the snapshot still being served. [`Poller::stats`]
//! and [`snapshot_age_secs`] give what the metrics export.

use std::fmt;

use crate::contract::{self, Changes, ContractError, Snapshot};
use crate::shared::{self, Publisher, SharedStore, Stamp, StoreError};

/// How long a poller's lease lasts without renewal. Workers tick every
/// [`TICK_MS`], so a dead poller is replaced within about this long.
pub const LEASE_TTL_MS: u64 = 3_000;
pub const TICK_MS: u64 = 250;
const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 5_000;
/// While a failure lasts, the error is logged again this often: an outage
/// must stay visible in the logs, not only at its start.
pub const FAILURE_LOG_INTERVAL_MS: u64 = 30_000;

/// A call to the sidecar's data API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Snapshot,
    Changes { since: u64 },
}

impl Request {
    pub fn path(&self, wait_seconds: u64) -> String {
        match self {
            Self::Snapshot => contract::SNAPSHOT_PATH.to_owned(),
            Self::Changes { since } => format!("{}?since={since}&wait={wait_seconds}", contract::CHANGES_PATH),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Why one sync attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncFailure {
    /// The host refused to dispatch the call (e.g. unknown cluster).
    Dispatch,
    /// No answer: unreachable, reset or timed out.
    Unreachable,
    /// The sidecar refused the data token.
    Unauthorized,
    /// Any other status.
    Status(u32),
    /// The answer broke the data contract (malformed, another version).
    Contract(ContractError),
    /// Shared data refused a write.
    Publish(StoreError),
}

/// [`SyncFailure`] without its data: a bounded label set for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Dispatch,
    Unreachable,
    Unauthorized,
    Status,
    Contract,
    Publish,
}

impl FailureKind {
    pub const ALL: [Self; 6] =
        [Self::Dispatch, Self::Unreachable, Self::Unauthorized, Self::Status, Self::Contract, Self::Publish];

    /// A short label, e.g. for a metric tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::Unreachable => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::Status => "status",
            Self::Contract => "contract",
            Self::Publish => "publish",
        }
    }
}

impl SyncFailure {
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Dispatch => FailureKind::Dispatch,
            Self::Unreachable => FailureKind::Unreachable,
            Self::Unauthorized => FailureKind::Unauthorized,
            Self::Status(_) => FailureKind::Status,
            Self::Contract(_) => FailureKind::Contract,
            Self::Publish(_) => FailureKind::Publish,
        }
    }
}

impl fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dispatch => f.write_str("could not dispatch the call to the sidecar"),
            Self::Unreachable => f.write_str("the sidecar did not answer (unreachable or timed out)"),
            Self::Unauthorized => f.write_str("the sidecar refused the data token (401)"),
            Self::Status(s) => write!(f, "the sidecar answered {s}"),
            Self::Contract(e) => e.fmt(f),
            Self::Publish(e) => write!(f, "could not publish to shared data: {e:?}"),
        }
    }
}

/// What this worker's poller has seen, for the operators' metrics. Counters
/// only grow; they count while this worker holds the lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Answers applied (a snapshot, changes, or an empty long poll).
    pub successes: u64,
    /// Failed attempts, all causes.
    pub failures: u64,
    /// Failed attempts by [`FailureKind`], in [`FailureKind::ALL`] order.
    pub failures_by_kind: [u64; 6],
    /// Failures since the last success (0 while healthy).
    pub consecutive_failures: u32,
    /// When the current failure run started (ms), while failing.
    pub failing_since_ms: Option<u64>,
    /// When the last answer was applied (ms).
    pub last_success_ms: Option<u64>,
}

impl SyncStats {
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        FailureKind::ALL.iter().position(|k| *k == kind).map_or(0, |i| self.failures_by_kind[i])
    }
}

/// Age of the snapshot the proxy serves, from the stamp in shared data (any
/// worker can read it, leader or not); `None` before the first snapshot.
pub fn snapshot_age_secs(store: &impl SharedStore, now_secs: u64) -> Option<u64> {
    let (bytes, _) = store.get(shared::STAMP_KEY)?;
    Some(now_secs.saturating_sub(Stamp::decode(&bytes)?.synced_at))
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
    stats: SyncStats,
    /// When the failure error was last logged, while failing.
    failure_logged_ms: Option<u64>,
}

impl Poller {
    /// `me` must be unique per worker (random), since context ids repeat
    /// across worker VMs.
    pub fn new(me: u64) -> Self {
        Self { me, phase: Phase::Follower, stats: SyncStats::default(), failure_logged_ms: None }
    }

    /// How many profiles the published snapshot holds, if this worker is the
    /// poller and knows (for the `profiles_loaded` gauge).
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

    pub fn stats(&self) -> SyncStats {
        self.stats
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
    pub fn dispatch_failed(&mut self, store: &impl SharedStore, now_ms: u64, log: &mut impl FnMut(Level, &str)) {
        self.fail(store, now_ms, &SyncFailure::Dispatch, log);
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
        let outcome: Result<(), SyncFailure> = match (status, request) {
            (Some(200), Request::Snapshot) => match Snapshot::parse(body) {
                Ok(snap) => publisher
                    .apply_snapshot(store, &snap, now)
                    .map(|p| {
                        log(
                            Level::Info,
                            &format!("loaded profile snapshot: revision {}, {} profile(s)", snap.revision, p.written),
                        );
                        report_refused(&p.refused, log);
                    })
                    .map_err(SyncFailure::Publish),
                Err(e) => Err(SyncFailure::Contract(e)),
            },
            (Some(200), Request::Changes { since }) => match Changes::parse(body) {
                Ok(ch) if ch.reset => {
                    log(Level::Warn, "sidecar asked for a full resync (store replaced)");
                    publisher.has_baseline = false;
                    Ok(())
                }
                Ok(ch) if ch.changes.is_empty() && ch.revision == since => {
                    publisher.touch(store, now).map_err(SyncFailure::Publish)
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
                    .map_err(SyncFailure::Publish),
                Err(e) => Err(SyncFailure::Contract(e)),
            },
            (Some(401), _) => Err(SyncFailure::Unauthorized),
            (Some(s), _) => Err(SyncFailure::Status(s)),
            (None, _) => Err(SyncFailure::Unreachable),
        };
        match outcome {
            Ok(()) => {
                if let Some(since) = self.stats.failing_since_ms {
                    log(
                        Level::Info,
                        &format!(
                            "profile sync with the sidecar restored after {} failure(s) over {} s",
                            self.stats.consecutive_failures,
                            now_ms.saturating_sub(since) / 1000
                        ),
                    );
                }
                self.stats.successes += 1;
                self.stats.consecutive_failures = 0;
                self.stats.failing_since_ms = None;
                self.stats.last_success_ms = Some(now_ms);
                self.failure_logged_ms = None;
                let next = next_request(&publisher);
                self.phase = Phase::Idle { publisher, not_before_ms: now_ms };
                Some(next)
            }
            Err(why) => {
                // A failed publish leaves shared data in an unknown state,
                // and a refused document may have been a partial one: start
                // again from a snapshot.
                if status == Some(200) {
                    publisher.has_baseline = false;
                }
                self.phase = Phase::Idle { publisher, not_before_ms: 0 };
                self.fail(store, now_ms, &why, log);
                None
            }
        }
    }

    fn fail(&mut self, store: &impl SharedStore, now_ms: u64, why: &SyncFailure, log: &mut impl FnMut(Level, &str)) {
        let stats = &mut self.stats;
        stats.failures += 1;
        if let Some(i) = FailureKind::ALL.iter().position(|k| *k == why.kind()) {
            stats.failures_by_kind[i] += 1;
        }
        stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
        let since = *stats.failing_since_ms.get_or_insert(now_ms);
        let delay = BACKOFF_MIN_MS.saturating_mul(1 << stats.consecutive_failures.min(6)).min(BACKOFF_MAX_MS);
        let due = self.failure_logged_ms.map_or(true, |t| now_ms.saturating_sub(t) >= FAILURE_LOG_INTERVAL_MS);
        if due {
            let age = match snapshot_age_secs(store, now_ms / 1000) {
                Some(age) => format!(
                    "serving the last snapshot (synced {age} s ago); changes, rotations included, \
                     are not applied until sync recovers"
                ),
                None => "no snapshot loaded: every request is refused with 503".to_owned(),
            };
            log(
                Level::Error,
                &format!(
                    "profile sync failed ({why}); {age}; {} failure(s) over {} s, retry in {delay} ms",
                    stats.consecutive_failures,
                    now_ms.saturating_sub(since) / 1000,
                ),
            );
            self.failure_logged_ms = Some(now_ms);
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
        assert_eq!(a.profiles_published(), Some(1), "the count survives a failure");
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

    /// Runs `a` through `n` attempts answered by `status`/`body`, one per
    /// tick as the backoff allows, from `start_ms` to `end_ms`; returns the
    /// log lines.
    fn fail_until(
        a: &mut Poller,
        store: &MemStore,
        start_ms: u64,
        end_ms: u64,
        status: Option<u32>,
        body: &[u8],
    ) -> Vec<(Level, String)> {
        let mut lines = Vec::new();
        let mut log = |l: Level, m: &str| lines.push((l, m.to_owned()));
        let mut token = 1000;
        let mut now = start_ms;
        while now <= end_ms {
            if let Some(req) = a.on_tick(store, now, &mut log) {
                token += 1;
                a.dispatched(req, token);
                a.on_response(store, token, status, body, now, &mut log);
            }
            now += TICK_MS;
        }
        lines
    }

    fn loaded(store: &MemStore) -> Poller {
        let mut a = Poller::new(1);
        a.on_tick(store, 0, &mut quiet());
        a.dispatched(Request::Snapshot, 1);
        a.on_response(store, 1, Some(200), &snapshot_body(1, 2), 0, &mut quiet());
        a
    }

    #[test]
    fn a_snapshot_with_unknown_fields_is_applied() {
        let store = MemStore::default();
        let mut a = Poller::new(1);
        a.on_tick(&store, 0, &mut quiet());
        a.dispatched(Request::Snapshot, 1);
        let mut profile = serde_json::to_value(record(1)).unwrap();
        profile["created_at"] = 1_700_000_000.into();
        let body = serde_json::json!({"version": 1, "revision": 3, "served_by": "x", "profiles": [profile]});
        let next = a.on_response(&store, 1, Some(200), body.to_string().as_bytes(), 0, &mut quiet());
        assert_eq!(next, Some(Request::Changes { since: 3 }));
        assert_eq!(a.stats().successes, 1);
        let view = SharedProfiles::new(store.clone());
        view.refresh(0, None).unwrap();
        assert_eq!(view.by_client_id("client-1").unwrap().id, record(1).id);
        // And a rotation that arrives with an unknown field still revokes.
        let mut rotated = serde_json::to_value(record(1)).unwrap();
        rotated["kid"] = record(70).kid.into();
        rotated["rotated_reason"] = "scheduled".into();
        let ch = serde_json::json!({"revision": 4, "changes": [{"id": record(1).id, "profile": rotated}]});
        a.dispatched(Request::Changes { since: 3 }, 2);
        assert!(a.on_response(&store, 2, Some(200), ch.to_string().as_bytes(), 0, &mut quiet()).is_some());
        view.refresh(0, None).unwrap();
        assert!(view.by_kid(&record(1).kid).is_none(), "old kid revoked");
        assert!(view.by_kid(&record(70).kid).is_some());
    }

    #[test]
    fn another_contract_version_is_refused_loudly_and_the_last_snapshot_stays() {
        let store = MemStore::default();
        let mut a = loaded(&store);
        let mut lines = Vec::new();
        let mut log = |l: Level, m: &str| lines.push((l, m.to_owned()));
        a.dispatched(Request::Changes { since: 1 }, 2);
        let v2 = br#"{"version":2,"revision":2,"changes":[]}"#;
        assert_eq!(a.on_response(&store, 2, Some(200), v2, 2_000, &mut log), None);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, Level::Error);
        assert!(lines[0].1.contains("contract version 2"), "{}", lines[0].1);
        assert!(lines[0].1.contains("serving the last snapshot (synced 2 s ago)"), "{}", lines[0].1);
        let stats = a.stats();
        assert_eq!((stats.successes, stats.failures, stats.failures_of(FailureKind::Contract)), (1, 1, 1));
        assert_eq!(stats.failing_since_ms, Some(2_000));
        // It goes back to a snapshot, and keeps serving the old one meanwhile.
        assert_eq!(a.on_tick(&store, 10_000, &mut quiet()), Some(Request::Snapshot));
        let view = SharedProfiles::new(store.clone());
        view.refresh(10, None).unwrap();
        assert!(view.by_client_id("client-2").is_some());
        assert_eq!(snapshot_age_secs(&store, 10), Some(10));
    }

    #[test]
    fn the_error_repeats_every_30_s_while_the_failure_lasts() {
        let store = MemStore::default();
        let mut a = loaded(&store);
        // Unreachable from 1 s to 100 s: attempts back off to every 5 s; an
        // error line at 1 s, then at the first attempts 30 s after the last
        // line (33.5 s, 63.5 s, 93.5 s): no more, no fewer.
        let lines = fail_until(&mut a, &store, 1_000, 100_000, None, b"");
        let errors: Vec<&String> = lines.iter().filter(|(l, _)| *l == Level::Error).map(|(_, m)| m).collect();
        assert_eq!(errors.len(), 4, "{lines:#?}");
        assert!(errors.iter().all(|m| m.contains("did not answer") && m.contains("serving the last snapshot")));
        assert!(errors[3].contains("over 92 s"), "{}", errors[3]);
        let stats = a.stats();
        assert!(stats.failures >= 19, "{stats:?}");
        assert_eq!(stats.failures, stats.failures_of(FailureKind::Unreachable));
        assert_eq!(u64::from(stats.consecutive_failures), stats.failures);
        // Recovery is logged once and resets the run; a new outage logs at once.
        let lines = fail_until(&mut a, &store, 100_250, 106_000, Some(200), br#"{"revision":1,"changes":[]}"#);
        assert!(lines.iter().any(|(l, m)| *l == Level::Info && m.contains("restored after")), "{lines:#?}");
        let stats = a.stats();
        assert_eq!((stats.consecutive_failures, stats.failing_since_ms), (0, None));
        assert!(stats.successes >= 2);
        let lines = fail_until(&mut a, &store, 106_250, 107_000, Some(503), b"");
        assert_eq!(lines.iter().filter(|(l, _)| *l == Level::Error).count(), 1, "{lines:#?}");
        assert_eq!(a.stats().failures_of(FailureKind::Status), 2);
    }

    #[test]
    fn failures_before_the_first_snapshot_say_requests_are_refused() {
        let store = MemStore::default();
        let mut a = Poller::new(1);
        let lines = fail_until(&mut a, &store, 0, 1_000, Some(401), b"");
        assert_eq!(lines.iter().filter(|(l, _)| *l == Level::Error).count(), 1);
        assert!(lines.iter().any(|(_, m)| m.contains("refused the data token") && m.contains("503")), "{lines:#?}");
        assert_eq!(snapshot_age_secs(&store, 5), None);
        let mut b = Poller::new(2);
        b.on_tick(&store, LEASE_TTL_MS * 10, &mut quiet());
        b.dispatch_failed(&store, LEASE_TTL_MS * 10, &mut quiet());
        assert_eq!(b.stats().failures_of(FailureKind::Dispatch), 1);
    }
}
