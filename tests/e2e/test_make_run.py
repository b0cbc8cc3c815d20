"""`make run`'s Procfile under honcho: every process comes up, the banner names them, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from services.broker.local import free_port

ROOT = Path(__file__).resolve().parents[2]


def _session_processes(session_id: int) -> list[str]:
    listing = subprocess.run(
        ["ps", "-e", "-o", "sid=,pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if line.split(None, 1)[0] == str(session_id)]


def test_procfile_starts_the_stack_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("kafka", "controller", "ch", "collector", "crm")}
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LOCAL_KAFKA_PORT": str(ports["kafka"]),
        "LOCAL_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "LOCAL_KAFKA_DATA_DIR": str(tmp_path / "kafka"),
        "KAFKA_PARTITIONS": "2",
        "CLICKHOUSE_PORT": str(ports["ch"]),
        "WAREHOUSE_DATA_DIR": str(tmp_path / "warehouse"),
        "COLLECTOR_PORT": str(ports["collector"]),
        "COLLECTOR_SPOOL_DIR": str(tmp_path / "spool"),
        "CRM_INGEST_PORT": str(ports["crm"]),
        "CRM_INGEST_DEDUPE_PATH": str(tmp_path / "dedupe.sqlite3"),
    }
    # Unset, so that make run starts its own broker and every client follows LOCAL_KAFKA_PORT.
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "start"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "closedloop is up" not in log_path.read_text(errors="replace"):
            assert honcho.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        banner = log_path.read_text(errors="replace")
        for port in (ports["kafka"], ports["ch"], ports["collector"], ports["crm"]):
            assert f"127.0.0.1:{port}" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['ch']}/ping", timeout=5) as answer:
            assert answer.read() == b"Ok.\n"
        assert len(_session_processes(honcho.pid)) >= 8  # honcho and its seven processes

        os.killpg(honcho.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        honcho.wait(60)
        deadline = time.monotonic() + 30
        while _session_processes(honcho.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _session_processes(honcho.pid) == []
    finally:
        if honcho.poll() is None or _session_processes(honcho.pid):
            os.killpg(honcho.pid, signal.SIGKILL)
