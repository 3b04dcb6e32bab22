"""Tollgate benchmark: one Envoy (--concurrency 1, one worker) with one
listener per scenario, driven by wrk in interleaved rounds; per scenario the
median over rounds of requests/sec, p50 and p99 latency.

Scenarios (all on the same Envoy, the same worker, the same cheap upstream):
  passthrough       no auth filter, GET /api/bench            -> upstream
  guard             Tollgate wasm filter, Bearer token         -> upstream
  jwt_authn         Envoy's native jwt_authn (HS256, no cache) -> upstream
  jwt_authn_cached  the same with jwt_cache_config             -> upstream
  token             POST /oauth2/token to Tollgate (Basic + form)
  direct            the same POST to a direct_response of the token response's size
The upstream is a direct_response listener inside the same Envoy
(`fake_upstream`), so it costs the same, and little, for the first four.

The machine is assumed shared and noisy: the ratios of one run are the result,
absolute numbers are not. The last line printed is

  bench: guard/passthrough=R jwt_authn/passthrough=R jwt_authn_cached/passthrough=R token/direct=R

and the results are written to var/bench/results.json.

Importable: `build_config`, `BenchEnvoy`, `run_wrk`, `parse_wrk`, `Scenario`,
`run_rounds`, `summarize` are meant for other bench scripts; `main(argv)`.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "envoy")]
import harness  # noqa: E402
import render  # noqa: E402

DEFAULT_ENVOY = str(ROOT / ".venv" / "bin" / "envoy")
DEFAULT_WASM = str(ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate.wasm")
RESULTS = ROOT / "var" / "bench" / "results.json"
RESULTS_QUICK = ROOT / "var" / "bench" / "results-quick.json"  # a smoke run does not overwrite a real one
WRK = os.environ.get("TOLLGATE_WRK", "wrk")

API_PATH = "/api/bench"
TOKEN_PATH = "/oauth2/token"
TOKEN_BODY = "grant_type=client_credentials"
FORM = "application/x-www-form-urlencoded"
UPSTREAM_BODY = "u" * 63 + "\n"  # 64 bytes
JWT_PROVIDER = "tollgate"
JWT_CACHE_SIZE = 1000
# The headers Tollgate puts on its token response, copied onto `direct`.
TOKEN_RESPONSE_HEADERS = {"content-type": "application/json", "cache-control": "no-store", "pragma": "no-cache"}

BUFFER_FILTER = {"name": "envoy.filters.http.buffer",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                  "max_request_bytes": 16384}}

LISTENERS = ("passthrough", "tollgate", "jwt_authn", "jwt_authn_cached", "direct", "fake_upstream")


class BenchError(Exception):
    """A benchmark that would measure the wrong thing (errors, wrong status)."""


# --- Envoy configuration ----------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def route_to(cluster: str, prefix: str = "/") -> dict:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def direct_route(body: str, headers: dict | None = None) -> dict:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}
    if headers:
        route["response_headers_to_add"] = [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in headers.items()]
    return route


def jwt_authn_filter(kid: str, key_hex: str, *, cache_size: int | None = None) -> dict:
    """Envoy's native JWT filter verifying Tollgate's HS256 tokens: the
    profile's key as a one-key local JWKS, the token taken from the default
    `Authorization: Bearer`, not forwarded upstream (Tollgate strips it too)."""
    jwks = {"keys": [{"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(bytes.fromhex(key_hex))}]}
    provider = {"local_jwks": {"inline_string": json.dumps(jwks)}, "forward": False}
    if cache_size:
        provider["jwt_cache_config"] = {"jwt_cache_size": cache_size}
    return {"name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {JWT_PROVIDER: provider},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
            }}


def plugin_config(profile: dict) -> dict:
    return {"profiles": [profile], "realm": "tollgate-bench"}


def build_config(ports: dict, *, admin_port: int, wasm_path: str, profile: dict, direct_body: str,
                 extra_listeners: list | None = None, extra_clusters: list | None = None) -> dict:
    """One bootstrap with every scenario's listener (ports: LISTENERS -> port)
    and one `upstream` cluster pointing at the `fake_upstream` listener."""
    sink_listener, sink_cluster = render.token_sink()
    listeners = [
        render.listener("passthrough", ports["passthrough"], [route_to("upstream")], []),
        render.listener("tollgate", ports["tollgate"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(wasm_path, plugin_config(profile), hold=True)]),
        render.listener("jwt_authn", ports["jwt_authn"], [route_to("upstream")],
                        [jwt_authn_filter(profile["kid"], profile["signing_key"])]),
        render.listener("jwt_authn_cached", ports["jwt_authn_cached"], [route_to("upstream")],
                        [jwt_authn_filter(profile["kid"], profile["signing_key"], cache_size=JWT_CACHE_SIZE)]),
        # The buffer filter makes `direct` read the whole POST before it
        # answers, as Tollgate does: an HTTP/1 response sent before the
        # request body is read makes Envoy close the connection, and the
        # scenario would measure TCP connects.
        render.listener("direct", ports["direct"], [direct_route(direct_body, TOKEN_RESPONSE_HEADERS)],
                        [BUFFER_FILTER]),
        render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []),
        sink_listener,
    ] + (extra_listeners or [])
    clusters = [render.cluster("upstream", ports["fake_upstream"]), sink_cluster] + (extra_clusters or [])
    return render.bootstrap(admin_port, listeners, clusters)


def validate_config(envoy: str, config: dict) -> None:
    with tempfile.NamedTemporaryFile("w", prefix="tollgate-bench-", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        r = subprocess.run([envoy, "--mode", "validate", "-c", f.name, "-l", "warning"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"envoy --mode validate refused the config:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    finally:
        os.unlink(f.name)


class BenchEnvoy(harness.Envoy):
    """harness.Envoy, but with the given binary and at log level warning
    only: the harness turns on wasm:debug, and the filter logs every issued
    token at debug, which would be measured too."""

    def __init__(self, config: dict, *, envoy: str, ports: dict, admin_port: int, concurrency: int = 1):
        self.ports = ports
        self.port, self.admin_port = ports["passthrough"], admin_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = pathlib.Path(tempfile.mkstemp(prefix="tollgate-bench-envoy-", suffix=".json")[1])
        self.config_path.write_text(json.dumps(config))
        harness.Process.__init__(self, "bench-envoy", [
            envoy, "-c", str(self.config_path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "-l", "warning"])
        try:
            harness.wait_for(self._ready, 60, "envoy /ready")
            for name, port in ports.items():
                harness.wait_for(lambda p=port: _connectable(p), 10, f"listener {name}")
        except BaseException:
            self.stop()
            raise

    def url_of(self, listener: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def cleanup(self) -> None:
        """Removes the config and log (call after a successful run)."""
        for p in (self.config_path, self.log_path):
            with contextlib.suppress(OSError):
                p.unlink()


def _connectable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def free_ports(names) -> dict:
    ports: dict = {}
    while len(set(ports.values())) != len(ports) or not ports:
        ports = {n: harness.free_port() for n in names}
    return ports


# --- plain requests -----------------------------------------------------------

def http_request(port: int, method: str, path: str, headers: dict | None = None,
                 body: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def mint_token(port: int, basic: str) -> tuple[str, bytes]:
    """POSTs the bench's exact token request; returns (token, raw body)."""
    status, headers, body = http_request(port, "POST", TOKEN_PATH,
                                         {"Content-Type": FORM, "Authorization": basic}, TOKEN_BODY)
    if status != 200:
        raise BenchError(f"token endpoint answered {status}: {body[:300]!r}")
    return json.loads(body)["access_token"], body


def expect_status(port: int, method: str, path: str, want: int, what: str, headers=None, body=None) -> bytes:
    status, _, got = http_request(port, method, path, headers, body)
    if status != want:
        raise BenchError(f"{what}: expected {want}, got {status}: {got[:300]!r}")
    return got


# --- wrk ------------------------------------------------------------------------

@dataclasses.dataclass
class Scenario:
    """One wrk target. `lua` is the text of a wrk script (written to a
    temp file), `headers` go on the command line as -H."""
    name: str
    listener: str
    path: str
    headers: tuple = ()
    lua: str | None = None
    note: str = ""


@dataclasses.dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict
    raw: str = ""
    new_connections: int | None = None  # downstream connections the listener accepted during the run

    def errors(self) -> list[str]:
        out = []
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx/3xx responses")
        if any(self.socket_errors.values()):
            out.append("socket errors " + ", ".join(f"{k} {v}" for k, v in self.socket_errors.items()))
        if self.requests == 0:
            out.append("no requests completed")
        return out


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Parses `wrk --latency` output."""
    def need(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"could not find {pattern!r} in wrk output:\n{out}")
        return m
    rps = float(need(r"^Requests/sec:\s+([\d.]+)").group(1))
    p50 = to_ms(need(r"^\s+50%\s+(\S+)").group(1))
    p99 = to_ms(need(r"^\s+99%\s+(\S+)").group(1))
    requests = int(need(r"^\s+(\d+) requests in ").group(1))
    m = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", out, re.M)
    non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    return WrkResult(rps, p50, p99, requests, non_2xx, socket_errors, out)


def run_wrk(url: str, *, duration: int, connections: int, threads: int = 1, headers=(),
            lua: str | None = None, timeout_s: int = 5) -> WrkResult:
    """One `wrk --latency` run; the wrk process never outlives this call."""
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    script = None
    if lua is not None:
        fd, script = tempfile.mkstemp(prefix="tollgate-bench-", suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(lua)
        cmd += ["-s", script]
    cmd.append(url)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=duration + timeout_s + 30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if script:
            os.unlink(script)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{out}")
    return parse_wrk(out)


def token_lua(basic: str) -> str:
    return "\n".join([
        'wrk.method = "POST"',
        f'wrk.body = "{TOKEN_BODY}"',
        f'wrk.headers["Content-Type"] = "{FORM}"',
        f'wrk.headers["Authorization"] = "{basic}"',
        "",
    ])


# --- rounds -------------------------------------------------------------------

def run_rounds(envoy: BenchEnvoy, scenarios: list, *, rounds: int, duration: int, connections: int,
               warmup: int = 1, log=print) -> dict:
    """Interleaved rounds: every round runs every scenario once, in order.
    Returns {scenario name: [WrkResult per round]}. Raises BenchError on
    any non-2xx or socket error."""
    def one(sc: Scenario, d: int, label: str) -> WrkResult:
        stat = f"http.{sc.listener}.downstream_cx_total"
        before = envoy.stat(stat)
        r = run_wrk(envoy.url_of(sc.listener, sc.path), duration=d, connections=connections,
                    headers=sc.headers, lua=sc.lua)
        r.new_connections = envoy.stat(stat) - before
        errs = r.errors()
        # wrk keeps its connections open (plus one it opens at start); more
        # means Envoy closed them and the run measured TCP connects.
        if r.new_connections > 2 * connections + 2:
            errs.append(f"{r.new_connections} connections for {r.requests} requests: not kept alive")
        if errs:
            raise BenchError(f"{sc.name} ({label}): {'; '.join(errs)}\n{r.raw}")
        return r

    if warmup > 0:
        for sc in scenarios:
            one(sc, warmup, "warm-up")
    results: dict = {sc.name: [] for sc in scenarios}
    for i in range(1, rounds + 1):
        for sc in scenarios:
            r = one(sc, duration, f"round {i}")
            results[sc.name].append(r)
            log(f"  round {i}/{rounds} {sc.name:<17} {r.rps:>10.1f} req/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms")
    return results


def summarize(results: dict) -> dict:
    return {name: {
        "median_rps": statistics.median(r.rps for r in rs),
        "median_p50_ms": statistics.median(r.p50_ms for r in rs),
        "median_p99_ms": statistics.median(r.p99_ms for r in rs),
        "rounds": [{"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests,
                    "new_connections": r.new_connections}
                   for r in rs],
    } for name, rs in results.items()}


def table(summary: dict) -> str:
    lines = [f"{'scenario':<17} {'median rps':>11} {'p50 ms':>8} {'p99 ms':>8}  rounds' rps",
             "-" * 78]
    for name, s in summary.items():
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["rounds"])
        lines.append(f"{name:<17} {s['median_rps']:>11.1f} {s['median_p50_ms']:>8.3f} "
                     f"{s['median_p99_ms']:>8.3f}  {rounds}")
    return "\n".join(lines)


RATIOS = (("guard", "passthrough"), ("jwt_authn", "passthrough"),
          ("jwt_authn_cached", "passthrough"), ("token", "direct"))


def ratios(summary: dict, pairs=RATIOS) -> dict:
    return {f"{a}/{b}": summary[a]["median_rps"] / summary[b]["median_rps"] for a, b in pairs}


def last_line(rs: dict) -> str:
    return "bench: " + " ".join(f"{k}={v:.2f}" for k, v in rs.items())


# --- the run ------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", default=DEFAULT_WASM, help="the built filter (default: %(default)s)")
    ap.add_argument("--envoy", default=DEFAULT_ENVOY, help="Envoy binary (default: %(default)s)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default: 5)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default: 16)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per scenario (default: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s, 1 round")
    ap.add_argument("--results", help=f"JSON output (default: {RESULTS}; with --quick {RESULTS_QUICK})")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.rounds = 1, 1
    if a.results is None:
        a.results = str(RESULTS_QUICK if a.quick else RESULTS)
    if a.duration < 1 or a.rounds < 1 or a.connections < 1:
        ap.error("--duration, --rounds and --connections must be positive")
    return a


def ensure_wasm(path: str) -> None:
    if pathlib.Path(path).exists():
        return
    if path != DEFAULT_WASM:
        raise BenchError(f"{path} does not exist")
    print(f"bench: {path} missing, building it", flush=True)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "tollgate"],
                   cwd=ROOT, check=True)


def start(envoy_bin: str, wasm: str, profile: dict, direct_body: str) -> BenchEnvoy:
    ports, admin = free_ports(LISTENERS), harness.free_port()
    config = build_config(ports, admin_port=admin, wasm_path=wasm, profile=profile, direct_body=direct_body)
    validate_config(envoy_bin, config)
    return BenchEnvoy(config, envoy=envoy_bin, ports=ports, admin_port=admin)


def sample_token_response(envoy_bin: str, wasm: str, profile: dict, basic: str) -> bytes:
    """Starts a short-lived Envoy (direct body a placeholder) to mint one
    token and returns the raw token response body: the real run's
    direct_response serves these exact bytes."""
    env = start(envoy_bin, wasm, profile, direct_body="placeholder")
    try:
        _, body = mint_token(env.ports["tollgate"], basic)
    finally:
        env.stop()
    env.cleanup()
    return body


def preflight(env: BenchEnvoy, token: str, basic: str, direct_body: bytes) -> None:
    """Every scenario must measure its success path: guarded listeners answer
    200 with the token and 401 without it (or with a broken signature)."""
    bearer = {"Authorization": f"Bearer {token}"}
    broken = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    expect_status(env.ports["passthrough"], "GET", API_PATH, 200, "passthrough")
    for name in ("tollgate", "jwt_authn", "jwt_authn_cached"):
        port = env.ports[name]
        got = expect_status(port, "GET", API_PATH, 200, f"{name} with the token", bearer)
        if got.decode(errors="replace") != UPSTREAM_BODY:
            raise BenchError(f"{name}: the answer did not come from fake_upstream: {got[:200]!r}")
        expect_status(port, "GET", API_PATH, 401, f"{name} without a token")
        expect_status(port, "GET", API_PATH, 401, f"{name} with a broken signature",
                      {"Authorization": f"Bearer {broken}"})
    form = {"Content-Type": FORM, "Authorization": basic}
    expect_status(env.ports["tollgate"], "POST", TOKEN_PATH, 200, "token endpoint", form, TOKEN_BODY)
    expect_status(env.ports["tollgate"], "POST", TOKEN_PATH, 401, "token endpoint, wrong secret",
                  {"Content-Type": FORM, "Authorization": basic_auth("nobody", "wrong")}, TOKEN_BODY)
    status, headers, got = http_request(env.ports["direct"], "POST", TOKEN_PATH, form, TOKEN_BODY)
    if status != 200 or len(got) != len(direct_body) or headers.get("content-type") != "application/json":
        raise BenchError(f"direct: got {status}, {len(got)} bytes, content-type "
                         f"{headers.get('content-type')!r}; want 200, {len(direct_body)} bytes, application/json")


def scenarios(token: str, basic: str) -> list:
    bearer = (f"Authorization: Bearer {token}",)
    lua = token_lua(basic)
    return [
        Scenario("passthrough", "passthrough", API_PATH, note="no auth filter"),
        Scenario("guard", "tollgate", API_PATH, bearer, note="Tollgate verifies the bearer token"),
        Scenario("jwt_authn", "jwt_authn", API_PATH, bearer, note="envoy.filters.http.jwt_authn, no cache"),
        Scenario("jwt_authn_cached", "jwt_authn_cached", API_PATH, bearer,
                 note=f"jwt_authn with jwt_cache_size {JWT_CACHE_SIZE}"),
        Scenario("token", "tollgate", TOKEN_PATH, lua=lua, note="Tollgate mints a token"),
        Scenario("direct", "direct", TOKEN_PATH, lua=lua, note="direct_response of the token response's size"),
    ]


def envoy_version(envoy_bin: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version: (\S+)", out)
        return m.group(1) if m else out.strip()
    return "unknown"


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    env = None
    try:
        ensure_wasm(a.wasm)
        wasm = str(pathlib.Path(a.wasm).resolve())
        profile, secret = harness.new_profile(allowed=("/api/",))
        basic = basic_auth(profile["client_id"], secret)

        print("bench: minting a sample token response for the direct listener's body", flush=True)
        direct_body = sample_token_response(a.envoy, wasm, profile, basic)
        env = start(a.envoy, wasm, profile, direct_body.decode())
        token, body = mint_token(env.ports["tollgate"], basic)
        if len(body) != len(direct_body):
            raise BenchError(f"token response is {len(body)} bytes, the sample was {len(direct_body)}")
        preflight(env, token, basic, direct_body)

        scs = scenarios(token, basic)
        print(f"bench: envoy {envoy_version(a.envoy)}, --concurrency 1; wrk -t1 -c{a.connections} "
              f"-d{a.duration}s; {a.rounds} round(s) x {len(scs)} scenarios; "
              f"token response {len(direct_body)} bytes", flush=True)
        results = run_rounds(env, scs, rounds=a.rounds, duration=a.duration, connections=a.connections,
                             warmup=a.warmup, log=lambda s: print(s, flush=True))
        env.stop()
        env.cleanup()
        env = None

        summary = summarize(results)
        rs = ratios(summary)
        out = pathlib.Path(a.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "envoy": envoy_version(a.envoy),
            "wasm": wasm,
            "wasm_sha256": hashlib.sha256(pathlib.Path(wasm).read_bytes()).hexdigest(),
            "settings": {"duration_s": a.duration, "rounds": a.rounds, "connections": a.connections,
                         "wrk_threads": 1, "envoy_concurrency": 1, "warmup_s": a.warmup,
                         "token_response_bytes": len(direct_body), "upstream_body_bytes": len(UPSTREAM_BODY),
                         "jwt_cache_size": JWT_CACHE_SIZE},
            "scenarios": {sc.name: {"listener": sc.listener, "path": sc.path, "note": sc.note,
                                    **summary[sc.name]} for sc in scs},
            "ratios": rs,
        }, indent=1) + "\n")
        print()
        print(table(summary))
        print(f"(results: {out})")
        print(last_line(rs), flush=True)
        return 0
    except BenchError as e:
        print(f"bench: ERROR: {e}", file=sys.stderr, flush=True)
        if env is not None:
            print(f"bench: envoy log: {env.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        if env is not None:
            env.stop()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
