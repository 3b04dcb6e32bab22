//! CLI tests: output, exit codes, messages, and the server noticing CLI
//! writes made by a separate process on the same database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{cli, cli_json, request, run, stderr_of, temp_db, Server, ADMIN, DATA};
use serde_json::{json, Value};

fn assert_fails(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr_of(out));
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let err = stderr_of(out);
    assert!(err.starts_with("error: "), "{err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn profile_lifecycle_via_cli() {
    let (_dir, db) = temp_db();

    let out = cli(&db, &["profile", "create", "--name", "Sales", "--allow", "/sales/", "--allow", "/hr/"]);
    let created = cli_json(&out);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.contains("\n  \""), "pretty printed: {text}");
    let mut k: Vec<&String> = created.as_object().unwrap().keys().collect();
    k.sort();
    assert_eq!(k, vec!["client_id", "client_secret", "profile"]);
    let p = &created["profile"];
    let id = p["id"].as_str().unwrap().to_string();
    let client_id = p["client_id"].as_str().unwrap().to_string();
    assert_eq!(created["client_id"], json!(client_id));
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(p["allowed_prefixes"], json!(["/sales/", "/hr/"]));
    assert_eq!(p["enabled"], true);
    assert_eq!(p["revision"], 1);
    assert!(p.get("signing_key").is_none() && p.get("secret_sha256").is_none());

    let list = cli_json(&cli(&db, &["profile", "list"]));
    assert_eq!(list["revision"], 1);
    assert_eq!(list["profiles"], json!([p]));

    let shown = cli_json(&cli(&db, &["profile", "show", &client_id]));
    assert_eq!(shown, json!({"profile": p}));

    let disabled = cli_json(&cli(&db, &["profile", "disable", &id]));
    assert_eq!(disabled["profile"]["enabled"], false);
    let enabled = cli_json(&cli(&db, &["profile", "enable", &client_id]));
    assert_eq!(enabled["profile"]["enabled"], true);
    assert_eq!(enabled["profile"]["revision"], 3);

    let set = cli_json(&cli(&db, &["profile", "set-prefixes", &id, "--allow", "/a/", "--allow", "/b/"]));
    assert_eq!(set["profile"]["allowed_prefixes"], json!(["/a/", "/b/"]));

    let rotated = cli_json(&cli(&db, &["profile", "rotate", &id]));
    assert_eq!(rotated["client_id"], json!(client_id));
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    assert_ne!(rotated["profile"]["kid"], p["kid"]);
    assert!(rotated["profile"]["rotated_at"].is_i64());

    let deleted = cli_json(&cli(&db, &["profile", "delete", &id]));
    assert_eq!(deleted, json!({"deleted": id}));
    let list = cli_json(&cli(&db, &["profile", "list"]));
    assert_eq!(list, json!({"revision": 6, "profiles": []}));
}

#[test]
fn cli_exit_codes_and_messages() {
    let (_dir, db) = temp_db();
    let created = cli_json(&cli(&db, &["profile", "create", "--name", "a", "--allow", "/a/"]));
    let id = created["profile"]["id"].as_str().unwrap().to_string();

    // Bad input: exit 2.
    assert_fails(&cli(&db, &["profile", "create", "--name", "x", "--allow", "nope"]), 2, "invalid allowed prefix");
    assert_fails(&cli(&db, &["profile", "create", "--name", "", "--allow", "/a/"]), 2, "invalid name");
    assert_fails(&cli(&db, &["profile", "set-prefixes", &id, "--allow", "/a/../b/"]), 2, "invalid allowed prefix");
    // Usage errors: exit 2, one line.
    assert_fails(&cli(&db, &["profile", "create", "--name", "x"]), 2, "--allow");
    assert_fails(&cli(&db, &["profile", "frobnicate"]), 2, "frobnicate");
    assert_fails(&cli(&db, &["profile", "show"]), 2, "error: ");
    assert_fails(&common::run(&["--bogus"], &[]), 2, "--bogus");

    // Not found: exit 3.
    for sub in ["show", "rotate", "disable", "enable", "delete"] {
        assert_fails(&cli(&db, &["profile", sub, "no-such-profile"]), 3, "profile not found: no-such-profile");
    }
    assert_fails(&cli(&db, &["profile", "set-prefixes", "no-such-profile", "--allow", "/a/"]), 3, "not found");

    // Other failures: exit 1.
    let (dir2, _) = temp_db();
    let not_a_db = dir2.path().join("garbage.db");
    std::fs::write(&not_a_db, vec![0x42u8; 8192]).unwrap();
    assert_fails(&cli(&not_a_db, &["profile", "list"]), 1, "cannot open database");
    let blocker = dir2.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    assert_fails(&cli(&blocker.join("sub/t.db"), &["profile", "list"]), 1, "cannot open database");

    // Failed commands changed nothing.
    let list = cli_json(&cli(&db, &["profile", "list"]));
    assert_eq!(list["revision"], 1);
    assert_eq!(list["profiles"], json!([created["profile"]]));

    // Help goes to stdout with exit 0.
    let help = common::run(&["profile", "--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("set-prefixes"));
}

#[test]
fn db_path_from_environment_and_default() {
    let (dir, db) = temp_db();
    let out = common::run(
        &["profile", "create", "--name", "env", "--allow", "/e/"],
        &[("TOLLGATE_DB", db.to_str().unwrap())],
    );
    let created = cli_json(&out);
    let list = cli_json(&cli(&db, &["profile", "list"]));
    assert_eq!(list["profiles"][0]["id"], created["profile"]["id"]);

    // Default path is var/tollgate.db relative to the working directory.
    let out = std::process::Command::new(common::BIN)
        .args(["profile", "create", "--name", "d", "--allow", "/d/"])
        .env_remove("TOLLGATE_DB")
        .current_dir(dir.path())
        .output()
        .unwrap();
    cli_json(&out);
    assert!(dir.path().join("var/tollgate.db").exists());
}

#[test]
fn token_generate_prints_fresh_hex() {
    let a = common::run(&["token", "generate"], &[]);
    let b = common::run(&["token", "generate"], &[]);
    assert!(a.status.success() && b.status.success());
    let ta = String::from_utf8(a.stdout).unwrap();
    let tb = String::from_utf8(b.stdout).unwrap();
    for t in [&ta, &tb] {
        let t = t.trim_end();
        assert_eq!(t.len(), 64, "{t}");
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
    assert_ne!(ta, tb);
}

/// Starts a long-poll in a thread; returns when it has been answered.
fn spawn_poll(addr: &str, since: u64) -> std::thread::JoinHandle<(Instant, Value)> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let r = request(&addr, "GET", &format!("/data/v1/changes?since={since}&wait=30"), Some(DATA), None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        (Instant::now(), r.json())
    })
}

#[test]
fn server_sees_cli_writes_and_wakes_long_polls() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let via_api = server.create("api", &["/api/"]);
    assert_eq!(via_api["profile"]["revision"], 1);

    // CLI create while the server runs.
    let poll = spawn_poll(&server.addr, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!poll.is_finished(), "the poll must wait for a change");
    let created = cli_json(&cli(&db, &["profile", "create", "--name", "cli", "--allow", "/cli/"]));
    let done = Instant::now();
    let (answered, v) = poll.join().unwrap();
    let lag = answered.saturating_duration_since(done);
    assert!(lag < Duration::from_secs(1), "answered {lag:?} after the CLI write");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["changes"][0]["id"], created["profile"]["id"]);
    assert_eq!(v["changes"][0]["profile"]["allowed_prefixes"], json!(["/cli/"]));

    // CLI delete while the server runs.
    let id = created["profile"]["id"].as_str().unwrap().to_string();
    let poll = spawn_poll(&server.addr, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!poll.is_finished());
    cli_json(&cli(&db, &["profile", "delete", &id]));
    let done = Instant::now();
    let (answered, v) = poll.join().unwrap();
    let lag = answered.saturating_duration_since(done);
    assert!(lag < Duration::from_secs(1), "answered {lag:?} after the CLI delete");
    assert_eq!(v, json!({"version": 1, "revision": 3, "reset": false, "changes": [{"id": id, "profile": null}]}));

    // The admin API sees CLI writes too, and vice versa.
    let list = server.admin("GET", "/admin/v1/profiles", None).json();
    assert_eq!(list["revision"], 3);
    assert_eq!(list["profiles"].as_array().unwrap().len(), 1);
    let r = server.admin(
        "POST",
        &format!("/admin/v1/profiles/{}/disable", via_api["profile"]["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(r.status, 200);
    let shown = cli_json(&cli(&db, &["profile", "show", via_api["profile"]["client_id"].as_str().unwrap()]));
    assert_eq!(shown["profile"]["enabled"], false);
    assert_eq!(shown["profile"]["revision"], 4);
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[test]
fn store_files_are_private_and_a_copied_database_mints_nothing() {
    let (dir, db) = temp_db();
    let key_file = db.with_extension("key");
    let mut server = Server::start(&db);
    let created = server.create("a", &["/a/"]);
    let signing_key =
        server.data("/data/v1/snapshot").json()["profiles"][0]["signing_key"].as_str().unwrap().to_owned();
    for f in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm"), key_file.clone()] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert!(server.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let key_text = std::fs::read_to_string(&key_file).unwrap();

    // The database file alone, copied elsewhere: neither the CLI nor the
    // server opens it, and they say why.
    let copy = dir.path().join("stolen/copy.db");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    std::fs::copy(&db, &copy).unwrap();
    assert!(!std::fs::read(&copy).unwrap().windows(64).any(|w| w == signing_key.as_bytes()));
    let out = cli(&copy, &["profile", "list"]);
    assert_fails(&out, 1, "does not exist");
    assert!(stderr_of(&out).contains("copy.key") && stderr_of(&out).contains("--key-file"), "{}", stderr_of(&out));
    let copy_s = copy.to_str().unwrap();
    let tokens = [("TOLLGATE_ADMIN_TOKEN", ADMIN), ("TOLLGATE_DATA_TOKEN", DATA)];
    let served = run(&["serve", "--listen", "127.0.0.1:0", "--db", copy_s], &tokens);
    assert_fails(&served, 1, "does not exist");
    assert!(!copy.with_extension("key").exists(), "no new key is made for sealed data");

    // Another key file is named as the wrong one, by flag or environment.
    let (_other_dir, other_db) = temp_db();
    cli_json(&cli(&other_db, &["profile", "list"]));
    let other_key = other_db.with_extension("key");
    let out = cli(&copy, &["profile", "list", "--key-file", other_key.to_str().unwrap()]);
    assert_fails(&out, 1, "wrong key file");
    let out = run(&["profile", "list", "--db", copy_s], &[("TOLLGATE_KEY_FILE", other_key.to_str().unwrap())]);
    assert_fails(&out, 1, "wrong key file");
    for out in [&out, &served] {
        let err = stderr_of(out);
        assert!(!err.contains(key_text.trim()) && !err.contains(&signing_key), "key material in {err:?}");
    }

    // With its own key file it is the same store.
    let out = run(&["profile", "list", "--db", copy_s], &[("TOLLGATE_KEY_FILE", key_file.to_str().unwrap())]);
    assert_eq!(cli_json(&out)["profiles"][0]["id"], created["profile"]["id"]);
}

#[test]
fn an_exposed_database_is_made_private_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, db) = temp_db();
    cli_json(&cli(&db, &["profile", "create", "--name", "a", "--allow", "/a/"]));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli(&db, &["profile", "list"]);
    assert_eq!(cli_json(&out)["profiles"].as_array().unwrap().len(), 1);
    let err = stderr_of(&out);
    assert!(err.starts_with("warning: ") && err.contains("was mode 0644"), "{err:?}");
    assert_eq!(mode(&db), 0o600);
    assert!(stderr_of(&cli(&db, &["profile", "list"])).is_empty(), "warned once, then private");

    let key_file = db.with_extension("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o604)).unwrap();
    assert_fails(&cli(&db, &["profile", "list"]), 1, "chmod 600");
}
