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
