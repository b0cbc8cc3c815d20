"""Collector throughput with wrk on loopback: single events and 100-event batches vs a bare ASGI 204."""

from __future__ import annotations

import argparse
import json
import os
import re
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


def _wrk(url: str, bodies: Path, script: Path, seconds: int, connections: int) -> dict[str, Any]:
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
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\{.*\})", output)
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
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


def _run_bare(
    workers: int, single: Path, script: Path, seconds: int, connections: int
) -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bench_collector:bare_app",
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
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/")
        print(f"bare ASGI 204, {workers} worker(s): warm-up and run ...", flush=True)
        _wrk(url + "/v1/events", single, script, 3, connections)
        result = _wrk(url + "/v1/events", single, script, seconds, connections)
        print(f"  {result['rps']:,.0f} requests/s", flush=True)
        return result
    finally:
        process.terminate()
        process.wait(30)


def _run_collector(
    workers: int,
    loads: list[tuple[str, Path, int]],
    script: Path,
    args: argparse.Namespace,
    bootstrap_servers: str,
    spool: Path,
) -> dict[str, dict[str, Any]]:
    port = free_port()
    env = {
        **os.environ,
        "COLLECTOR_PORT": str(port),
        "COLLECTOR_WORKERS": str(workers),
        "COLLECTOR_SPOOL_DIR": str(spool),
        "COLLECTOR_LOG_LEVEL": "WARNING",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "KAFKA_LINGER_MS": str(args.linger_ms),
    }
    process = subprocess.Popen([sys.executable, "-m", "services.collector"], cwd=ROOT, env=env)
    results: dict[str, dict[str, Any]] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/readyz")
        for name, bodies, per_request in loads:
            print(f"collector {name}, {workers} worker(s): warm-up and run ...", flush=True)
            _wrk(url + "/v1/events", bodies, script, 3, args.connections)
            before = _accepted(url)
            result = _wrk(url + "/v1/events", bodies, script, args.seconds, args.connections)
            result["events_per_s"] = (_accepted(url) - before) / (result["duration_us"] / 1e6)
            result["per_request"] = per_request
            results[name] = result
            print(
                f"  {result['rps']:,.0f} requests/s, {result['events_per_s']:,.0f} events/s",
                flush=True,
            )
    finally:
        process.terminate()
        process.wait(30)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run bare and collector loads per worker count, print progress, write bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
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
            bare = _run_bare(workers, single, script, args.seconds, args.connections)
            loads = [("single event", single, 1), ("100-event batch", batch, 100)]
            measured = _run_collector(
                workers, loads, script, args, broker.bootstrap_servers, work / f"spool-{workers}"
            )
            rows.append(_row(f"bare ASGI 204 (ceiling), {workers} worker(s)", bare, "-"))
            for name, result in measured.items():
                rows.append(
                    _row(
                        f"collector, {name}, {workers} worker(s)",
                        result,
                        f"{result['events_per_s']:,.0f}",
                    )
                )
            one, many = measured["single event"], measured["100-event batch"]
            summary.append(
                f"- {workers} worker(s): single events at **{one['rps'] / bare['rps']:.0%}** of the bare "
                f"endpoint's rate (aim 50%); batches **{many['events_per_s']:,.0f} events/s** "
                f"({many['events_per_s'] / 50000:.0%} of the 50,000 events/s aim)."
            )
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    workers_text = " ".join(str(w) for w in args.workers)
    table = "\n".join(rows)
    notes = "\n".join(summary)
    markdown = f"""## collector

`.venv/bin/python -m bench.bench_collector --seconds {args.seconds} --connections {args.connections} --workers {workers_text} --linger-ms {args.linger_ms}{" --fsync-every-message" if args.fsync_every_message else ""}`

wrk (2 threads, {args.connections} connections, {args.seconds} s after a 3 s warm-up) on loopback, POSTing
1,000 distinct realistic pageview bodies with a Chrome user agent; uvicorn with the same worker
count for both apps. The collector answers only after the local Apache Kafka broker, on the same
2 cores, acknowledged (acks=all, idempotent producer, linger.ms={args.linger_ms}; broker flush policy:
{"fsync every message (make run's local setting)" if args.fsync_every_message else "Kafka's default, durability by replication, no fsync per message"}).
Accepted events are counted by the collector's own `collector_events_accepted_total`.

| load | requests/s | accepted events/s | p50 ms | p99 ms | non-2xx |
|---|---|---|---|---|---|
{table}

{notes}
"""
    print(markdown)
    write_section("collector", markdown)
    return 0


def _row(label: str, result: dict[str, Any], events: str) -> str:
    return (
        f"| {label} | {result['rps']:,.0f} | {events} | {result['p50_us'] / 1000:.2f} | "
        f"{result['p99_us'] / 1000:.2f} | {result['non2xx']} |"
    )


if __name__ == "__main__":
    sys.exit(main())
