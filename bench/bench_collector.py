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


def main(argv: list[str] | None = None) -> int:
    """Run the three loads, print progress, and write the collector section of bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
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
    processes: list[subprocess.Popen[bytes]] = []
    broker_class = LocalKafka if args.fsync_every_message else ProductionLikeKafka
    broker = broker_class(data_dir=work / "kafka")
    results: dict[str, dict[str, Any]] = {}
    try:
        print("starting Apache Kafka ...", flush=True)
        broker.start()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=6)
        ensure_topics(kafka)
        uvicorn_flags = [
            "--workers",
            str(args.workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ]

        bare_port = free_port()
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.bench_collector:bare_app",
                    "--port",
                    str(bare_port),
                    *uvicorn_flags,
                ],
                cwd=ROOT,
            )
        )
        bare_url = f"http://127.0.0.1:{bare_port}"
        _wait_http(bare_url + "/")
        print("bare ASGI 204, warm-up and run ...", flush=True)
        _wrk(bare_url + "/v1/events", single, script, 3, args.connections)
        results["bare"] = _wrk(
            bare_url + "/v1/events", single, script, args.seconds, args.connections
        )
        processes.pop().terminate()

        port = free_port()
        env = {
            **os.environ,
            "COLLECTOR_PORT": str(port),
            "COLLECTOR_WORKERS": str(args.workers),
            "COLLECTOR_SPOOL_DIR": str(work / "spool"),
            "COLLECTOR_LOG_LEVEL": "WARNING",
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_LINGER_MS": str(args.linger_ms),
        }
        processes.append(
            subprocess.Popen([sys.executable, "-m", "services.collector"], cwd=ROOT, env=env)
        )
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/readyz")
        for name, bodies, per_request in (("single", single, 1), ("batch", batch, 100)):
            print(f"collector {name}, warm-up and run ...", flush=True)
            _wrk(url + "/v1/events", bodies, script, 3, args.connections)
            before = _accepted(url)
            result = _wrk(url + "/v1/events", bodies, script, args.seconds, args.connections)
            accepted = _accepted(url) - before
            result["events_per_s"] = accepted / (result["duration_us"] / 1e6)
            result["per_request"] = per_request
            results[name] = result
            print(
                f"  {result['rps']:,.0f} requests/s, {result['events_per_s']:,.0f} events/s",
                flush=True,
            )
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    bare, one, many = results["bare"], results["single"], results["batch"]

    def row(label: str, r: dict[str, Any], events: str) -> str:
        return (
            f"| {label} | {r['rps']:,.0f} | {events} | {r['p50_us'] / 1000:.2f} | "
            f"{r['p99_us'] / 1000:.2f} | {r['non2xx']} |"
        )

    markdown = f"""## collector

`.venv/bin/python -m bench.bench_collector --seconds {args.seconds} --connections {args.connections} --workers {args.workers}`
(wrk, 2 threads, {args.connections} connections, {args.seconds} s after a 3 s warm-up, loopback; uvicorn
with {args.workers} worker(s) for both apps; the collector answers only after the local Apache Kafka
broker acknowledged (acks=all, idempotent producer); events counted by the collector's own
`collector_events_accepted_total`).

| load | requests/s | accepted events/s | p50 ms | p99 ms | non-2xx |
|---|---|---|---|---|---|
{row("bare ASGI 204 (ceiling)", bare, "-")}
{row("collector, single event", one, f"{one['events_per_s']:,.0f}")}
{row("collector, 100-event batch", many, f"{many['events_per_s']:,.0f}")}

Single events: **{one["rps"] / bare["rps"]:.0%}** of the bare endpoint's rate (aim: 50% or more).
Batches: **{many["events_per_s"]:,.0f} events/s** ({many["events_per_s"] / 50000:.0%} of the 50,000 events/s aim).
"""
    print(markdown)
    write_section("collector", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
