"""Collector throughput with wrk on loopback: single events and 100-event batches vs a bare ASGI 204."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.results import write_section
from services.broker.local import LocalKafka, free_port
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
EVENT = {
    "type": "pageview",
    "anonymous_id": "visitor-{n}",
    "session_id": "session-{n}",
    "url": "https://www.example.com/pricing?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0K{n}",
    "title": "Pricing",
    "referrer": "https://www.google.com/",
}
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

LUA = """
local bodies = {}
local counter = 0
init = function(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do
    bodies[#bodies + 1] = wrk.format("POST", "/v1/events", {
      ["Content-Type"] = "application/json",
      ["X-Write-Key"] = "dev-write-key",
      ["User-Agent"] = "%UA%"}, line)
  end
  f:close()
end
request = function()
  counter = counter + 1
  return bodies[(counter % #bodies) + 1]
end
done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class ProductionLikeKafka(LocalKafka):
    """The local broker without an fsync per message (Kafka's default: durability by replication)."""

    def _write_config(self) -> Path:
        path = super()._write_config()
        text = path.read_text().replace("log.flush.interval.messages=1\n", "")
        path.write_text(text)
        return path


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling: read the body, answer 204 (uvicorn, same options as the collector)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _bodies(path: Path, batch: int) -> Path:
    lines = []
    for n in range(1000):
        events = [
            json.loads(json.dumps(EVENT).replace("{n}", str(n * batch + i))) for i in range(batch)
        ]
        lines.append(json.dumps(events[0] if batch == 1 else {"batch": events}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its living descendants (Linux /proc)."""
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += ticks.get(current, 0)
        stack.extend(children.get(current, []))
    return total / os.sysconf("SC_CLK_TCK")


def _wrk(
    url: str,
    bodies: Path,
    script: Path,
    seconds: int,
    connections: int,
    cpu_of: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One wrk run; with ``cpu_of`` (name -> pid) also CPU microseconds per request of each."""
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
    ]
    cpu_of = cpu_of or {}
    before = {name: _tree_cpu_seconds(pid) for name, pid in cpu_of.items()}
    load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {name: _tree_cpu_seconds(pid) for name, pid in cpu_of.items()}
    found = re.search(r"RESULT (\{.*\})", output)
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    requests = max(result["requests"], 1)
    cpu = {name: (after[name] - before[name]) * 1e6 / requests for name in cpu_of}
    load_seconds = (load_after.ru_utime + load_after.ru_stime) - (
        load_before.ru_utime + load_before.ru_stime
    )
    cpu["wrk"] = load_seconds * 1e6 / requests
    result["cpu_us"] = cpu
    return result


def _accepted(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^collector_events_accepted_total\{site_id="dev"\} (\S+)$', text, re.M
        )
    )


def _start_bare(workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bench_collector:bare_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/")
    return process, url


def _start_collector(
    workers: int, args: argparse.Namespace, bootstrap_servers: str, spool: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "COLLECTOR_HOST": "127.0.0.1",
        "COLLECTOR_PORT": str(port),
        "COLLECTOR_WORKERS": str(workers),
        "COLLECTOR_SPOOL_DIR": str(spool),
        "COLLECTOR_LOG_LEVEL": "WARNING",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "KAFKA_LINGER_MS": str(args.linger_ms),
    }
    process = subprocess.Popen([sys.executable, "-m", "services.collector"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/readyz")
    return process, url


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median request rate (its latencies and CPU come with it)."""
    return sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]


def _measure_workers(
    workers: int,
    single: Path,
    batch: Path,
    script: Path,
    args: argparse.Namespace,
    broker: LocalKafka,
    spool: Path,
    broker_warmup: int,
) -> dict[str, Any]:
    """Bare and collector runs for one worker count, in rounds that alternate the two apps."""
    assert broker.process is not None
    bare, bare_url = _start_bare(workers)
    collector, collector_url = _start_collector(workers, args, broker.bootstrap_servers, spool)
    events_url = "/v1/events"

    def collector_run(bodies: Path) -> dict[str, Any]:
        assert broker.process is not None
        accepted_before = _accepted(collector_url)
        run = _wrk(
            collector_url + events_url,
            bodies,
            script,
            args.seconds,
            args.connections,
            {"server": collector.pid, "broker": broker.process.pid},
        )
        run["events_per_s"] = (_accepted(collector_url) - accepted_before) / (
            run["duration_us"] / 1e6
        )
        return run

    try:
        if broker_warmup:
            # A fresh JVM compiles Kafka's produce path for its first minute of load, at the
            # cost of a core shared with everything else here; a broker in service is past that.
            print(f"warming up the broker's JIT ({broker_warmup} s of load) ...", flush=True)
            _wrk(collector_url + events_url, single, script, broker_warmup, args.connections)
        print(f"{workers} worker(s): warming up both apps ...", flush=True)
        _wrk(bare_url + events_url, single, script, args.warmup, args.connections)
        _wrk(collector_url + events_url, single, script, args.warmup, args.connections)
        bare_runs: list[dict[str, Any]] = []
        single_runs: list[dict[str, Any]] = []
        for round_number in range(1, args.rounds + 1):
            bare_run = _wrk(
                bare_url + events_url,
                single,
                script,
                args.seconds,
                args.connections,
                {"server": bare.pid},
            )
            single_run = collector_run(single)
            single_run["ratio"] = single_run["rps"] / bare_run["rps"]
            bare_runs.append(bare_run)
            single_runs.append(single_run)
            print(
                f"  round {round_number}/{args.rounds}: bare {bare_run['rps']:,.0f} requests/s, "
                f"collector single events {single_run['rps']:,.0f} requests/s "
                f"({single_run['ratio']:.0%})",
                flush=True,
            )
        _wrk(collector_url + events_url, batch, script, args.warmup, args.connections)
        batch_runs: list[dict[str, Any]] = []
        for round_number in range(1, args.rounds + 1):
            batch_run = collector_run(batch)
            batch_runs.append(batch_run)
            print(
                f"  round {round_number}/{args.rounds}: collector 100-event batches "
                f"{batch_run['events_per_s']:,.0f} events/s",
                flush=True,
            )
    finally:
        for process in (bare, collector):
            process.terminate()
        for process in (bare, collector):
            process.wait(30)
    ratios = sorted(run["ratio"] for run in single_runs)
    return {
        "bare": _median_run(bare_runs),
        "single": _median_run(single_runs),
        "batch": sorted(batch_runs, key=lambda run: run["events_per_s"])[len(batch_runs) // 2],
        "ratio": ratios[len(ratios) // 2],
        "ratios": [run["ratio"] for run in single_runs],
    }


def main(argv: list[str] | None = None) -> int:
    """Run bare and collector loads per worker count, print progress, write bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per load (median)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before measuring")
    parser.add_argument(
        "--broker-warmup", type=int, default=60, help="seconds of load on a fresh broker first"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--linger-ms", type=int, default=1, help="KAFKA_LINGER_MS of the collector")
    parser.add_argument(
        "--fsync-every-message",
        action="store_true",
        help="keep the local broker's log.flush.interval.messages=1 (make run's setting)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    script = work / "post.lua"
    script.write_text(LUA.replace("%UA%", UA))
    single, batch = _bodies(work / "single.jsonl", 1), _bodies(work / "batch.jsonl", 100)
    broker_class = LocalKafka if args.fsync_every_message else ProductionLikeKafka
    broker = broker_class(data_dir=work / "kafka")
    rows: list[str] = []
    summary: list[str] = []
    try:
        print("starting Apache Kafka ...", flush=True)
        broker.start()
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=6))
        for workers in args.workers:
            measured = _measure_workers(
                workers,
                single,
                batch,
                script,
                args,
                broker,
                work / f"spool-{workers}",
                args.broker_warmup if workers == args.workers[0] else 0,
            )
            one, many = measured["single"], measured["batch"]
            rows.append(
                _row(f"bare ASGI 204 (ceiling), {workers} worker(s)", measured["bare"], "-")
            )
            rows.append(
                _row(
                    f"collector, single event, {workers} worker(s)",
                    one,
                    f"{one['events_per_s']:,.0f}",
                )
            )
            rows.append(
                _row(
                    f"collector, 100-event batch, {workers} worker(s)",
                    many,
                    f"{many['events_per_s']:,.0f}",
                )
            )
            rounds = ", ".join(f"{ratio:.0%}" for ratio in measured["ratios"])
            summary.append(
                f"- {workers} worker(s): single events at **{measured['ratio']:.0%}** of the bare "
                f"endpoint's rate (median of paired rounds: {rounds}; aim 50%); batches "
                f"**{many['events_per_s']:,.0f} events/s** "
                f"({many['events_per_s'] / 50000:.0%} of the 50,000 events/s aim)."
            )
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    workers_text = " ".join(str(w) for w in args.workers)
    table = "\n".join(rows)
    notes = "\n".join(summary)
    markdown = f"""## collector

`.venv/bin/python -m bench.bench_collector --seconds {args.seconds} --rounds {args.rounds} --broker-warmup {args.broker_warmup} --connections {args.connections} --workers {workers_text} --linger-ms {args.linger_ms}{" --fsync-every-message" if args.fsync_every_message else ""}`

wrk (2 threads, {args.connections} connections) on loopback, POSTing 1,000 distinct realistic
pageview bodies with a Chrome user agent; uvicorn with the same worker count for both apps. Both
apps run side by side and are measured in {args.rounds} alternating rounds of {args.seconds} s
(bare, then collector) after {args.warmup} s of warm-up each, and after {args.broker_warmup} s of load on the
fresh broker (its JIT compiles the produce path for about a minute, taking a core; a broker in
service is past that); each row is its load's median round.
The collector answers only after the local Apache Kafka broker, on the same 2 cores,
acknowledged (acks=all, idempotent producer, linger.ms={args.linger_ms}; broker flush policy:
{"fsync every message (make run's local setting)" if args.fsync_every_message else "Kafka's default, durability by replication, no fsync per message"}).
Accepted events are counted by the collector's own `collector_events_accepted_total`. The CPU
columns are microseconds of CPU time (user + system, all threads and worker processes) per
request, from /proc: what each request costs the server, the broker and the load generator.

| load | requests/s | accepted events/s | p50 ms | p99 ms | non-2xx | CPU µs/request: server | broker | wrk |
|---|---|---|---|---|---|---|---|---|
{table}

{notes}
"""
    print(markdown)
    write_section("collector", markdown)
    return 0


def _row(label: str, result: dict[str, Any], events: str) -> str:
    cpu = result["cpu_us"]
    broker = f"{cpu['broker']:.0f}" if "broker" in cpu else "-"
    return (
        f"| {label} | {result['rps']:,.0f} | {events} | {result['p50_us'] / 1000:.2f} | "
        f"{result['p99_us'] / 1000:.2f} | {result['non2xx']} | {cpu['server']:.0f} | {broker} | "
        f"{cpu['wrk']:.0f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
