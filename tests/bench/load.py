"""The load driver: wrk runs (`run_wrk`, `run_wrk_until`), their parsed
results, and the interleaved rounds. Each run also samples the Envoy
process's CPU time (`utime + stime` in /proc/<pid>/stat) before and after,
so every result carries Envoy's CPU microseconds per request served: less
sensitive to what else the shared machine runs than requests/s."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import statistics
import subprocess
import tempfile
import time

from common import BenchEnvoy, BenchError, WRK

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
    cpu_us_per_req: float | None = None  # Envoy's CPU time over the run / requests served

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


def run_wrk_until(url: str, *, connections: int, lua: str, done, timeout_s: float) -> WrkResult:
    """wrk until `done()` holds (polled every 0.2 s), then SIGINT, which makes
    wrk stop and print its summary: a request count rather than a duration
    (wrk's own `-d` always runs to the end)."""
    fd, script = tempfile.mkstemp(prefix="tollgate-bench-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(lua)
    cmd = [WRK, "-t1", f"-c{connections}", f"-d{int(timeout_s) + 60}s", "--timeout=10s", "--latency", "-s", script,
           url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not done():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"wrk ended or timed out before the requests were answered:\n"
                                 f"{proc.communicate(timeout=10)[0] if proc.poll() is not None else ''}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.unlink(script)
    return parse_wrk(out)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, user plus system, all threads
    (`utime + stime` of /proc/<pid>/stat, in clock ticks)."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_rounds(envoy: BenchEnvoy, scenarios: list, *, rounds: int, duration: int, connections: int,
               warmup: int = 1, log=print) -> dict:
    """Interleaved rounds: every round runs every scenario once, in order.
    Returns {scenario name: [WrkResult per round]}. Raises BenchError on
    any non-2xx or socket error."""
    def one(sc: Scenario, d: int, label: str) -> WrkResult:
        stat = f"http.{sc.listener}.downstream_cx_total"
        before = envoy.stat(stat)
        # Between the two admin reads, so those are not counted: what Envoy
        # spent is wrk's load (every worker, the upstream listener included,
        # which costs the same in every guarded scenario).
        cpu_before = cpu_seconds(envoy.proc.pid)
        r = run_wrk(envoy.url_of(sc.listener, sc.path), duration=d, connections=connections,
                    headers=sc.headers, lua=sc.lua)
        cpu = cpu_seconds(envoy.proc.pid) - cpu_before
        r.new_connections = envoy.stat(stat) - before
        r.cpu_us_per_req = cpu * 1e6 / r.requests if r.requests else None
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
                f"  p99 {r.p99_ms:7.3f} ms  cpu {r.cpu_us_per_req:6.1f} us/req")
    return results


def summarize(results: dict) -> dict:
    return {name: {
        "median_rps": statistics.median(r.rps for r in rs),
        "median_p50_ms": statistics.median(r.p50_ms for r in rs),
        "median_p99_ms": statistics.median(r.p99_ms for r in rs),
        "median_cpu_us_per_req": statistics.median(r.cpu_us_per_req for r in rs),
        "rounds": [{"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests,
                    "new_connections": r.new_connections, "cpu_us_per_req": r.cpu_us_per_req}
                   for r in rs],
    } for name, rs in results.items()}

