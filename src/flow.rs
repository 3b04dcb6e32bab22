//! One HTTP request's path through the filter, written against a small host
//! trait so the whole decision logic runs natively against a fake host. The
//! proxy-wasm layer (`host`) implements [`RequestHost`] with real hostcalls.

use std::rc::Rc;

use crate::config::{Config, IdentitySetBy, IDENTITY_CLIENT_ID_PROPERTY, IDENTITY_PROFILE_ID_PROPERTY};
use crate::discovery;
use crate::error::{BearerError, TokenError};
use crate::guard::{self, VerifiedCache};
use crate::headers::HeaderMap;
use crate::media_type::BodyFormat;
use crate::metrics::Outcome;
use crate::path;
use crate::profile::ProfileLookup;
use crate::response::LocalResponse;
use crate::shared::SharedStore;
use crate::token_endpoint;
use crate::token_request::{self, ClientCredentials, RequestHead};

/// What the host offers a request. The profile set comes with its
/// generation (see [`guard`]) or the reason none is usable.
pub trait RequestHost {
    /// Every request header, in order: read once per request, in the headers
    /// callback (the only one where Envoy hands the map out once the headers
    /// moved on).
    fn request_headers(&self) -> HeaderMap;
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// Publishes a value for the rest of the request's processing (Envoy:
    /// filter state `wasm.<name>`).
    fn set_property(&mut self, name: &str, value: &str);
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    fn respond(&mut self, response: LocalResponse);
    /// The wall clock in milliseconds: read once per request.
    fn now_millis(&self) -> u64;
    fn jti(&mut self) -> [u8; 16];
    /// `now_ms` is the request's one clock read: staleness is judged at the
    /// same instant as the token's lifetime.
    fn profiles(&mut self, now_ms: u64) -> Result<(Rc<dyn ProfileLookup>, u64), &'static str>;
    /// The downstream peer (`source.address`, `ip:port`), for the lockout's
    /// per-source bucket; asked for only when that bucket is needed.
    fn source_address(&self) -> Option<String>;
    /// Shared data (all workers of this Envoy), where lockout counters live.
    fn shared_store(&self) -> &dyn SharedStore;
    /// Outcome logging (debug level). Formatted only if the host will keep
    /// it. Callers never pass secrets or tokens.
    fn log(&self, message: std::fmt::Arguments);
    /// Counts an outcome (Envoy metrics; see [`crate::metrics`]).
    fn record(&mut self, outcome: Outcome);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Headers,
    /// A token request waiting for the rest of its body; `received` is the
    /// size of what the host has buffered so far.
    /// `authorization`: the one header the body's reading needs.
    TokenBody { authorization: Option<String>, format: BodyFormat, received: usize },
    /// Answered locally: nothing more goes upstream.
    Answered,
    /// Authorized or public: the filter is out of the way.
    Passed,
}

#[derive(Debug, Default)]
pub struct RequestFlow {
    state: State,
}

impl RequestFlow {
    pub fn on_request_headers(
        &mut self,
        host: &mut impl RequestHost,
        cfg: &Config,
        cache: &mut VerifiedCache,
        end_of_stream: bool,
    ) -> Action {
        let headers = host.request_headers();
        let [path, authorization] = headers.get_each([":path", "authorization"]);
        let path = path.unwrap_or_default();
        if path::strip_query(path) == cfg.token_path {
            return self.token_headers(host, cfg, headers, end_of_stream);
        }
        // RFC 8414 metadata: public, answered here, never routed.
        if discovery::is_discovery_path(path) {
            let (method, authority) = (headers.get(":method").unwrap_or_default(), headers.get(":authority"));
            return self.answer(host, discovery::respond(method, path, authority, &cfg.issuers));
        }
        // Identity headers are ours alone: client-sent copies and look-alikes
        // go on every path that reaches the upstream, whatever the proxy's
        // own underscore policy.
        let ours = [cfg.client_id_header.as_str(), cfg.profile_id_header.as_str()];
        for name in headers.look_alikes(&ours) {
            host.set_request_header(name, None);
        }
        if cfg.is_public(path) {
            // A token the filter did not consume does not leave either.
            if !cfg.keep_authorization && authorization.is_some() {
                host.set_request_header("authorization", None);
            }
            self.state = State::Passed;
            return Action::Continue;
        }
        let now_ms = host.now_millis();
        let now = now_ms / 1000;
        let outcome = host.profiles(now_ms).map_err(BearerError::Unavailable).and_then(|(set, generation)| {
            guard::authorize(authorization, path, &*set, generation, now, cfg.leeway, cache)
        });
        match outcome {
            Ok(profile) => {
                host.record(Outcome::GuardAllowed);
                match cfg.identity_set_by {
                    IdentitySetBy::Filter => {
                        host.set_request_header(&cfg.client_id_header, Some(&profile.client_id));
                        host.set_request_header(&cfg.profile_id_header, Some(&profile.id));
                        if !cfg.keep_authorization {
                            host.set_request_header("authorization", None);
                        }
                    }
                    // The route sets the headers and drops Authorization.
                    IdentitySetBy::Route => {
                        host.set_property(IDENTITY_CLIENT_ID_PROPERTY, &profile.client_id);
                        host.set_property(IDENTITY_PROFILE_ID_PROPERTY, &profile.id);
                    }
                }
                self.state = State::Passed;
                Action::Continue
            }
            Err(e) => {
                host.record(Outcome::GuardRefused(e));
                host.log(format_args!(
                    "bearer refused: {} {}: {}",
                    e.status(),
                    e.code().unwrap_or("-"),
                    e.description()
                ));
                self.answer(host, LocalResponse::bearer_error(e, &cfg.realm))
            }
        }
    }

    pub fn on_request_body(
        &mut self,
        host: &mut impl RequestHost,
        cfg: &Config,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match &mut self.state {
            State::Answered => Action::Pause,
            State::Headers | State::Passed => Action::Continue,
            State::TokenBody { .. } if body_size > cfg.max_body_bytes => {
                self.token_error(host, cfg, TokenError::BodyTooLarge)
            }
            // Buffer until the whole body is here; nothing goes upstream.
            State::TokenBody { received, .. } if !end_of_stream => {
                *received = body_size;
                Action::Pause
            }
            State::TokenBody { .. } => self.finish_token(host, cfg, body_size),
        }
    }

    /// Trailers end the request (HTTP/2 trailers carry END_STREAM; so does
    /// the trailer section of a chunked HTTP/1.1 body), and the body callback
    /// never sees `end_of_stream` then: a token request is answered here, or
    /// its buffered body and trailers would move on to the route.
    pub fn on_request_trailers(&mut self, host: &mut impl RequestHost, cfg: &Config) -> Action {
        match &self.state {
            State::Answered => Action::Pause,
            State::Headers | State::Passed => Action::Continue,
            State::TokenBody { received, .. } if *received > cfg.max_body_bytes => {
                self.token_error(host, cfg, TokenError::BodyTooLarge)
            }
            State::TokenBody { received, .. } => {
                let received = *received;
                self.finish_token(host, cfg, received)
            }
        }
    }

    fn token_headers(
        &mut self,
        host: &mut impl RequestHost,
        cfg: &Config,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Action {
        let [method, path, content_type, authorization, content_length] =
            headers.get_each([":method", ":path", "content-type", "authorization", "content-length"]);
        let head = RequestHead {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            content_type,
            authorization,
        };
        let format = match token_request::check_head(&head) {
            Ok(f) => f,
            Err(e) => return self.token_error(host, cfg, e),
        };
        let declared = content_length.and_then(|l| l.trim().parse::<usize>().ok());
        if declared.is_some_and(|l| l > cfg.max_body_bytes) {
            return self.token_error(host, cfg, TokenError::BodyTooLarge);
        }
        let had_authorization = authorization.is_some();
        self.state = State::TokenBody { authorization: authorization.map(str::to_owned), format, received: 0 };
        if end_of_stream {
            return self.finish_token(host, cfg, 0);
        }
        if cfg.hold_token_request_headers {
            Action::Pause
        } else {
            // The headers move on (to a local sink route) while the body is
            // buffered here; the credentials are not among them.
            if had_authorization {
                host.set_request_header("authorization", None);
            }
            Action::Continue
        }
    }

    /// Answers a token request whose whole body (`size` bytes) the host holds.
    fn finish_token(&mut self, host: &mut impl RequestHost, cfg: &Config, size: usize) -> Action {
        let State::TokenBody { authorization, format, .. } = std::mem::replace(&mut self.state, State::Answered) else {
            return Action::Pause;
        };
        let body = if size == 0 { Vec::new() } else { host.request_body(size).unwrap_or_default() };
        let outcome = token_request::parse(authorization.as_deref(), &format, &body).and_then(|creds| {
            let now_ms = host.now_millis();
            let (set, _) = host.profiles(now_ms).map_err(TokenError::Unavailable)?;
            issue_with_lockout(host, cfg, &creds, &*set, now_ms / 1000)
        });
        match outcome {
            // Success is not logged: the access log has it, and the hot path
            // stays free of a log-level hostcall.
            Ok(token) => {
                host.record(Outcome::TokenIssued);
                self.answer(host, LocalResponse::token(&token, cfg.token_lifetime))
            }
            Err(e) => self.token_error(host, cfg, e),
        }
    }

    fn token_error(&mut self, host: &mut impl RequestHost, cfg: &Config, e: TokenError) -> Action {
        host.record(Outcome::TokenRefused(e));
        host.log(format_args!("token refused: {} {}: {}", e.status(), e.code(), e.description()));
        self.answer(host, LocalResponse::token_error(e, &cfg.realm))
    }

    fn answer(&mut self, host: &mut impl RequestHost, response: LocalResponse) -> Action {
        host.respond(response);
        self.state = State::Answered;
        Action::Pause
    }
}

/// Client authentication behind the brute-force lockout ([`crate::lockout`]):
/// the lock is checked before the secret is, so a locked client gets the same
/// 429 with the right secret, and only authentication failures are counted.
fn issue_with_lockout(
    host: &mut impl RequestHost,
    cfg: &Config,
    creds: &ClientCredentials,
    set: &dyn ProfileLookup,
    now: u64,
) -> Result<String, TokenError> {
    let jti = host.jti();
    let Some(lock) = &cfg.lockout else {
        return token_endpoint::issue(creds, set, now, cfg.token_lifetime, &jti);
    };
    // One lookup for both the lock (is the client known?) and the secret.
    let profile = token_endpoint::lookup(creds, set);
    let known = profile.is_some().then_some(creds.client_id.as_str());
    let source = || host.source_address();
    lock.check(host.shared_store(), known, &source, now)
        .map_err(|l| TokenError::LockedOut { retry_after: l.retry_after })?;
    let outcome = token_endpoint::issue_to(creds, profile, now, cfg.token_lifetime, &jti);
    if let Err(TokenError::InvalidClient { .. }) = outcome {
        if let Some(l) = lock.record_failure(host.shared_store(), known, &source, now) {
            host.record(Outcome::Lockout);
            host.log(format_args!("token endpoint: locked out for {} s after repeated failures", l.retry_after));
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::b64;
    use crate::config::tests::static_config;
    use crate::profile::tests::record;
    use crate::shared::tests::MemStore;

    /// A fake host: a header map, a body, and what the filter did.
    #[derive(Default)]
    struct Fake {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        response: Option<LocalResponse>,
        now: u64,
        counter: u8,
        unavailable: bool,
        set: Option<Rc<crate::profile::ProfileSet>>,
        outcomes: Vec<Outcome>,
        store: MemStore,
        source: Option<String>,
        clock_reads: std::cell::Cell<u32>,
        profiles_at: Vec<u64>,
        properties: Vec<(String, String)>,
        mutations: u32,
    }

    impl Fake {
        fn request_header(&self, name: &str) -> Option<String> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        }
    }

    impl RequestHost for Fake {
        fn request_headers(&self) -> HeaderMap {
            let pairs: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            HeaderMap::from_pairs(&pairs)
        }
        fn set_request_header(&mut self, name: &str, value: Option<&str>) {
            self.mutations += 1;
            self.headers.retain(|(n, _)| n != name);
            if let Some(v) = value {
                self.headers.push((name.into(), v.into()));
            }
        }
        fn request_body(&self, size: usize) -> Option<Vec<u8>> {
            Some(self.body[..size.min(self.body.len())].to_vec())
        }
        fn respond(&mut self, response: LocalResponse) {
            assert!(self.response.is_none(), "responded twice");
            self.response = Some(response);
        }
        fn set_property(&mut self, name: &str, value: &str) {
            self.properties.push((name.into(), value.into()));
        }
        fn now_millis(&self) -> u64 {
            self.clock_reads.set(self.clock_reads.get() + 1);
            self.now * 1000
        }
        fn jti(&mut self) -> [u8; 16] {
            self.counter += 1;
            [self.counter; 16]
        }
        fn profiles(&mut self, now_ms: u64) -> Result<(Rc<dyn ProfileLookup>, u64), &'static str> {
            self.profiles_at.push(now_ms);
            if self.unavailable {
                return Err("no profile snapshot has been loaded yet");
            }
            let set = self
                .set
                .get_or_insert_with(|| Rc::new(crate::profile::ProfileSet::from_records(&[record(1)]).unwrap()));
            Ok((Rc::clone(set) as Rc<dyn ProfileLookup>, 1))
        }
        fn source_address(&self) -> Option<String> {
            self.source.clone()
        }
        fn shared_store(&self) -> &dyn SharedStore {
            &self.store
        }
        fn log(&self, message: std::fmt::Arguments) {
            let message = message.to_string();
            assert!(!message.contains("secret-1"), "secret in log: {message}");
        }
        fn record(&mut self, outcome: Outcome) {
            self.outcomes.push(outcome);
        }
    }

    fn fake(headers: &[(&str, &str)], body: &str) -> Fake {
        Fake {
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
            now: 1_700_000_000,
            ..Default::default()
        }
    }

    fn json(r: &LocalResponse) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Runs headers then one body callback, like Envoy with a small body.
    fn token(cfg: &Config, host: &mut Fake) -> (Action, Action) {
        let mut flow = RequestFlow::default();
        let mut cache = VerifiedCache::new(16);
        let a = flow.on_request_headers(host, cfg, &mut cache, host.body.is_empty());
        let b = if host.body.is_empty() { a } else { flow.on_request_body(host, cfg, host.body.len(), true) };
        (a, b)
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    #[test]
    fn token_then_guard() {
        let cfg = static_config(serde_json::json!({"hold_token_request_headers": true}));
        let basic = format!("Basic {}", b64::std_encode(b"client-1:secret-1"));
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("authorization", &basic)],
            "grant_type=client_credentials",
        );
        assert_eq!(token(&cfg, &mut h), (Action::Pause, Action::Pause));
        let r = h.response.unwrap();
        assert_eq!(r.status, 200);
        let at = json(&r)["access_token"].as_str().unwrap().to_owned();

        let auth = format!("Bearer {at}");
        let mut g = fake(
            &[(":method", "GET"), (":path", "/sales/x"), ("authorization", &auth), ("x-tollgate-client-id", "forged")],
            "",
        );
        let mut cache = VerifiedCache::new(16);
        let a = RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
        assert_eq!(a, Action::Continue);
        assert!(g.response.is_none());
        assert_eq!(g.request_header("x-tollgate-client-id").as_deref(), Some("client-1"));
        assert_eq!(g.request_header("x-tollgate-profile-id"), Some(record(1).id));
        assert_eq!(g.request_header("authorization"), None);
    }

    /// `identity_headers.set_by: route`: the identity goes out as filter
    /// state and no header changes, bar client-sent copies and look-alikes of
    /// the identity headers, which the filter still drops.
    #[test]
    fn route_mode_publishes_the_identity_and_mutates_nothing() {
        let cfg = static_config(serde_json::json!({"identity_headers": {"set_by": "route"}}));
        let basic = format!("Basic {}", b64::std_encode(b"client-1:secret-1"));
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("authorization", &basic)],
            "grant_type=client_credentials",
        );
        token(&cfg, &mut h);
        let at = json(h.response.as_ref().unwrap())["access_token"].as_str().unwrap().to_owned();
        let auth = format!("Bearer {at}");
        let mut cache = VerifiedCache::new(16);

        let mut g = fake(&[(":method", "GET"), (":path", "/sales/x"), ("authorization", &auth)], "");
        assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
        assert_eq!(g.mutations, 0);
        let published = [
            (IDENTITY_CLIENT_ID_PROPERTY.to_owned(), "client-1".to_owned()),
            (IDENTITY_PROFILE_ID_PROPERTY.to_owned(), record(1).id),
        ];
        assert_eq!(g.properties, published);

        let mut g = fake(
            &[
                (":method", "GET"),
                (":path", "/sales/x"),
                ("authorization", &auth),
                ("x-tollgate-client-id", "forged"),
                ("X_Tollgate_Profile_Id", "forged"),
            ],
            "",
        );
        assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
        assert_eq!(g.request_header("x-tollgate-client-id"), None);
        assert_eq!(g.request_header("X_Tollgate_Profile_Id"), None);
        assert_eq!(g.properties, published);

        // Refused: nothing published.
        let mut g = fake(&[(":method", "GET"), (":path", "/hr/x"), ("authorization", &auth)], "");
        RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
        assert_eq!(g.response.as_ref().unwrap().status, 403);
        assert!(g.properties.is_empty());
    }

    /// The clock is a hostcall: one read per request serves the profile
    /// set's staleness check and the token's lifetime alike.
    #[test]
    fn one_clock_read_per_request() {
        let cfg = static_config(serde_json::json!({}));
        let basic = format!("Basic {}", b64::std_encode(b"client-1:secret-1"));
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("authorization", &basic)],
            "grant_type=client_credentials",
        );
        token(&cfg, &mut h);
        assert_eq!((h.clock_reads.get(), &h.profiles_at[..]), (1, &[h.now * 1000][..]));
        let at = json(h.response.as_ref().unwrap())["access_token"].as_str().unwrap().to_owned();

        let auth = format!("Bearer {at}");
        let mut g = fake(&[(":method", "GET"), (":path", "/sales/x"), ("authorization", &auth)], "");
        let mut cache = VerifiedCache::new(16);
        assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
        assert_eq!((g.clock_reads.get(), &g.profiles_at[..]), (1, &[g.now * 1000][..]));
    }

    #[test]
    fn fallback_mode_continues_without_credentials() {
        let cfg = static_config(serde_json::json!({}));
        let basic = format!("Basic {}", b64::std_encode(b"client-1:secret-1"));
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("authorization", &basic)],
            "grant_type=client_credentials",
        );
        let mut flow = RequestFlow::default();
        let mut cache = VerifiedCache::new(16);
        assert_eq!(flow.on_request_headers(&mut h, &cfg, &mut cache, false), Action::Continue);
        assert_eq!(h.request_header("authorization"), None, "credentials never go upstream");
        assert_eq!(flow.on_request_body(&mut h, &cfg, 5, false), Action::Pause);
        assert!(h.response.is_none());
        let n = h.body.len();
        assert_eq!(flow.on_request_body(&mut h, &cfg, n, true), Action::Pause);
        assert_eq!(h.response.as_ref().unwrap().status, 200);
        // Later callbacks keep the body from the sink.
        assert_eq!(flow.on_request_body(&mut h, &cfg, n, true), Action::Pause);
    }

    #[test]
    fn token_errors() {
        let cfg = static_config(serde_json::json!({"max_token_request_bytes": 256}));
        let mut h = fake(&[(":method", "GET"), (":path", "/oauth2/token")], "");
        token(&cfg, &mut h);
        assert_eq!(h.response.as_ref().unwrap().status, 405);

        let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], &"a".repeat(300));
        token(&cfg, &mut h);
        let r = h.response.unwrap();
        assert_eq!((r.status, json(&r)["error"].as_str()), (413, Some("invalid_request")));

        let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("content-length", "100000")], "x");
        token(&cfg, &mut h);
        assert_eq!(h.response.unwrap().status, 413);

        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM],
            "grant_type=client_credentials&client_id=client-1&client_secret=nope",
        );
        token(&cfg, &mut h);
        let r = h.response.unwrap();
        assert_eq!((r.status, json(&r)["error"].as_str()), (401, Some("invalid_client")));
        assert_eq!(r.header("www-authenticate"), None);

        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM],
            "grant_type=client_credentials&client_id=client-1&client_secret=secret-1",
        );
        h.unavailable = true;
        token(&cfg, &mut h);
        let r = h.response.unwrap();
        assert_eq!((r.status, json(&r)["error"].as_str()), (503, Some("temporarily_unavailable")));
    }

    #[test]
    fn guard_errors_and_public_paths() {
        let cfg = static_config(serde_json::json!({"public_paths": ["/healthz"]}));
        let mut cache = VerifiedCache::new(16);
        let mut g = fake(&[(":method", "GET"), (":path", "/sales/x")], "");
        assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Pause);
        let r = g.response.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"tollgate\""));

        let mut g = fake(&[(":method", "GET"), (":path", "/healthz"), ("x-tollgate-profile-id", "forged")], "");
        assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
        assert_eq!(g.request_header("x-tollgate-profile-id"), None);

        let mut g = fake(&[(":method", "GET"), (":path", "/sales/x"), ("authorization", "Bearer x.y.z")], "");
        g.unavailable = true;
        RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
        assert_eq!(g.response.unwrap().status, 503);
    }

    #[test]
    fn outcomes_are_reported_once_per_request() {
        use crate::metrics::Outcome as O;
        let cfg = static_config(serde_json::json!({"public_paths": ["/healthz"]}));
        let basic = format!("Basic {}", b64::std_encode(b"client-1:secret-1"));
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM, ("authorization", &basic)],
            "grant_type=client_credentials",
        );
        token(&cfg, &mut h);
        assert_eq!(h.outcomes, [O::TokenIssued]);
        let at = json(h.response.as_ref().unwrap())["access_token"].as_str().unwrap().to_owned();

        let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], "grant_type=password");
        token(&cfg, &mut h);
        assert_eq!(h.outcomes, [O::TokenRefused(TokenError::UnsupportedGrantType)]);
        let mut h = fake(&[(":method", "GET"), (":path", "/oauth2/token")], "");
        token(&cfg, &mut h);
        assert_eq!(h.outcomes, [O::TokenRefused(TokenError::MethodNotAllowed)]);

        let mut cache = VerifiedCache::new(16);
        let mut guarded = |path: &str, auth: Option<&str>| {
            let mut headers = vec![(":method", "GET"), (":path", path)];
            headers.extend(auth.map(|a| ("authorization", a)));
            let mut g = fake(&headers, "");
            RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
            g.outcomes
        };
        let bearer = format!("Bearer {at}");
        assert_eq!(guarded("/sales/x", Some(&bearer)), [O::GuardAllowed]);
        assert_eq!(guarded("/sales/x", Some(&bearer)), [O::GuardAllowed], "cache hits count too");
        assert_eq!(guarded("/hr/x", Some(&bearer)), [O::GuardRefused(BearerError::InsufficientScope)]);
        assert_eq!(guarded("/sales/x", None), [O::GuardRefused(BearerError::Missing)]);
        let dot = bearer.rfind('.').unwrap() + 1;
        let flipped = if &bearer[dot..=dot] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &bearer[..dot], &bearer[dot + 1..]);
        let [O::GuardRefused(e)] = guarded("/sales/x", Some(&tampered))[..] else { panic!() };
        assert_eq!(crate::metrics::guard_cause(&e), "signature");
        assert!(guarded("/healthz", None).is_empty(), "public paths are not the guard's");
        assert!(guarded("/.well-known/oauth-authorization-server", None).is_empty());
    }

    #[test]
    fn discovery_is_answered_inline_and_public() {
        let cfg = static_config(
            serde_json::json!({"issuers": ["https://api.example.com"], "public_paths": ["/.well-known/"]}),
        );
        let mut cache = VerifiedCache::new(16);
        let mut ask = |method: &str, path: &str, authority: &str| {
            let mut g = fake(
                &[(":method", method), (":path", path), (":authority", authority), ("x-tollgate-client-id", "forged")],
                "",
            );
            let a = RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
            assert_eq!(a, Action::Pause, "never routed");
            g.response.unwrap()
        };
        let r = ask("GET", "/.well-known/oauth-authorization-server", "API.example.com");
        assert_eq!(r.status, 200);
        assert_eq!(json(&r)["token_endpoint"], "https://api.example.com/oauth2/token");
        assert_eq!(ask("GET", "/.well-known/oauth-authorization-server", "evil.example").status, 404);
        assert_eq!(ask("GET", "/.well-known/openid-configuration", "api.example.com").status, 404);
        assert_eq!(ask("DELETE", "/.well-known/oauth-authorization-server", "api.example.com").status, 405);
    }

    fn token_creds_body() -> &'static str {
        "grant_type=client_credentials&client_id=client-1&client_secret=secret-1"
    }

    #[test]
    fn trailers_end_the_token_body_in_both_modes() {
        // HTTP/2 HEADERS → DATA → trailers (END_STREAM), or chunked HTTP/1.1
        // with a trailer section: the body callback never sees end_of_stream.
        for hold in [true, false] {
            let cfg = static_config(serde_json::json!({"hold_token_request_headers": hold}));
            for (body, status) in [(token_creds_body(), 200), ("{", 400), ("", 400)] {
                let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], body);
                let mut flow = RequestFlow::default();
                let mut cache = VerifiedCache::new(16);
                let first = flow.on_request_headers(&mut h, &cfg, &mut cache, false);
                assert_eq!(first, if hold { Action::Pause } else { Action::Continue });
                if !body.is_empty() {
                    assert_eq!(flow.on_request_body(&mut h, &cfg, body.len(), false), Action::Pause);
                }
                assert!(h.response.is_none());
                assert_eq!(flow.on_request_trailers(&mut h, &cfg), Action::Pause, "trailers never continue");
                let r = h.response.take().expect("answered at the trailers");
                assert_eq!(r.status, status, "hold={hold} body={body:?}");
                // Anything later stays here too, and no second answer.
                assert_eq!(flow.on_request_trailers(&mut h, &cfg), Action::Pause);
                assert_eq!(flow.on_request_body(&mut h, &cfg, body.len(), true), Action::Pause);
                assert!(h.response.is_none());
            }
        }
    }

    #[test]
    fn trailers_over_the_body_limit_are_refused() {
        let cfg = static_config(serde_json::json!({"max_token_request_bytes": 256}));
        let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], "x");
        let mut flow = RequestFlow::default();
        let mut cache = VerifiedCache::new(16);
        flow.on_request_headers(&mut h, &cfg, &mut cache, false);
        assert_eq!(flow.on_request_body(&mut h, &cfg, 256, false), Action::Pause);
        // The host buffered past the limit without a body callback saying so.
        flow.state = match std::mem::take(&mut flow.state) {
            State::TokenBody { authorization, format, .. } => State::TokenBody { authorization, format, received: 257 },
            other => other,
        };
        assert_eq!(flow.on_request_trailers(&mut h, &cfg), Action::Pause);
        assert_eq!(h.response.unwrap().status, 413);
    }

    #[test]
    fn trailers_elsewhere_pass() {
        let cfg = static_config(serde_json::json!({"public_paths": ["/healthz"]}));
        let mut g = fake(&[(":method", "POST"), (":path", "/healthz")], "");
        let mut flow = RequestFlow::default();
        let mut cache = VerifiedCache::new(16);
        assert_eq!(flow.on_request_headers(&mut g, &cfg, &mut cache, false), Action::Continue);
        assert_eq!(flow.on_request_trailers(&mut g, &cfg), Action::Continue);
        assert!(g.response.is_none());
    }

    #[test]
    fn look_alike_identity_headers_never_reach_the_upstream() {
        let cfg = static_config(serde_json::json!({"public_paths": ["/healthz"]}));
        let forged = [
            ("x_tollgate_client_id", "admin"),
            ("X_Tollgate_Profile_Id", "admin"),
            ("x-tollgate_client-id", "admin"),
            ("X-TOLLGATE-CLIENT-ID", "admin"),
            ("x_tollgate_client_id", "again"),
        ];
        let kept = ("x_tollgate_client_idx", "not ours");
        let token = {
            let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], token_creds_body());
            token(&cfg, &mut h);
            json(&h.response.unwrap())["access_token"].as_str().unwrap().to_owned()
        };
        let auth = format!("Bearer {token}");
        for (path, authorization) in [("/healthz", None), ("/sales/x", Some(auth.as_str()))] {
            let mut headers = vec![(":method", "GET"), (":path", path), kept];
            headers.extend(forged);
            headers.extend(authorization.map(|a| ("authorization", a)));
            let mut g = fake(&headers, "");
            let mut cache = VerifiedCache::new(16);
            assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
            let fold = |n: &str| n.to_ascii_lowercase().replace('_', "-");
            let left: Vec<_> = g.headers.iter().filter(|(n, _)| fold(n).starts_with("x-tollgate-")).collect();
            let want: Vec<(String, String)> = match authorization {
                None => vec![],
                Some(_) => vec![
                    ("x-tollgate-client-id".into(), "client-1".into()),
                    ("x-tollgate-profile-id".into(), record(1).id),
                ],
            };
            let mut left: Vec<(String, String)> = left.into_iter().filter(|(n, _)| n != kept.0).cloned().collect();
            left.sort();
            assert_eq!(left, want, "{path}");
            assert_eq!(g.request_header(kept.0).as_deref(), Some(kept.1), "other headers stay");
        }
    }

    #[test]
    fn public_paths_drop_the_bearer_token_unless_kept() {
        for (keep, want) in [(false, None), (true, Some("Bearer a.b.c"))] {
            let cfg = static_config(serde_json::json!({"public_paths": ["/public/"], "keep_authorization": keep}));
            let mut g = fake(&[(":method", "GET"), (":path", "/public/x"), ("authorization", "Bearer a.b.c")], "");
            let mut cache = VerifiedCache::new(16);
            assert_eq!(RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true), Action::Continue);
            assert_eq!(g.request_header("authorization").as_deref(), want);
        }
    }

    #[test]
    fn no_token_gets_a_challenge_without_an_error_code() {
        let cfg = static_config(serde_json::json!({}));
        let mut g = fake(&[(":method", "GET"), (":path", "/sales/x")], "");
        let mut cache = VerifiedCache::new(16);
        RequestFlow::default().on_request_headers(&mut g, &cfg, &mut cache, true);
        let r = g.response.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"tollgate\""));
        assert!(json(&r).get("error").is_none(), "RFC 6750 §3.1");
    }

    /// A form token request for `client_id`/`secret`, sharing `store` (as the
    /// workers of one Envoy share shared data), from `source`.
    fn attempt(cfg: &Config, store: &MemStore, source: &str, client_id: &str, secret: &str, now: u64) -> LocalResponse {
        let mut h = fake(
            &[(":method", "POST"), (":path", "/oauth2/token"), FORM],
            &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
        );
        h.store = store.clone();
        h.source = Some(source.to_owned());
        h.now = now;
        token(cfg, &mut h);
        h.response.unwrap()
    }

    #[test]
    fn a_lockout_is_counted_once_and_its_429s_as_refusals() {
        use crate::metrics::Outcome as O;
        let cfg = static_config(serde_json::json!({"lockout": {"max_failures": 2}}));
        let store = MemStore::default();
        let mut outcomes = Vec::new();
        for secret in ["nope", "nope", "secret-1"] {
            let mut h = fake(
                &[(":method", "POST"), (":path", "/oauth2/token"), FORM],
                &format!("grant_type=client_credentials&client_id=client-1&client_secret={secret}"),
            );
            h.store = store.clone();
            h.source = Some("10.0.0.1:1".into());
            token(&cfg, &mut h);
            outcomes.extend(h.outcomes);
        }
        let invalid = |e: &O| matches!(e, O::TokenRefused(TokenError::InvalidClient { .. }));
        assert!(invalid(&outcomes[0]) && invalid(&outcomes[2]), "{outcomes:?}");
        assert_eq!(outcomes[1], O::Lockout, "the failure that locks");
        assert!(matches!(outcomes[3], O::TokenRefused(TokenError::LockedOut { .. })), "{outcomes:?}");
        assert_eq!(outcomes.len(), 4);
    }

    #[test]
    fn lockout_answers_429_whatever_the_secret_then_lets_go() {
        let cfg =
            static_config(serde_json::json!({"lockout": {"max_failures": 3, "base_seconds": 5, "max_seconds": 20}}));
        let store = MemStore::default();
        let t = 1_700_000_000;
        for _ in 0..3 {
            assert_eq!(attempt(&cfg, &store, "10.0.0.1:1", "client-1", "nope", t).status, 401);
        }
        let wrong = attempt(&cfg, &store, "10.0.0.1:1", "client-1", "nope", t + 1);
        let right = attempt(&cfg, &store, "10.0.0.2:1", "client-1", "secret-1", t + 1);
        assert_eq!((wrong.status, wrong.header("retry-after")), (429, Some("4")));
        assert_eq!(wrong, right, "no oracle: the same answer for the right secret");
        assert_eq!(json(&right)["error"], "temporarily_unavailable");
        assert_eq!(attempt(&cfg, &store, "10.0.0.1:1", "client-1", "secret-1", t + 5).status, 200);
        // The next lock doubles.
        for _ in 0..3 {
            attempt(&cfg, &store, "10.0.0.1:1", "client-1", "nope", t + 6);
        }
        assert_eq!(
            attempt(&cfg, &store, "10.0.0.1:1", "client-1", "secret-1", t + 6).header("retry-after"),
            Some("10")
        );
    }

    #[test]
    fn unknown_client_ids_lock_their_source_not_known_clients() {
        let cfg = static_config(serde_json::json!({"lockout": {"per_source_max_failures": 4}}));
        let store = MemStore::default();
        let t = 1_700_000_000;
        for i in 0..4 {
            assert_eq!(attempt(&cfg, &store, "192.0.2.9:7", &format!("spray-{i}"), "x", t).status, 401);
        }
        let r = attempt(&cfg, &store, "192.0.2.9:8", "spray-99", "x", t);
        assert_eq!((r.status, r.header("retry-after")), (429, Some("60")));
        assert_eq!(attempt(&cfg, &store, "192.0.2.10:7", "spray-99", "x", t).status, 401, "other source");
        assert_eq!(attempt(&cfg, &store, "192.0.2.9:7", "client-1", "secret-1", t).status, 200, "known client");
    }

    #[test]
    fn lockout_disabled_and_malformed_requests_do_not_count() {
        let cfg = static_config(serde_json::json!({"lockout": {"enabled": false}}));
        let store = MemStore::default();
        for _ in 0..50 {
            assert_eq!(attempt(&cfg, &store, "10.0.0.1:1", "client-1", "nope", 0).status, 401);
        }
        assert!(store.0.borrow().is_empty());
        let cfg = static_config(serde_json::json!({"lockout": {"max_failures": 1}}));
        for _ in 0..5 {
            let mut h = fake(&[(":method", "POST"), (":path", "/oauth2/token"), FORM], "grant_type=password");
            h.store = store.clone();
            token(&cfg, &mut h);
            assert_eq!(h.response.unwrap().status, 400);
        }
        assert!(store.0.borrow().is_empty(), "only authentication failures count");
        assert_eq!(attempt(&cfg, &store, "10.0.0.1:1", "client-1", "secret-1", 0).status, 200);
    }
}
