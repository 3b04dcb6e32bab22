"""What Tollgate's metrics cost the guard, measured against the noise floor.

One Envoy (--concurrency 1) built by bench.build_config, plus one more
listener; the same profile, token and .wasm on three guard listeners:

  guard            metrics on (the product's default)
  guard_again      metrics on, its own vm_id: an A/A control, same code as guard
  guard_nometrics  "metrics": false: no metric defined, no counter hostcall

Rounds rotate the order of the three (a Latin square), so no scenario always
runs first or after the same neighbour. Two figures per run:

* throughput (wrk requests/s), as bench.py measures it: per round, each
  ratio is taken between runs seconds apart, and the median over rounds is
  the figure; on a shared machine it swings by a third from run to run;
* Envoy's own CPU time per request (utime + stime of the Envoy process from
  /proc, over each wrk run, divided by the requests served): what the filter
  costs the proxy, and far less disturbed by other processes than throughput.

The spread of guard/guard_again is what "within noise" is measured against.
The last line is

  metrics_cost: rps guard/guard_nometrics=R [lo..hi] guard/guard_again=R [lo..hi]
    cpu guard/guard_nometrics=R [lo..hi] guard/guard_again=R [lo..hi]
    cpu_us_per_request guard=U guard_again=U guard_nometrics=U rounds=N

(medians, and the interquartile range of the per-round ratios). Results go to
var/bench/metrics-cost.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402

RESULTS = bench.ROOT / "var" / "bench" / "metrics-cost.json"
NAMES = ("guard", "guard_again", "guard_nometrics")


def quartiles(values: list) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(env, sc, *, duration: int, connections: int) -> tuple:
    """One wrk run; (WrkResult, Envoy CPU microseconds per request)."""
    before = cpu_seconds(env.proc.pid)
    r = bench.run_wrk(env.url_of(sc.listener, sc.path), duration=duration, connections=connections,
                      headers=sc.headers)
    used = cpu_seconds(env.proc.pid) - before
    if r.errors():
        raise bench.BenchError(f"{sc.name}: {'; '.join(r.errors())}\n{r.raw}")
    return r, used / r.requests * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", default=bench.DEFAULT_WASM)
    ap.add_argument("--envoy", default=bench.DEFAULT_ENVOY)
    ap.add_argument("--duration", type=int, default=2, help="seconds per wrk run (default: 2)")
    ap.add_argument("--rounds", type=int, default=15, help="rounds (default: 15)")
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args(argv)

    bench.ensure_wasm(a.wasm)
    wasm = str(pathlib.Path(a.wasm).resolve())
    profile, secret = bench.harness.new_profile(allowed=("/api/",))
    basic = bench.basic_auth(profile["client_id"], secret)
    ports = bench.free_ports(bench.LISTENERS + ("tollgate_again",))
    admin = bench.harness.free_port()
    routes = [{"match": {"path": bench.TOKEN_PATH}, "route": {"cluster": bench.render.SINK_LISTENER}},
              bench.route_to("upstream")]  # as the other two guard listeners
    again = bench.render.listener("tollgate_again", ports["tollgate_again"], routes,
                                  [bench.render.wasm_filter(wasm, bench.plugin_config(profile), hold=True,
                                                            vm_id="tollgate_again")])
    config = bench.build_config(ports, admin_port=admin, wasm_path=wasm, profile=profile,
                                direct_body="unused", extra_listeners=[again])
    bench.validate_config(a.envoy, config)
    env = bench.BenchEnvoy(config, envoy=a.envoy, ports=ports, admin_port=admin)
    try:
        token, _ = bench.mint_token(ports["tollgate"], basic)
        header = (f"Authorization: Bearer {token}",)
        allowed = "wasmcustom.tollgate_guard_allowed_total"
        listeners = dict(zip(NAMES, ("tollgate", "tollgate_again", "tollgate_nometrics")))
        # Each listener must take the success path, and only the first two count.
        for name, listener in listeners.items():
            before = env.stat(allowed)
            bench.expect_status(ports[listener], "GET", bench.API_PATH, 200, name, {"Authorization": f"Bearer {token}"})
            want = 0 if name == "guard_nometrics" else 1
            if env.stat(allowed) - before != want:
                raise bench.BenchError(f"{name}: {allowed} moved by {env.stat(allowed) - before}, expected {want}")
            bench.expect_status(ports[listener], "GET", bench.API_PATH, 401, f"{name} without a token")
        scs = [bench.Scenario(n, listeners[n], bench.API_PATH, header) for n in NAMES]
        results: dict = {n: [] for n in NAMES}
        cpu: dict = {n: [] for n in NAMES}
        for sc in scs:  # warm-up
            run_one(env, sc, duration=1, connections=a.connections)
        for i in range(a.rounds):
            for sc in scs[i % 3:] + scs[:i % 3]:
                r, us = run_one(env, sc, duration=a.duration, connections=a.connections)
                results[sc.name].append(r)
                cpu[sc.name].append(us)
            print(f"  round {i + 1}/{a.rounds}: " + "  ".join(
                f"{n} {results[n][-1].rps:7.0f}/s {cpu[n][-1]:6.1f} us" for n in NAMES), flush=True)
    finally:
        env.stop()
    env.cleanup()

    summary = bench.summarize(results)
    per_round = {
        f"{x}/{y}": [p.rps / q.rps for p, q in zip(results[x], results[y])]
        for x, y in (("guard", "guard_nometrics"), ("guard", "guard_again"))
    }
    ratios = {k: {"median": statistics.median(v), "iqr": quartiles(v), "per_round": v} for k, v in per_round.items()}
    cpu_us = {n: {"median": statistics.median(v), "iqr": quartiles(v), "per_round": v} for n, v in cpu.items()}
    cpu_ratios = {}
    for x, y in (("guard", "guard_nometrics"), ("guard", "guard_again")):
        v = [p / q for p, q in zip(cpu[x], cpu[y])]
        cpu_ratios[f"{x}/{y}"] = {"median": statistics.median(v), "iqr": quartiles(v), "per_round": v}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "envoy": bench.envoy_version(a.envoy),
        "settings": {"duration_s": a.duration, "rounds": a.rounds, "connections": a.connections,
                     "envoy_concurrency": 1},
        "scenarios": summary, "rps_ratios": ratios, "envoy_cpu_us_per_request": cpu_us,
        "cpu_ratios": cpu_ratios}, indent=1) + "\n")
    print()
    print(bench.table(summary))
    print()
    for n, c in cpu_us.items():
        print(f"Envoy CPU per request, {n:<16} median {c['median']:6.1f} us  IQR {c['iqr'][0]:.1f}..{c['iqr'][1]:.1f}")
    print()
    print("metrics_cost: rps " + " ".join(
        f"{k}={r['median']:.3f} [{r['iqr'][0]:.3f}..{r['iqr'][1]:.3f}]" for k, r in ratios.items())
        + " cpu " + " ".join(
            f"{k}={r['median']:.3f} [{r['iqr'][0]:.3f}..{r['iqr'][1]:.3f}]" for k, r in cpu_ratios.items())
        + " cpu_us_per_request " + " ".join(f"{n}={c['median']:.1f}" for n, c in cpu_us.items())
        + f" rounds={a.rounds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
