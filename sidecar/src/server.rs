//! The HTTP server: admin API, data API (snapshot + long-poll change feed)
//! and health endpoints.
//!
//! Store work runs on tokio's blocking pool behind one `Mutex` around the
//! store. A `watch` channel carries the current store revision: admin
//! mutations publish their new revision at once; writes made elsewhere (the
//! CLI, other sidecars sharing a PostgreSQL store) arrive by `LISTEN` on
//! PostgreSQL, and a background poll of the revision (every 100 ms on
//! SQLite, a slow backstop on PostgreSQL) catches anything else. Every
//! waiting long-poll wakes on a new revision.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::{bearer_token, TokenDigest};
use crate::store::{postgres, ProfileStore, StoreError, StoreSpec};
use crate::views;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Long-poll wait when `wait` is not given, in seconds.
pub const DEFAULT_WAIT_SECS: u64 = 25;
/// Longest long-poll wait, in seconds.
pub const MAX_WAIT_SECS: u64 = 55;
/// How often a SQLite database is polled for writes made by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often a PostgreSQL store's revision is polled as a backstop to
/// `LISTEN` (a notification lost with a connection is caught up on
/// reconnect; this covers anything else).
pub const PG_BACKSTOP_INTERVAL: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything `serve` needs.
#[derive(Debug)]
pub struct ServeConfig {
    /// The store: a SQLite file or a PostgreSQL URL.
    pub store: StoreSpec,
    /// The key file the signing keys are sealed with.
    pub key_file: PathBuf,
    /// How often the store revision is polled; `None` for the engine's
    /// default ([`POLL_INTERVAL`], [`PG_BACKSTOP_INTERVAL`]).
    pub poll_interval: Option<Duration>,
    /// Address to bind, e.g. `127.0.0.1:8081` (port 0 picks a free port).
    pub listen: String,
    /// Admin API bearer token.
    pub admin_token: TokenDigest,
    /// Data API bearer token.
    pub data_token: TokenDigest,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the admin token and the data token must differ")]
    SameTokens,
    #[error("cannot open database {path}: {source}")]
    Db { path: String, source: StoreError },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Writes one line to stderr, ignoring failures (logging must never panic).
pub fn log_line(msg: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "tollgate-sidecar: {msg}");
}

macro_rules! log {
    ($($arg:tt)*) => { $crate::server::log_line(format_args!($($arg)*)) };
}

type Store = Box<dyn ProfileStore>;

struct AppState {
    store: Arc<Mutex<Store>>,
    admin_token: TokenDigest,
    data_token: TokenDigest,
    revision: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
}

type SharedState = Arc<AppState>;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    if config.admin_token == config.data_token {
        return Err(ServeError::SameTokens);
    }
    // Opened and first read outside the runtime: the PostgreSQL driver
    // blocks, which only the blocking pool may do once the runtime runs.
    let mut store = config
        .store
        .open(&config.key_file)
        .map_err(|source| ServeError::Db { path: config.store.describe(), source })?;
    for exposure in store.exposures() {
        log!("warning: {exposure}");
    }
    let initial_revision =
        store.revision().map_err(|source| ServeError::Db { path: config.store.describe(), source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(config, store, initial_revision))
}

async fn serve(config: ServeConfig, store: Store, initial_revision: u64) -> Result<(), ServeError> {
    let described = store.describe();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.listen.clone(), source })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (revision_tx, _) = watch::channel(initial_revision);
    let state = Arc::new(AppState {
        store: Arc::new(Mutex::new(store)),
        admin_token: config.admin_token,
        data_token: config.data_token,
        revision: revision_tx,
        shutdown: shutdown_rx.clone(),
    });

    let (interval, change_listener) = match &config.store {
        StoreSpec::Sqlite(_) => (config.poll_interval.unwrap_or(POLL_INTERVAL), None),
        StoreSpec::Postgres(url) => {
            let pg = postgres::parse_config(url)
                .map_err(|source| ServeError::Db { path: config.store.describe(), source })?;
            let handle = spawn_listener(pg, state.clone(), shutdown_rx.clone()).map_err(ServeError::Runtime)?;
            (config.poll_interval.unwrap_or(PG_BACKSTOP_INTERVAL), Some(handle))
        }
    };
    let poller = tokio::spawn(poll_revision(state.clone(), shutdown_rx.clone(), interval));
    tokio::spawn(wait_for_signal(shutdown_tx));

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tollgate-sidecar listening on http://{addr}").map_err(ServeError::Stdout)?;
        out.flush().map_err(ServeError::Stdout)?;
    }
    log!("serving {described} at revision {initial_revision}");

    let app = router(state.clone());
    let mut graceful = shutdown_rx;
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        })
        .await;

    let _ = poller.await;
    if let Some(handle) = change_listener {
        // It holds the state; it notices the shutdown within a tick.
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    let store = Arc::clone(&state.store);
    drop(state);
    if let Ok(mutex) = Arc::try_unwrap(store) {
        let store = mutex.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.close()).await {
            log!("closing the database failed: {e}");
        }
    }
    log!("stopped");
    result.map_err(ServeError::Serve)
}

async fn wait_for_signal(shutdown: watch::Sender<bool>) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            log!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => log!("SIGINT received, shutting down"),
        _ = term => log!("SIGTERM received, shutting down"),
    }
    let _ = shutdown.send(true);
}

/// Follows a PostgreSQL store's notifications on a thread of its own (the
/// driver blocks), publishing every revision it hears of.
fn spawn_listener(
    config: ::postgres::Config,
    state: SharedState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pg-listen".into()).spawn(move || {
        let mut lost = false;
        postgres::listen(
            &config,
            |event| match event {
                postgres::ListenEvent::Connected => {
                    if lost {
                        log!("listening for store changes again; catching up");
                        lost = false;
                    }
                }
                postgres::ListenEvent::Revision(rev) => publish(&state, rev),
                postgres::ListenEvent::Lost(e) => {
                    if !lost {
                        log!("store change listener lost its connection, retrying: {e}");
                        lost = true;
                    }
                }
            },
            || *shutdown.borrow(),
        );
    })
}

/// Publishes the database revision every `interval`, so writes by other
/// processes wake long-polls even without a notification.
async fn poll_revision(state: SharedState, mut shutdown: watch::Receiver<bool>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        match with_store(&state, |s| s.revision()).await {
            Ok(rev) => {
                if failing {
                    log!("database answers again");
                    failing = false;
                }
                publish(&state, rev);
            }
            Err(e) => {
                if !failing {
                    log!("revision poll failed: {}", e.message);
                    failing = true;
                }
            }
        }
    }
}

fn publish(state: &AppState, rev: u64) {
    state.revision.send_if_modified(|current| {
        if *current == rev {
            false
        } else {
            *current = rev;
            true
        }
    });
}

fn router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/v1/profiles", get(admin_list).post(admin_create))
        .route("/admin/v1/profiles/{id}", get(admin_show).delete(admin_delete))
        .route("/admin/v1/profiles/{id}/rotate", post(admin_rotate))
        .route("/admin/v1/profiles/{id}/disable", post(admin_disable))
        .route("/admin/v1/profiles/{id}/enable", post(admin_enable))
        .route("/admin/v1/profiles/{id}/allowed_prefixes", put(admin_set_prefixes))
        .route("/data/v1/snapshot", get(data_snapshot))
        .route("/data/v1/changes", get(data_changes))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    log!("{method} {path} {} {}ms", response.status().as_u16(), started.elapsed().as_millis());
    response
}

// ---------------------------------------------------------------------------
// Errors

/// An error answer: `{"error":"<code>","message":"<readable>"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid bearer token")
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the profile store is unavailable; nothing was changed, retry later",
        )
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code, message: &self.message };
        let mut response = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_invalid_input() {
            ApiError::invalid(e.to_string())
        } else if e.is_not_found() {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        } else if e.is_conflict() {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        } else if e.is_unavailable() {
            log!("store unavailable: {e}");
            ApiError::unavailable()
        } else {
            log!("store error: {e}");
            ApiError::internal()
        }
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
        }
        Err(e) => {
            log!("cannot serialize a response: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                r#"{"error":"internal","message":"internal error"}"#,
            )
                .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

// ---------------------------------------------------------------------------
// Extractors

/// Proof that the request carried the admin token.
struct AdminAuth;
/// Proof that the request carried the data token.
struct DataAuth;

fn check_bearer(parts: &Parts, expected: &TokenDigest) -> Result<(), ApiError> {
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(ApiError::unauthorized)?;
    if expected.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

impl FromRequestParts<SharedState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        check_bearer(parts, &state.admin_token).map(|()| AdminAuth)
    }
}

impl FromRequestParts<SharedState> for DataAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        check_bearer(parts, &state.data_token).map(|()| DataAuth)
    }
}

/// The optional `If-Match: "<revision>"` of an admin mutation: the profile
/// revision its author last saw. A mismatch is refused with 409, so of two
/// admins editing the same profile the second learns it instead of
/// silently overwriting the first.
struct IfRevision(Option<u64>);

impl FromRequestParts<SharedState> for IfRevision {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &SharedState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfRevision(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        text.parse::<u64>()
            .map(|rev| IfRevision(Some(rev)))
            .map_err(|_| ApiError::invalid("If-Match must be a profile revision, e.g. If-Match: \"7\""))
    }
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| ApiError::invalid(format!("bad profile id in path: {}", e.body_text())))
}

fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::invalid(format!("cannot read request body: {}", e.body_text()))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("request body must be a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))
}

/// Runs `f` against the store on the blocking pool.
async fn with_store<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(&state.store);
    let joined = tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    })
    .await;
    match joined {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            log!("database task failed: {e}");
            Err(ApiError::internal())
        }
    }
}

/// Runs a mutation and publishes the resulting revision to long-pollers.
async fn mutate<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
{
    let (value, rev) = with_store(state, move |s| {
        let value = f(s)?;
        let rev = s.revision()?;
        Ok((value, rev))
    })
    .await?;
    publish(state, rev);
    Ok(value)
}

// ---------------------------------------------------------------------------
// Health

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    revision: u64,
}

async fn healthz() -> Response {
    json(StatusCode::OK, &Health { status: "ok" })
}

async fn readyz(State(state): State<SharedState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, with_store(&state, |s| s.revision())).await {
        Ok(Ok(revision)) => json(StatusCode::OK, &Ready { status: "ready", revision }),
        Ok(Err(_)) | Err(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorBody { error: "not_ready", message: "the database did not answer" },
        ),
    }
}

// ---------------------------------------------------------------------------
// Admin API

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    allowed_prefixes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixesBody {
    allowed_prefixes: Vec<String>,
}

async fn admin_list(_: AdminAuth, State(state): State<SharedState>) -> Result<Response, ApiError> {
    let snap = with_store(&state, |s| s.list()).await?;
    Ok(json(StatusCode::OK, &views::AdminList::new(&snap)))
}

async fn admin_create(
    _: AdminAuth,
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CreateBody = parse_body(body)?;
    let created = mutate(&state, move |s| s.create(&body.name, &body.allowed_prefixes)).await?;
    Ok(json(StatusCode::CREATED, &views::SecretEnvelope::new(&created)))
}

async fn admin_show(
    _: AdminAuth,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let profile = with_store(&state, move |s| s.get(&id)).await?;
    Ok(json(StatusCode::OK, &views::ProfileEnvelope::new(&profile)))
}

async fn admin_rotate(
    _: AdminAuth,
    IfRevision(if_revision): IfRevision,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let rotated = mutate(&state, move |s| s.rotate(&id, if_revision)).await?;
    Ok(json(StatusCode::OK, &views::SecretEnvelope::new(&rotated)))
}

async fn admin_disable(
    _: AdminAuth,
    IfRevision(if_revision): IfRevision,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let profile = mutate(&state, move |s| s.set_enabled(&id, false, if_revision)).await?;
    Ok(json(StatusCode::OK, &views::ProfileEnvelope::new(&profile)))
}

async fn admin_enable(
    _: AdminAuth,
    IfRevision(if_revision): IfRevision,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let profile = mutate(&state, move |s| s.set_enabled(&id, true, if_revision)).await?;
    Ok(json(StatusCode::OK, &views::ProfileEnvelope::new(&profile)))
}

async fn admin_set_prefixes(
    _: AdminAuth,
    IfRevision(if_revision): IfRevision,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let body: PrefixesBody = parse_body(body)?;
    let profile = mutate(&state, move |s| s.set_prefixes(&id, &body.allowed_prefixes, if_revision)).await?;
    Ok(json(StatusCode::OK, &views::ProfileEnvelope::new(&profile)))
}

async fn admin_delete(
    _: AdminAuth,
    IfRevision(if_revision): IfRevision,
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let deleted = mutate(&state, move |s| s.delete(&id, if_revision)).await?;
    Ok(json(StatusCode::OK, &views::Deleted { deleted: &deleted }))
}

// ---------------------------------------------------------------------------
// Data API

async fn data_snapshot(_: DataAuth, State(state): State<SharedState>) -> Result<Response, ApiError> {
    let (snap, unsealed) = with_store(&state, |s| Ok(views::data_snapshot(&s.snapshot()?, s.keyring()))).await?;
    report_unsealed(&unsealed);
    Ok(json(StatusCode::OK, &snap))
}

/// Profiles whose signing key did not unseal are sent as absent (their
/// tokens are refused); the operator must hear of each, every time.
fn report_unsealed(failed: &[crate::keyring::KeyringError]) {
    for e in failed {
        log!("error: {e}; the proxies are told it does not exist until it is rotated or deleted");
    }
}

/// Parsed `?since=N&wait=S`.
#[derive(Debug, PartialEq, Eq)]
struct ChangesQuery {
    since: u64,
    wait: Duration,
}

fn parse_changes_query(raw: Option<&str>) -> Result<ChangesQuery, ApiError> {
    let mut since = None;
    let mut wait = DEFAULT_WAIT_SECS;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "since" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| ApiError::invalid("since must be a non-negative integer revision"))?;
                since = Some(n);
            }
            "wait" => {
                let n =
                    value.parse::<i64>().map_err(|_| ApiError::invalid("wait must be an integer number of seconds"))?;
                wait = u64::try_from(n.max(0)).unwrap_or(0).min(MAX_WAIT_SECS);
            }
            _ => {}
        }
    }
    let since = since.ok_or_else(|| ApiError::invalid("the since query parameter is required"))?;
    Ok(ChangesQuery { since, wait: Duration::from_secs(wait) })
}

async fn data_changes(
    _: DataAuth,
    State(state): State<SharedState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_changes_query(raw.as_deref())?;
    let since = query.since;
    let deadline = tokio::time::Instant::now() + query.wait;
    // Subscribe before the first read so no notification can slip between
    // the read and the wait.
    let mut revisions = state.revision.subscribe();
    let mut shutdown = state.shutdown.clone();
    let answer = |(changes, unsealed): (tollgate::contract::Changes, Vec<crate::keyring::KeyringError>)| {
        report_unsealed(&unsealed);
        Ok(json(StatusCode::OK, &changes))
    };
    loop {
        revisions.borrow_and_update();
        let view = with_store(&state, move |s| Ok(views::data_changes(&s.changes_since(since)?, s.keyring()))).await?;
        if view.0.reset || view.0.revision > since || *shutdown.borrow() {
            return answer(view);
        }
        tokio::select! {
            changed = revisions.changed() => {
                if changed.is_err() {
                    // The sender is gone: the server is stopping.
                    return answer(view);
                }
            }
            stopping = shutdown.changed() => {
                if stopping.is_err() {
                    return answer(view);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                // Read again rather than answer from before the wait: an
                // empty 200 tells the proxy its snapshot is current, which
                // must not be claimed by a sidecar that lost its store
                // meanwhile (it answers 503, and the proxy's snapshot ages).
                let view =
                    with_store(&state, move |s| Ok(views::data_changes(&s.changes_since(since)?, s.keyring()))).await?;
                return answer(view);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<ChangesQuery, ApiError> {
        parse_changes_query(Some(s))
    }

    #[test]
    fn changes_query_parsing() {
        assert_eq!(q("since=5").unwrap(), ChangesQuery { since: 5, wait: Duration::from_secs(25) });
        assert_eq!(q("since=0&wait=3").unwrap().wait, Duration::from_secs(3));
        assert_eq!(q("wait=999&since=1").unwrap().wait, Duration::from_secs(55));
        assert_eq!(q("since=1&wait=-4").unwrap().wait, Duration::from_secs(0));
        assert_eq!(q("since=1&other=x").unwrap().since, 1);
        assert!(q("wait=3").is_err());
        assert!(q("since=-1").is_err());
        assert!(q("since=abc").is_err());
        assert!(q("since=1&wait=x").is_err());
        assert!(parse_changes_query(None).is_err());
    }
}
