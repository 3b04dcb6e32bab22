//! What the filter counts, and under which Envoy stat names. Pure: the request
//! flow and the poller report outcomes; the host layer defines every metric of
//! [`Metric::all`] once per worker VM (Envoy shares a stat between VMs by name,
//! so the workers' counts add up) and maps an outcome to its metric with
//! [`Metric::index`].
//!
//! Labels are encoded in the stat name the way Istio's `extraStatTags` expect
//! them, `<tag>=.=<value>;.;` in front of the metric name: a bootstrap
//! `stats_tags` entry with the regex `(<tag>=\.=(.*?);\.;)` moves the pair into
//! a tag, and `/stats/prometheus` prints `tollgate_token_refused_total{error=
//! "invalid_client"}` (Envoy drops its `wasmcustom.` namespace there). Every
//! label value comes from a fixed list below: no client input ever becomes
//! part of a stat name.

use crate::error::{BearerError, TokenError};
use crate::jwt::JwtError;
use crate::sync::FailureKind;

/// What one request came to, as the flow reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    TokenIssued,
    TokenRefused(TokenError),
    GuardAllowed,
    GuardRefused(BearerError),
    /// A client locked out of the token endpoint after repeated failures.
    Lockout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The `error` label of `tollgate_token_refused_total`: RFC 6749 §5.2 codes
/// the token endpoint answers with, and `other` for any code added later.
pub const TOKEN_ERRORS: [&str; 5] =
    ["invalid_request", "invalid_client", "unsupported_grant_type", "temporarily_unavailable", "other"];

/// The `cause` label of `tollgate_guard_refused_total`.
pub const GUARD_CAUSES: [&str; 11] = [
    "missing",
    "malformed",
    "algorithm",
    "unknown_key",
    "signature",
    "expired",
    "not_yet_valid",
    "revoked",
    "insufficient_scope",
    "unavailable",
    "other",
];

/// One metric of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    TokensIssued,
    /// Index into [`TOKEN_ERRORS`].
    TokenRefused(usize),
    GuardAllowed,
    /// Index into [`GUARD_CAUSES`].
    GuardRefused(usize),
    Lockouts,
    SyncSuccesses,
    /// Index into [`FailureKind::ALL`].
    SyncFailures(usize),
    SnapshotAgeSeconds,
    ProfilesLoaded,
}

const TOKEN_REFUSED: &str = "tollgate_token_refused_total";
const GUARD_REFUSED: &str = "tollgate_guard_refused_total";
const SYNC_FAILURES: &str = "tollgate_sync_failures_total";
const SYNC_CAUSES: usize = FailureKind::ALL.len();

/// The tag names used in stat names; the bootstrap needs one `stats_tags`
/// entry for each (`cause` serves the guard and the sync failures).
pub const TAGS: [&str; 2] = ["error", "cause"];

impl Metric {
    /// Every metric, in catalogue order.
    pub fn all() -> Vec<Metric> {
        let mut out = vec![Metric::TokensIssued];
        out.extend((0..TOKEN_ERRORS.len()).map(Metric::TokenRefused));
        out.push(Metric::GuardAllowed);
        out.extend((0..GUARD_CAUSES.len()).map(Metric::GuardRefused));
        out.extend([Metric::Lockouts, Metric::SyncSuccesses]);
        out.extend((0..SYNC_CAUSES).map(Metric::SyncFailures));
        out.extend([Metric::SnapshotAgeSeconds, Metric::ProfilesLoaded]);
        out
    }

    /// Position in [`Metric::all`] (and so in the host's id table).
    pub fn index(self) -> usize {
        let (t, g, s) = (TOKEN_ERRORS.len(), GUARD_CAUSES.len(), SYNC_CAUSES);
        match self {
            Metric::TokensIssued => 0,
            Metric::TokenRefused(i) => 1 + i.min(t - 1),
            Metric::GuardAllowed => 1 + t,
            Metric::GuardRefused(i) => 2 + t + i.min(g - 1),
            Metric::Lockouts => 2 + t + g,
            Metric::SyncSuccesses => 3 + t + g,
            Metric::SyncFailures(i) => 4 + t + g + i.min(s - 1),
            Metric::SnapshotAgeSeconds => 4 + t + g + s,
            Metric::ProfilesLoaded => 5 + t + g + s,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Metric::SnapshotAgeSeconds | Metric::ProfilesLoaded => Kind::Gauge,
            _ => Kind::Counter,
        }
    }

    /// The name given to `proxy_define_metric` (Envoy adds `wasmcustom.`).
    pub fn stat_name(self) -> String {
        match self {
            Metric::TokensIssued => "tollgate_tokens_issued_total".into(),
            Metric::TokenRefused(i) => tagged("error", TOKEN_ERRORS[i.min(TOKEN_ERRORS.len() - 1)], TOKEN_REFUSED),
            Metric::GuardAllowed => "tollgate_guard_allowed_total".into(),
            Metric::GuardRefused(i) => tagged("cause", GUARD_CAUSES[i.min(GUARD_CAUSES.len() - 1)], GUARD_REFUSED),
            Metric::Lockouts => "tollgate_lockouts_total".into(),
            Metric::SyncSuccesses => "tollgate_sync_successes_total".into(),
            Metric::SyncFailures(i) => {
                tagged("cause", FailureKind::ALL[i.min(SYNC_CAUSES - 1)].as_str(), SYNC_FAILURES)
            }
            Metric::SnapshotAgeSeconds => "tollgate_snapshot_age_seconds".into(),
            Metric::ProfilesLoaded => "tollgate_profiles_loaded".into(),
        }
    }
}

fn tagged(tag: &str, value: &str, name: &str) -> String {
    format!("{tag}=.={value};.;{name}")
}

fn position(list: &[&str], value: &str) -> usize {
    list.iter().position(|v| *v == value).unwrap_or(list.len() - 1)
}

/// The guard's refusal cause.
pub fn guard_cause(e: &BearerError) -> &'static str {
    use JwtError::*;
    match e {
        BearerError::Missing => "missing",
        BearerError::InsufficientScope => "insufficient_scope",
        BearerError::Unavailable(_) => "unavailable",
        BearerError::InvalidToken(Malformed | BadHeader | BadClaims | MissingKeyId | SubjectMismatch) => "malformed",
        BearerError::InvalidToken(Algorithm) => "algorithm",
        BearerError::InvalidToken(UnknownKeyId) => "unknown_key",
        BearerError::InvalidToken(Signature) => "signature",
        BearerError::InvalidToken(Expired) => "expired",
        BearerError::InvalidToken(NotYetValid) => "not_yet_valid",
        BearerError::InvalidToken(Revoked) => "revoked",
    }
}

impl Outcome {
    pub fn metric(&self) -> Metric {
        match self {
            Outcome::TokenIssued => Metric::TokensIssued,
            Outcome::TokenRefused(e) => Metric::TokenRefused(position(&TOKEN_ERRORS, e.code())),
            Outcome::GuardAllowed => Metric::GuardAllowed,
            Outcome::GuardRefused(e) => Metric::GuardRefused(position(&GUARD_CAUSES, guard_cause(e))),
            Outcome::Lockout => Metric::Lockouts,
        }
    }
}

/// Position of a sync failure cause in [`Metric::SyncFailures`].
pub fn sync_failure_index(kind: FailureKind) -> usize {
    FailureKind::ALL.iter().position(|k| *k == kind).unwrap_or(SYNC_CAUSES - 1)
}

/// The snapshot age gauge: the stamp's age ([`crate::sync::snapshot_age_secs`]),
/// or, before any snapshot, seconds since the worker was configured, so an
/// alert on the age also fires when no snapshot ever arrives.
pub fn snapshot_age(now: u64, stamp_age: Option<u64>, configured_at: u64) -> u64 {
    stamp_age.unwrap_or_else(|| now.saturating_sub(configured_at))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn catalogue_indices_are_dense_and_names_unique() {
        let all = Metric::all();
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?}");
        }
        let names: std::collections::HashSet<String> = all.iter().map(|m| m.stat_name()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(all.iter().filter(|m| m.kind() == Kind::Gauge).count(), 2);
        assert_eq!(all.len(), 1 + TOKEN_ERRORS.len() + 1 + GUARD_CAUSES.len() + 2 + SYNC_CAUSES + 2);
        for (i, kind) in FailureKind::ALL.into_iter().enumerate() {
            assert_eq!(sync_failure_index(kind), i);
            let name = Metric::SyncFailures(i).stat_name();
            assert_eq!(name, format!("cause=.={};.;tollgate_sync_failures_total", kind.as_str()));
        }
    }

    /// Stat names are what Envoy's tag regex `(<tag>=\.=(.*?);\.;)` takes
    /// apart; after it, every name is a valid Prometheus metric name.
    #[test]
    fn names_carry_bounded_tags() {
        for m in Metric::all() {
            let name = m.stat_name();
            let base = match name.split_once(";.;") {
                Some((tag, base)) => {
                    let (k, v) = tag.split_once("=.=").unwrap();
                    assert!(TAGS.contains(&k), "{name}");
                    assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
                    base
                }
                None => &name,
            };
            assert!(base.starts_with("tollgate_"), "{name}");
            assert!(base.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert_eq!(m.kind() == Kind::Counter, base.ends_with("_total"), "{name}");
        }
        assert_eq!(Metric::TokenRefused(1).stat_name(), "error=.=invalid_client;.;tollgate_token_refused_total");
    }

    #[test]
    fn token_refusals_by_code() {
        let name = |e: TokenError| Outcome::TokenRefused(e).metric().stat_name();
        assert!(name(TokenError::MethodNotAllowed).starts_with("error=.=invalid_request;"));
        assert!(name(TokenError::BodyTooLarge).starts_with("error=.=invalid_request;"));
        assert!(name(TokenError::UnsupportedGrantType).starts_with("error=.=unsupported_grant_type;"));
        let e = TokenError::InvalidClient { cause: crate::error::InvalidClient::Failed, basic: true };
        assert!(name(e).starts_with("error=.=invalid_client;"));
        assert!(name(TokenError::Unavailable("x")).starts_with("error=.=temporarily_unavailable;"));
        let locked = TokenError::LockedOut { retry_after: 5 };
        assert!(name(locked).starts_with("error=.=temporarily_unavailable;"));
        assert_eq!(position(&TOKEN_ERRORS, "slow_down"), TOKEN_ERRORS.len() - 1);
    }

    #[test]
    fn guard_causes() {
        let cause = |e: BearerError| guard_cause(&e);
        let invalid = BearerError::InvalidToken;
        assert_eq!(cause(BearerError::Missing), "missing");
        assert_eq!(cause(BearerError::InsufficientScope), "insufficient_scope");
        assert_eq!(cause(BearerError::Unavailable("x")), "unavailable");
        assert_eq!(cause(invalid(JwtError::Malformed)), "malformed");
        assert_eq!(cause(invalid(JwtError::BadClaims)), "malformed");
        assert_eq!(cause(invalid(JwtError::Algorithm)), "algorithm");
        assert_eq!(cause(invalid(JwtError::UnknownKeyId)), "unknown_key");
        assert_eq!(cause(invalid(JwtError::Signature)), "signature");
        assert_eq!(cause(invalid(JwtError::Expired)), "expired");
        assert_eq!(cause(invalid(JwtError::NotYetValid)), "not_yet_valid");
        assert_eq!(cause(invalid(JwtError::Revoked)), "revoked");
        for c in GUARD_CAUSES {
            let m = Metric::GuardRefused(position(&GUARD_CAUSES, c));
            assert!(m.stat_name().starts_with(&format!("cause=.={c};.;")));
        }
    }

    #[test]
    fn age() {
        assert_eq!(snapshot_age(100, Some(10), 50), 10);
        assert_eq!(snapshot_age(100, None, 50), 50);
        assert_eq!(snapshot_age(40, None, 50), 0, "a clock step back is not negative age");
    }
}
