"""schemathesis against the collector's OpenAPI over real HTTP: no 5xx, documented statuses and bodies."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.collector import RunningCollector

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def collector_openapi(collector: RunningCollector) -> Any:
    return schemathesis.openapi.from_url(f"{collector.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("collector_openapi")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    """Random requests as generated, then the same case with a valid write key (past auth)."""
    case.call_and_validate(checks=CHECKS)
    if case.operation.path == "/v1/events":
        case.call_and_validate(checks=CHECKS, headers={"X-Write-Key": "dev-write-key"})
