"""Session fixtures: a real Apache Kafka broker, unique topics per test, markers by folder."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.broker.local import LocalKafka, TansuBroker, java_available
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings

TESTS_DIR = Path(__file__).parent

# Every module in tests/fixtures/ is a fixture plugin (warehouse, processes, ...).
pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (TESTS_DIR / "fixtures").glob("*.py")
    if path.stem != "__init__"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` / `-m integration` / `-m e2e` select them."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS_DIR).parts
        if parts and parts[0] in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[0]))


def _report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_broker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalKafka | TansuBroker | None]:
    """A broker for the whole session: the one in KAFKA_BOOTSTRAP_SERVERS, else one we start."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        _report(pytestconfig, f"using external Kafka at {os.environ['KAFKA_BOOTSTRAP_SERVERS']}")
        yield None
        return
    broker: LocalKafka | TansuBroker
    if java_available():
        broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"))
    else:
        broker = TansuBroker()
    broker.start()
    if isinstance(broker, LocalKafka):
        _report(
            pytestconfig,
            f"started Apache Kafka {broker.version} (KRaft) at {broker.bootstrap_servers}",
        )
    else:
        _report(pytestconfig, f"started Tansu (memory only) at {broker.bootstrap_servers}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def bootstrap_servers(kafka_broker: LocalKafka | TansuBroker | None) -> str:
    """host:port of the session broker."""
    if kafka_broker is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    return kafka_broker.bootstrap_servers


def unique_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_settings(bootstrap_servers: str) -> KafkaSettings:
    """KafkaSettings on the session broker with every pipeline topic created under a fresh prefix."""
    settings = KafkaSettings(
        bootstrap_servers=bootstrap_servers, topic_prefix=unique_prefix(), partitions=6
    )
    ensure_topics(settings)
    return settings


def docker_engine_reachable() -> bool:
    """True when a Docker engine answers (testcontainers needs one)."""
    if shutil.which("docker") is None:
        return False
    try:
        import docker  # noqa: PLC0415

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False
    return True


@pytest.fixture(scope="session")
def testcontainers_enabled() -> None:
    """Skip unless CLOSEDLOOP_TESTCONTAINERS=1 and a Docker engine is reachable."""
    if os.environ.get("CLOSEDLOOP_TESTCONTAINERS") != "1":
        pytest.skip("testcontainers tests run only with CLOSEDLOOP_TESTCONTAINERS=1")
    if not docker_engine_reachable():
        pytest.skip("no Docker engine reachable for testcontainers")
