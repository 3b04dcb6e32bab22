//! Replays every committed seed and reproducer (`corpus/<target>/*`) through
//! its target function natively: the fuzz targets' regression test, cheap
//! enough for every `./build.sh test` (no libFuzzer, no sanitizer build).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::TARGETS;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failures = Vec::new();
    let mut files = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "no seed for target {name}");
        for file in entries {
            let data = std::fs::read(&file).unwrap();
            files += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "{} of {files} corpus files fail:\n{}", failures.len(), failures.join("\n"));
    eprintln!("replayed {files} corpus files through {} targets", TARGETS.len());
}

#[test]
fn every_target_has_a_binary() {
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    for (name, _) in TARGETS {
        assert!(bins.join(format!("{name}.rs")).exists(), "fuzz_targets/{name}.rs");
    }
}

/// Which open findings (`artifacts/<target>/finding-*`) still reproduce. Run
/// by hand after a fix lands (`cargo test --lib --no-default-features --
/// --ignored --nocapture`): a fixed one belongs in `corpus/<target>/`, where
/// the replay above keeps it fixed. With `--features skip-open-findings`
/// every one must pass (the long runs step over them).
#[test]
#[ignore = "a report, run by hand"]
fn open_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let mut stepped_over_but_failing = Vec::new();
    for (name, target) in TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let fails = catch_unwind(AssertUnwindSafe(|| target(&data))).is_err();
            let verdict = match (fails, super::SKIP_OPEN_FINDINGS) {
                (true, _) => "still open",
                (false, true) => "stepped over",
                (false, false) => "passes: move it to corpus/",
            };
            eprintln!("{name}/{}: {verdict}", file.file_name().unwrap().to_string_lossy());
            if fails && super::SKIP_OPEN_FINDINGS {
                stepped_over_but_failing.push(file.display().to_string());
            }
        }
    }
    assert!(stepped_over_but_failing.is_empty(), "not stepped over: {stepped_over_but_failing:?}");
}
