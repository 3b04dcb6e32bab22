"""The report: per-scenario medians, the per-round ratios, the tables and
the last line."""
from __future__ import annotations

import statistics


def table(summary: dict) -> str:
    lines = [f"{'scenario':<17} {'median rps':>11} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>10}  rounds' rps",
             "-" * 89]
    for name, s in summary.items():
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["rounds"])
        lines.append(f"{name:<17} {s['median_rps']:>11.1f} {s['median_p50_ms']:>8.3f} "
                     f"{s['median_p99_ms']:>8.3f} {s['median_cpu_us_per_req']:>10.1f}  {rounds}")
    return "\n".join(lines)


RATIOS = (("guard", "passthrough"), ("guard_sidecar_1", "passthrough", "guard_sidecar/passthrough"),
          ("guard_sidecar_1", "passthrough_bearer", "guard_sidecar/passthrough_bearer"),
          ("floor_bearer", "passthrough"), ("guard_sidecar_1", "floor_bearer", "guard_sidecar/floor_bearer"),
          ("guard_sidecar_1", "guard", "guard_sidecar/guard"), ("guard_route", "guard", "guard_route/guard"),
          ("jwt_authn", "passthrough"),
          ("jwt_authn_cached", "passthrough"), ("token", "direct"),
          ("guard_sidecar_10k", "guard_sidecar_1", "guard10k/guard1"),
          ("guard", "guard_nometrics", "guard/guard_nometrics"),
          ("guard", "guard_baseline", "guard/guard_baseline"),
          ("guard_sidecar_1", "guard_sidecar_baseline", "guard_sidecar/guard_sidecar_baseline"), ("token", "token_baseline", "token/token_baseline"))


def ratios(summary: dict, pairs=RATIOS) -> dict:
    """(a, b) or (a, b, label) -> {label or "a/b": ratio}; pairs whose
    scenarios were not run are left out. The ratio is the median over rounds
    of a's rps / b's rps in the same round: the runs of one round are seconds
    apart, so a round's ratio cancels most of this shared machine's drift,
    which moves absolute throughput by a third from round to round."""
    out = {}
    for a, b, *label in pairs:
        if a in summary and b in summary:
            per_round = [x["rps"] / y["rps"] for x, y in zip(summary[a]["rounds"], summary[b]["rounds"])]
            out[label[0] if label else f"{a}/{b}"] = statistics.median(per_round)
    return out


def cpu_ratios(summary: dict, pairs=RATIOS) -> dict:
    """The same pairs as `ratios`, for Envoy's CPU time per request: the
    median over rounds of a's CPU us/request / b's in the same round (below
    1.00, a costs less)."""
    out = {}
    for a, b, *label in pairs:
        if a in summary and b in summary:
            per_round = [x["cpu_us_per_req"] / y["cpu_us_per_req"]
                         for x, y in zip(summary[a]["rounds"], summary[b]["rounds"])]
            out[label[0] if label else f"{a}/{b}"] = statistics.median(per_round)
    return out


# The scenarios of the last line's CPU field, as named there.
CPU_FIELDS = (("passthrough", "passthrough"), ("passthrough_bearer", "passthrough_bearer"),
              ("floor_bearer", "floor_bearer"), ("guard", "guard"), ("guard_sidecar", "guard_sidecar_1"),
              ("jwt_authn", "jwt_authn"), ("token", "token"))


def cpu_field(summary: dict) -> str:
    """`cpu_us_per_req: passthrough=… guard=…`: each the median over rounds
    of Envoy's CPU microseconds per request served."""
    return "cpu_us_per_req: " + " ".join(f"{label}={summary[name]['median_cpu_us_per_req']:.1f}"
                                         for label, name in CPU_FIELDS if name in summary)


def last_line(rs: dict, rotation: dict | None = None, memory: str | None = None, cpu: str | None = None) -> str:
    line = "bench: " + " ".join(f"{k}={v:.2f}" for k, v in rs.items())
    if rotation:
        first = rotation["first_401_ms"]
        line += f" rotation_p50_ms={first['p50']:.1f} rotation_p99_ms={first['p99']:.1f}"
    if memory:
        line += " " + memory
    if cpu:
        line += " " + cpu
    return line


def rotation_table(runs: dict) -> str:
    """runs: title -> measure_rotation() result."""
    lines = [f"{'rotation, ms':<49} {'p50':>8} {'p99':>8} {'max':>8}", "-" * 76]
    for title, rot in runs.items():
        lines.append(f"{title}: {rot['rotations']} rotations, envoy --concurrency {rot['envoy_concurrency']}; "
                     f"first probe already 401 in {rot['first_probe_refused']}")
        for key, label in (("first_401_ms", "rotate call returned -> first 401"),
                           ("all_workers_ms", "rotate call returned -> 401 on both workers"),
                           ("rotate_call_ms", "the rotate call itself"),
                           ("all_workers_from_call_start_ms", "rotate call sent -> 401 on both workers")):
            d = rot[key]
            lines.append(f"  {label:<47} {d['p50']:>8.2f} {d['p99']:>8.2f} {d['max']:>8.2f}")
    return "\n".join(lines)

