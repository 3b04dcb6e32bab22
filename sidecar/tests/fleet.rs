//! Several real sidecars on one PostgreSQL store (started by the test):
//! a change made through one sidecar's admin API or the CLI wakes the
//! long-poll feed of another through LISTEN/NOTIFY (the revision backstop
//! poll is set to a minute here, so only a notification can answer in
//! time); two admins racing on one profile through two sidecars get one
//! success and one 409; PostgreSQL stopped means 503s that change nothing,
//! and PostgreSQL back means every sidecar resyncs without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::pg::Postgres;
use common::{request, Resp, Server, ADMIN, DATA};
use serde_json::{json, Value};

/// The backstop poll, long enough that a feed answering sooner proves the
/// notification path.
const SLOW_POLL: &[&str] = &["--poll-ms", "60000"];

/// `n` sidecars on a fresh database, sharing one key file (as a fleet
/// must), which lives as long as the returned directory.
fn fleet(pg: &Postgres, db: &str, n: usize) -> (tempfile::TempDir, Vec<Server>) {
    let url = pg.create_database(db);
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("fleet.key");
    let key_file = key_file.to_str().unwrap();
    let servers = (0..n).map(|_| Server::start_store(&url, &[SLOW_POLL, &["--key-file", key_file]].concat())).collect();
    (keys, servers)
}

/// Long-polls `server`'s feed from `since` on a thread of its own.
fn long_poll(server: &Server, since: u64) -> std::thread::JoinHandle<Resp> {
    let addr = server.addr.clone();
    std::thread::spawn(move || {
        request(&addr, "GET", &format!("/data/v1/changes?since={since}&wait=30"), Some(DATA), None).unwrap()
    })
}

/// Joins a long-poll and insists it answered with a change, not a timeout
/// (a timeout answers after 30 s with no changes).
fn woken(poll: std::thread::JoinHandle<Resp>) -> Value {
    let r = poll.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(!v["changes"].as_array().unwrap().is_empty(), "the feed timed out instead of waking: {v}");
    v
}

fn rotate(server: &Server, id: &str, if_revision: Option<u64>) -> Resp {
    let addr = &server.addr;
    let path = format!("/admin/v1/profiles/{id}/rotate");
    match if_revision {
        None => server.admin("POST", &path, None),
        Some(rev) => {
            common::request_with_headers(addr, "POST", &path, ADMIN, &[("If-Match", &format!("\"{rev}\""))]).unwrap()
        }
    }
}

#[test]
fn a_change_through_one_sidecar_wakes_the_feed_of_every_other() {
    let pg = Postgres::start();
    let (keys, servers) = fleet(&pg, "wake", 3);
    let created = servers[0].create("fleet", &["/api/"]);
    let id = created["profile"]["id"].as_str().unwrap().to_string();
    for s in &servers {
        assert_eq!(s.revision(), 1);
    }

    // A rotation through sidecar 1 wakes the feeds waiting on 0 and 2.
    let polls: Vec<_> = [0, 2].iter().map(|&i| long_poll(&servers[i], 1)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let rotated = rotate(&servers[1], &id, None);
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let kid = rotated.json()["profile"]["kid"].as_str().unwrap().to_string();
    for poll in polls {
        let v = woken(poll);
        assert_eq!(v["revision"], 2);
        assert_eq!(v["changes"][0]["profile"]["kid"], kid.as_str());
    }

    // The CLI writing straight to PostgreSQL wakes them too.
    let poll = long_poll(&servers[2], 2);
    std::thread::sleep(Duration::from_millis(300));
    let url = pg.url("wake");
    let key_file = keys.path().join("fleet.key");
    let out = common::run(&["profile", "disable", &id, "--store", &url, "--key-file", key_file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    let v = woken(poll);
    assert_eq!(v["revision"], 3);
    assert_eq!(v["changes"][0]["profile"]["disabled"], true);
}

#[test]
fn racing_admins_through_two_sidecars_get_one_success_and_one_409() {
    let pg = Postgres::start();
    let (_keys, servers) = fleet(&pg, "race", 2);
    let servers = Arc::new(servers);
    let created = servers[0].create("raced", &["/api/"]);
    let id = created["profile"]["id"].as_str().unwrap().to_string();
    let rev = created["profile"]["revision"].as_u64().unwrap();
    for round in 0..5 {
        let rev = rev + round;
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<Resp> = (0..2)
            .map(|i| {
                let (servers, barrier, id) = (Arc::clone(&servers), Arc::clone(&barrier), id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    rotate(&servers[i], &id, Some(rev))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let ok: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
        let lost: Vec<&Resp> = answers.iter().filter(|r| r.status == 409).collect();
        assert_eq!((ok.len(), lost.len()), (1, 1), "{answers:?}");
        assert_eq!(lost[0].error_code(), "conflict");
        assert!(lost[0].json()["message"].as_str().unwrap().contains("revision"));
        // The winner's key is the stored one, whole.
        let winner = ok[0].json();
        let data = servers[1].data("/data/v1/snapshot").json();
        let stored = &data["profiles"][0];
        assert_eq!(stored["kid"], winner["profile"]["kid"]);
        let secret = winner["client_secret"].as_str().unwrap();
        use sha2::Digest;
        assert_eq!(stored["client_secret_sha256"], hex::encode(sha2::Sha256::digest(secret.as_bytes())));
        assert_eq!(winner["profile"]["revision"], rev + 1);
    }
    // A malformed If-Match is bad input, not a silent unconditional write.
    let r = common::request_with_headers(
        &servers[0].addr,
        "POST",
        &format!("/admin/v1/profiles/{id}/rotate"),
        ADMIN,
        &[("If-Match", "*")],
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn postgres_down_means_503_and_no_loss_and_back_means_resync_without_restart() {
    let mut pg = Postgres::start();
    let (_keys, servers) = fleet(&pg, "faults", 2);
    let created = servers[0].create("kept", &["/api/"]);
    let id = created["profile"]["id"].as_str().unwrap().to_string();
    let kid = created["profile"]["kid"].as_str().unwrap().to_string();

    pg.stop();
    for s in &servers {
        let r = s.admin("POST", &format!("/admin/v1/profiles/{id}/rotate"), None);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.error_code(), "store_unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
        let body = json!({"name": "lost?", "allowed_prefixes": ["/x/"]}).to_string();
        assert_eq!(s.admin("POST", "/admin/v1/profiles", Some(&body)).status, 503);
        assert_eq!(s.data("/data/v1/changes?since=1&wait=0").status, 503);
        assert_eq!(s.get("/readyz", None).status, 503);
    }

    pg.restart();
    // No sidecar restarted: both answer again, and nothing of the refused
    // writes exists.
    for s in &servers {
        let snap = common::wait_until(Duration::from_secs(30), || {
            let r = s.data("/data/v1/snapshot");
            (r.status == 200).then(|| r.json())
        });
        assert_eq!(snap["revision"], 1);
        assert_eq!(snap["profiles"].as_array().unwrap().len(), 1);
        assert_eq!(snap["profiles"][0]["kid"], kid.as_str());
    }
    // The listeners reconnected: a rotation through sidecar 0 wakes the
    // feed of sidecar 1 (the backstop poll is a minute away).
    let poll = long_poll(&servers[1], 1);
    std::thread::sleep(Duration::from_millis(300));
    let r = rotate(&servers[0], &id, Some(1));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = woken(poll);
    assert_eq!(v["revision"], 2);
    assert!(servers[1].stderr().contains("listening for store changes again"), "{}", servers[1].stderr());
}
