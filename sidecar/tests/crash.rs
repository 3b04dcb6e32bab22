//! Crash test: SIGKILL the server in the middle of a burst of API and CLI
//! writes, then check that the database opens, passes `integrity_check`,
//! is internally consistent, and holds every write that was acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, request, temp_db, Server, ADMIN};
use serde_json::{json, Value};
use tollgate_sidecar::store::{ProfileStore, SqliteStore};

const API_WRITERS: usize = 3;
/// Acknowledged API writes before the kill.
const KILL_AFTER: usize = 300;

#[derive(Default)]
struct Acked {
    /// Profiles whose creation was acknowledged (API or CLI).
    created: Vec<String>,
    /// Per writer: its profile id and the last acknowledged prefix counter.
    counters: BTreeMap<usize, (String, u64)>,
    /// Highest revision seen in an acknowledged answer.
    max_revision: u64,
    /// Number of acknowledged writes (each bumps the revision by one).
    writes: u64,
}

fn post_json(addr: &str, method: &str, path: &str, body: &Value) -> Option<Value> {
    let r = request(addr, method, path, Some(ADMIN), Some(&body.to_string())).ok()?;
    if r.status == 200 || r.status == 201 {
        Some(r.json())
    } else {
        panic!("unexpected {} {}", r.status, r.body)
    }
}

#[test]
fn sigkill_during_write_burst_loses_nothing_acknowledged() {
    let (_dir, db) = temp_db();
    let mut server = Server::start(&db);
    let addr = server.addr.clone();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let api_writes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut threads = Vec::new();
    for w in 0..API_WRITERS {
        let (addr, acked, api_writes, stop) =
            (addr.clone(), Arc::clone(&acked), Arc::clone(&api_writes), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let body = json!({"name": format!("writer {w}"), "allowed_prefixes": [format!("/w{w}/0/")]});
            let Some(v) = post_json(&addr, "POST", "/admin/v1/profiles", &body) else {
                return;
            };
            let id = v["profile"]["id"].as_str().unwrap().to_string();
            {
                let mut a = acked.lock().unwrap();
                a.created.push(id.clone());
                a.counters.insert(w, (id.clone(), 0));
                a.writes += 1;
                a.max_revision = a.max_revision.max(v["profile"]["revision"].as_u64().unwrap());
            }
            api_writes.fetch_add(1, Ordering::SeqCst);
            let mut i: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let is_create = i.is_multiple_of(5);
                let (path, body) = if is_create {
                    (
                        "/admin/v1/profiles".to_string(),
                        json!({"name": format!("extra {w}-{i}"), "allowed_prefixes": ["/x/"]}),
                    )
                } else {
                    (
                        format!("/admin/v1/profiles/{id}/allowed_prefixes"),
                        json!({"allowed_prefixes": [format!("/w{w}/{i}/")]}),
                    )
                };
                let method = if is_create { "POST" } else { "PUT" };
                let Some(v) = post_json(&addr, method, &path, &body) else {
                    return; // the server is gone
                };
                let mut a = acked.lock().unwrap();
                a.writes += 1;
                a.max_revision = a.max_revision.max(v["profile"]["revision"].as_u64().unwrap());
                if method == "POST" {
                    a.created.push(v["profile"]["id"].as_str().unwrap().to_string());
                } else {
                    a.counters.insert(w, (id.clone(), i));
                }
                drop(a);
                api_writes.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    // A CLI writer on the same file, concurrently.
    {
        let (db, acked, stop) = (db.clone(), Arc::clone(&acked), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 200 {
                n += 1;
                let name = format!("cli {n}");
                let out = cli(&db, &["profile", "create", "--name", &name, "--allow", "/c/"]);
                assert!(out.status.success(), "CLI write failed: {}", String::from_utf8_lossy(&out.stderr));
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                let mut a = acked.lock().unwrap();
                a.created.push(v["profile"]["id"].as_str().unwrap().to_string());
                a.writes += 1;
                a.max_revision = a.max_revision.max(v["profile"]["revision"].as_u64().unwrap());
            }
        }));
    }

    // Let the burst run, then SIGKILL the server in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while api_writes.load(Ordering::SeqCst) < KILL_AFTER && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(api_writes.load(Ordering::SeqCst) >= KILL_AFTER, "writers made too little progress");
    server.kill();
    // CLI writes keep going a little after the kill.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    assert!(acked.created.len() > API_WRITERS);
    eprintln!(
        "crash test: {} acknowledged writes ({} API), {} acknowledged creates, max acked revision {}",
        acked.writes,
        api_writes.load(Ordering::SeqCst),
        acked.created.len(),
        acked.max_revision
    );

    // The database opens, is intact and consistent.
    {
        let mut store = SqliteStore::open(&db, tollgate_sidecar::keyring::default_key_file(&db)).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        let revision = store.revision().unwrap();
        assert!(revision >= acked.max_revision);
        assert!(revision >= acked.writes, "{revision} < {} acked writes", acked.writes);
        for id in &acked.created {
            store.get(id).unwrap_or_else(|e| panic!("acked profile {id} lost: {e}"));
        }
        for (w, (id, counter)) in &acked.counters {
            let p = store.get(id).unwrap();
            let stored: u64 = p.allowed_prefixes[0].trim_matches('/').split('/').nth(1).unwrap().parse().unwrap();
            assert!(stored >= *counter, "writer {w}: stored prefix {stored} older than acked {counter}");
        }
        Box::new(store).close().unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let (revision, max_rev, rows): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'revision'), \
                        (SELECT coalesce(max(rev), 0) FROM \
                            (SELECT rev FROM profiles UNION ALL SELECT rev FROM tombstones)), \
                        (SELECT count(*) FROM profiles)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(revision, max_rev, "revision counter matches the newest row");
        assert!(rows >= i64::try_from(acked.created.len()).unwrap());
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
    }

    // A restarted server serves the same data.
    let server = Server::start(&db);
    let snap = server.data("/data/v1/snapshot").json();
    let ids: Vec<&str> = snap["profiles"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    for id in &acked.created {
        assert!(ids.contains(&id.as_str()), "{id} missing from snapshot");
    }
    let r = server.get("/readyz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["revision"], snap["revision"]);
}
