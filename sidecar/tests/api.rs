//! HTTP API tests against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{request, request_raw, temp_db, Server, ADMIN, DATA};
use serde_json::{json, Value};
use tollgate_sidecar::store::ProfileStore;

const ADMIN_PROFILE_KEYS: &[&str] =
    &["allowed_prefixes", "client_id", "created_at", "enabled", "id", "kid", "name", "revision", "rotated_at"];

const DATA_PROFILE_KEYS: &[&str] =
    &["allowed_prefixes", "client_id", "client_secret_sha256", "disabled", "id", "kid", "signing_key"];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str().is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// 256 bits, base64url without padding.
fn is_secret(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn health_and_readiness_need_no_auth() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let r = server.get("/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("application/json")));
    let r = server.get("/readyz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ready", "revision": 0}));
    assert!(db.exists(), "database file created in a new directory");
}

#[test]
fn admin_crud_round_trip() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);

    // Create.
    let created = server.create("Sales reader", &["/sales/", "/hr/", "/sales/"]);
    assert_eq!(keys(&created), vec!["client_secret", "profile"]);
    let p = &created["profile"];
    assert_eq!(keys(p), ADMIN_PROFILE_KEYS);
    assert!(is_hex(&p["id"], 64));
    assert!(is_hex(&p["client_id"], 32));
    assert!(is_hex(&p["kid"], 64));
    assert!(is_secret(&created["client_secret"]));
    assert_eq!(p["name"], "Sales reader");
    assert_eq!(p["allowed_prefixes"], json!(["/sales/", "/hr/"]));
    assert_eq!(p["enabled"], true);
    assert!(p["created_at"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(p["rotated_at"], Value::Null);
    assert_eq!(p["revision"], 1);
    let id = p["id"].as_str().unwrap().to_string();
    let client_id = p["client_id"].as_str().unwrap().to_string();

    // List.
    let second = server.create("second", &["/"]);
    let r = server.admin("GET", "/admin/v1/profiles", None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["revision"], 2);
    let profiles = list["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    assert_eq!(profiles[0], *p);
    assert_eq!(profiles[1], second["profile"]);
    assert!(!r.body.contains("signing_key") && !r.body.contains("secret"));

    // Show by id and by client_id.
    for key in [&id, &client_id] {
        let r = server.admin("GET", &format!("/admin/v1/profiles/{key}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!({"profile": p}));
    }

    // Disable / enable.
    let r = server.admin("POST", &format!("/admin/v1/profiles/{id}/disable"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(keys(&v), vec!["profile"]);
    assert_eq!(v["profile"]["enabled"], false);
    assert_eq!(v["profile"]["revision"], 3);
    let r = server.admin("POST", &format!("/admin/v1/profiles/{client_id}/enable"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["profile"]["enabled"], true);
    assert_eq!(r.json()["profile"]["revision"], 4);

    // Set prefixes.
    let r = server.admin(
        "PUT",
        &format!("/admin/v1/profiles/{id}/allowed_prefixes"),
        Some(r#"{"allowed_prefixes":["/x/","/y/z/","/x/"]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["profile"]["allowed_prefixes"], json!(["/x/", "/y/z/"]));
    assert_eq!(r.json()["profile"]["revision"], 5);

    // Rotate.
    let r = server.admin("POST", &format!("/admin/v1/profiles/{id}/rotate"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.json();
    assert_eq!(keys(&rotated), vec!["client_secret", "profile"]);
    assert!(is_secret(&rotated["client_secret"]));
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    assert_ne!(rotated["profile"]["kid"], p["kid"]);
    assert_eq!(rotated["profile"]["client_id"], p["client_id"]);
    assert!(rotated["profile"]["rotated_at"].is_i64());
    assert_eq!(rotated["profile"]["revision"], 6);

    // Delete.
    let r = server.admin("DELETE", &format!("/admin/v1/profiles/{client_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"deleted": id}));
    let r = server.admin("GET", &format!("/admin/v1/profiles/{id}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    assert_eq!(server.revision(), 7);

    // The server never logs secrets or tokens.
    let log = server.stderr();
    for secret in [ADMIN, DATA, created["client_secret"].as_str().unwrap(), rotated["client_secret"].as_str().unwrap()]
    {
        assert!(!log.contains(secret), "secret in log: {log}");
    }
}

#[test]
fn auth_is_enforced_and_tokens_are_not_interchangeable() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let created = server.create("a", &["/a/"]);
    let id = created["profile"]["id"].as_str().unwrap().to_string();

    let admin_routes: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", "/admin/v1/profiles".into(), None),
        ("POST", "/admin/v1/profiles".into(), Some(r#"{"name":"x","allowed_prefixes":["/x/"]}"#)),
        ("GET", format!("/admin/v1/profiles/{id}"), None),
        ("POST", format!("/admin/v1/profiles/{id}/rotate"), None),
        ("POST", format!("/admin/v1/profiles/{id}/disable"), None),
        ("POST", format!("/admin/v1/profiles/{id}/enable"), None),
        ("PUT", format!("/admin/v1/profiles/{id}/allowed_prefixes"), Some(r#"{"allowed_prefixes":["/y/"]}"#)),
        ("DELETE", format!("/admin/v1/profiles/{id}"), None),
    ];
    let bad_auth: Vec<Option<String>> = vec![
        None,
        Some(format!("Bearer {DATA}")),
        Some("Bearer wrong-token-wrong-token".into()),
        Some(format!("Bearer {ADMIN}x")),
        Some(format!("Basic {ADMIN}")),
        Some("Bearer".into()),
    ];
    for (method, path, body) in &admin_routes {
        for auth in &bad_auth {
            let r = request_raw(&server.addr, method, path, auth.clone(), body.map(str::as_bytes)).unwrap();
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.body);
            assert_eq!(r.error_code(), "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    for path in ["/data/v1/snapshot", "/data/v1/changes?since=0&wait=0"] {
        for token in [None, Some(ADMIN), Some("wrong-token-wrong-token")] {
            let r = server.get(path, token);
            assert_eq!(r.status, 401, "{path} with {token:?}");
            assert_eq!(r.error_code(), "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Nothing changed.
    assert_eq!(server.revision(), 1);
    let r = server.admin("GET", &format!("/admin/v1/profiles/{id}"), None);
    assert_eq!(r.json()["profile"], created["profile"]);
    // The scheme is case-insensitive.
    let r = request_raw(&server.addr, "GET", "/admin/v1/profiles", Some(format!("bearer {ADMIN}")), None).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let created = server.create("a", &["/a/"]);
    let id = created["profile"]["id"].as_str().unwrap().to_string();
    let before = server.admin("GET", "/admin/v1/profiles", None).json();

    let bad_create = [
        "",
        "{",
        "null",
        "[]",
        r#"{"name":"x"}"#,
        r#"{"allowed_prefixes":["/a/"]}"#,
        r#"{"name":"","allowed_prefixes":["/a/"]}"#,
        r#"{"name":"a\nb","allowed_prefixes":["/a/"]}"#,
        r#"{"name":"x","allowed_prefixes":[]}"#,
        r#"{"name":"x","allowed_prefixes":"/a/"}"#,
        r#"{"name":"x","allowed_prefixes":[1]}"#,
        r#"{"name":"x","allowed_prefixes":["/a"]}"#,
        r#"{"name":"x","allowed_prefixes":["a/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a/../b/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a//b/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a b/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a?b/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a#b/"]}"#,
        r#"{"name":"x","allowed_prefixes":["/ok/","bad"]}"#,
        r#"{"name":"x","allowed_prefixes":["/a/"],"extra":1}"#,
    ];
    let long_name = json!({"name": "n".repeat(101), "allowed_prefixes": ["/a/"]}).to_string();
    let long_prefix = json!({"name": "x", "allowed_prefixes": [format!("/{}/", "p".repeat(300))]}).to_string();
    let many: Vec<String> = (0..65).map(|i| format!("/p{i}/")).collect();
    let too_many = json!({"name": "x", "allowed_prefixes": many}).to_string();
    let mut bodies: Vec<&str> = bad_create.to_vec();
    bodies.extend([long_name.as_str(), long_prefix.as_str(), too_many.as_str()]);
    for body in bodies {
        let r = server.admin("POST", "/admin/v1/profiles", Some(body));
        assert_eq!(r.status, 400, "body {body:?}: {}", r.body);
        assert_eq!(r.error_code(), "invalid_input");
    }

    for body in ["", "{}", r#"{"allowed_prefixes":[]}"#, r#"{"allowed_prefixes":["nope"]}"#, "not json"] {
        let r = server.admin("PUT", &format!("/admin/v1/profiles/{id}/allowed_prefixes"), Some(body));
        assert_eq!(r.status, 400, "body {body:?}: {}", r.body);
        assert_eq!(r.error_code(), "invalid_input");
    }

    // Unknown profiles: 404 on every per-profile route.
    let unknown = "0".repeat(64);
    for (method, path, body) in [
        ("GET", format!("/admin/v1/profiles/{unknown}"), None),
        ("GET", "/admin/v1/profiles/nope".to_string(), None),
        ("POST", format!("/admin/v1/profiles/{unknown}/rotate"), None),
        ("POST", format!("/admin/v1/profiles/{unknown}/disable"), None),
        ("POST", format!("/admin/v1/profiles/{unknown}/enable"), None),
        ("PUT", format!("/admin/v1/profiles/{unknown}/allowed_prefixes"), Some(r#"{"allowed_prefixes":["/a/"]}"#)),
        ("DELETE", format!("/admin/v1/profiles/{unknown}"), None),
    ] {
        let r = server.admin(method, &path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.error_code(), "not_found");
    }

    // Unknown route, wrong method, oversized body.
    let r = server.admin("GET", "/admin/v1/nothing", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = server.admin("PATCH", "/admin/v1/profiles", Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = server.admin("GET", &format!("/admin/v1/profiles/{id}/rotate"), None);
    assert_eq!(r.status, 405);
    let big = format!(r#"{{"name":"x","allowed_prefixes":["/a/"],"pad":"{}"}}"#, " ".repeat(70 * 1024));
    let r = server.admin("POST", "/admin/v1/profiles", Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.error_code(), "payload_too_large");

    // Bad query parameters on the data API.
    for q in ["", "?since=abc", "?since=-1", "?since=1&wait=x"] {
        let r = server.data(&format!("/data/v1/changes{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.error_code(), "invalid_input");
    }

    let after = server.admin("GET", "/admin/v1/profiles", None).json();
    assert_eq!(before, after, "failed calls must change nothing");
    assert_eq!(after["revision"], 1);
}

#[test]
fn data_snapshot_and_changes_feed() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);

    let empty = server.data("/data/v1/snapshot");
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!({"version": 1, "revision": 0, "profiles": []}));

    let a = server.create("a", &["/a/"]); // rev 1
    let b = server.create("b", &["/b/"]); // rev 2
    let a_id = a["profile"]["id"].as_str().unwrap().to_string();
    let b_id = b["profile"]["id"].as_str().unwrap().to_string();
    let r = server.admin("POST", &format!("/admin/v1/profiles/{b_id}/disable"), None); // rev 3
    assert_eq!(r.status, 200);

    let snap = server.data("/data/v1/snapshot").json();
    assert_eq!(keys(&snap), vec!["profiles", "revision", "version"]);
    assert_eq!(snap["revision"], 3);
    let profiles = snap["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2, "disabled profiles are included");
    let pa = &profiles[0];
    assert_eq!(keys(pa), DATA_PROFILE_KEYS);
    assert_eq!(pa["id"], json!(a_id));
    assert_eq!(pa["client_id"], a["profile"]["client_id"]);
    assert_eq!(pa["kid"], a["profile"]["kid"]);
    assert!(is_hex(&pa["signing_key"], 64));
    assert_eq!(pa["client_secret_sha256"], json!(sha256_hex(a["client_secret"].as_str().unwrap())));
    assert_eq!(pa["allowed_prefixes"], json!(["/a/"]));
    assert_eq!(pa["disabled"], false);
    assert_eq!(profiles[1]["disabled"], true);

    // Everything since 0.
    let all = server.data("/data/v1/changes?since=0&wait=0").json();
    assert_eq!(keys(&all), vec!["changes", "reset", "revision", "version"]);
    assert_eq!(all["revision"], 3);
    assert_eq!(all["reset"], false);
    let ch = all["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 2);
    assert_eq!(ch[0]["id"], json!(a_id));
    assert_eq!(ch[0]["profile"], *pa);
    assert_eq!(ch[1]["id"], json!(b_id));
    assert_eq!(ch[1]["profile"]["disabled"], true);

    // Only what changed after 2.
    let since2 = server.data("/data/v1/changes?since=2&wait=0").json();
    assert_eq!(since2["changes"].as_array().unwrap().len(), 1);
    assert_eq!(since2["changes"][0]["id"], json!(b_id));

    // Delete shows up as a null profile.
    let r = server.admin("DELETE", &format!("/admin/v1/profiles/{a_id}"), None); // rev 4
    assert_eq!(r.status, 200);
    let since3 = server.data("/data/v1/changes?since=3&wait=0").json();
    assert_eq!(
        since3,
        json!({"version": 1, "revision": 4, "reset": false, "changes": [{"id": a_id, "profile": null}]})
    );
    let all = server.data("/data/v1/changes?since=0&wait=0").json();
    assert_eq!(all["revision"], 4);
    let ids: Vec<&Value> = all["changes"].as_array().unwrap().iter().map(|c| &c["id"]).collect();
    assert_eq!(ids, vec![&json!(b_id), &json!(a_id)]);
    assert_eq!(all["changes"][1]["profile"], Value::Null);

    // Up to date: empty answer with the same revision.
    let current = server.data("/data/v1/changes?since=4&wait=0");
    assert_eq!(current.status, 200);
    assert_eq!(current.json(), json!({"version": 1, "revision": 4, "reset": false, "changes": []}));

    // Ahead of the store: reset.
    let ahead = server.data("/data/v1/changes?since=99&wait=5");
    assert_eq!(ahead.json(), json!({"version": 1, "revision": 4, "reset": true, "changes": []}));

    // Rotation is visible to the proxies.
    let b_before = server.data("/data/v1/snapshot").json()["profiles"][0].clone();
    let r = server.admin("POST", &format!("/admin/v1/profiles/{b_id}/rotate"), None);
    let secret = r.json()["client_secret"].as_str().unwrap().to_string();
    let b_after = server.data("/data/v1/snapshot").json()["profiles"][0].clone();
    assert_ne!(b_before["kid"], b_after["kid"]);
    assert_ne!(b_before["signing_key"], b_after["signing_key"]);
    assert_ne!(b_before["client_secret_sha256"], b_after["client_secret_sha256"]);
    assert_eq!(b_after["client_secret_sha256"], json!(sha256_hex(&secret)));
    assert_eq!(b_after["client_id"], b_before["client_id"]);
}

#[test]
fn long_poll_times_out_with_unchanged_revision() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    server.create("a", &["/a/"]);
    let started = Instant::now();
    let r = server.data("/data/v1/changes?since=1&wait=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"version": 1, "revision": 1, "reset": false, "changes": []}));
    assert!(started.elapsed() >= Duration::from_millis(900), "waited");
}

#[test]
fn long_poll_wakes_on_admin_mutation() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    server.create("a", &["/a/"]);
    let addr = server.addr.clone();
    let poll = std::thread::spawn(move || {
        let r = request(&addr, "GET", "/data/v1/changes?since=1&wait=30", Some(DATA), None).unwrap();
        (Instant::now(), r)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!poll.is_finished(), "the poll must wait for a change");
    let created = server.create("b", &["/b/"]);
    let done = Instant::now();
    let (answered, r) = poll.join().unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["revision"], 2);
    assert_eq!(v["reset"], false);
    assert_eq!(v["changes"][0]["id"], created["profile"]["id"]);
    let lag = answered.saturating_duration_since(done);
    assert!(lag < Duration::from_secs(1), "long-poll answered {lag:?} after the change");
}

#[test]
fn graceful_shutdown_wakes_long_polls_and_exits_zero() {
    let (_dir, db) = temp_db();
    let mut server = Server::start(&db);
    server.create("a", &["/a/"]);
    let addr = server.addr.clone();
    let poll = std::thread::spawn(move || request(&addr, "GET", "/data/v1/changes?since=1&wait=50", Some(DATA), None));
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate(Duration::from_secs(20)).expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let r = poll.join().unwrap().expect("in-flight long-poll is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"version": 1, "revision": 1, "reset": false, "changes": []}));
    // The database is closed cleanly and intact.
    let mut store =
        tollgate_sidecar::store::SqliteStore::open(&db, tollgate_sidecar::keyring::default_key_file(&db)).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(store.revision().unwrap(), 1);
}

#[test]
fn startup_is_refused_without_good_tokens() {
    let (dir, db) = temp_db();
    let dbs = db.to_str().unwrap();
    let good = "a-good-token-0123456789";
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("TOLLGATE_DATA_TOKEN", good)], "admin token is missing"),
        (vec![("TOLLGATE_ADMIN_TOKEN", good)], "data token is missing"),
        (vec![("TOLLGATE_ADMIN_TOKEN", "short"), ("TOLLGATE_DATA_TOKEN", good)], "too short"),
        (vec![("TOLLGATE_ADMIN_TOKEN", good), ("TOLLGATE_DATA_TOKEN", "0123456789abcde")], "too short"),
        (vec![("TOLLGATE_ADMIN_TOKEN", good), ("TOLLGATE_DATA_TOKEN", good)], "must differ"),
    ];
    for (env, expected) in cases {
        let out = common::run(&["serve", "--listen", "127.0.0.1:0", "--db", dbs], &env);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        assert!(out.stdout.is_empty());
        let err = common::stderr_of(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains(good), "no token echoed: {err}");
    }

    // Token files work (trailing newline trimmed) and missing files are reported.
    let admin_file = dir.path().join("admin.token");
    let data_file = dir.path().join("data.token");
    std::fs::write(&admin_file, "short\n").unwrap();
    std::fs::write(&data_file, format!("{good}\n")).unwrap();
    let out = common::run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            dbs,
            "--admin-token-file",
            admin_file.to_str().unwrap(),
            "--data-token-file",
            data_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr_of(&out).contains("--admin-token-file"));
    let out = common::run(
        &[
            "serve",
            "--db",
            dbs,
            "--admin-token-file",
            "/nonexistent/admin.token",
            "--data-token-file",
            data_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr_of(&out).contains("cannot read admin token file"));
}

#[test]
fn token_files_are_accepted() {
    let (dir, db) = temp_db();
    let admin_file = dir.path().join("admin.token");
    let data_file = dir.path().join("data.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap();
    std::fs::write(&data_file, format!("{DATA}\n")).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--admin-token-file")
        .arg(&admin_file)
        .arg("--data-token-file")
        .arg(&data_file)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_DATA_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr = line.trim().strip_prefix("tollgate-sidecar listening on http://").unwrap().to_string();
    let r = request(&addr, "GET", "/admin/v1/profiles", Some(ADMIN), None).unwrap();
    assert_eq!(r.status, 200);
    let r = request(&addr, "GET", "/data/v1/snapshot", Some(DATA), None).unwrap();
    assert_eq!(r.status, 200);
    drop(guard);
}
