"""The API's own OpenAPI document, fuzzed with schemathesis: no 5xx, and
every response matches what the document says."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .hostile import StaticLookup

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_api_survives_fuzzing(services):
    lookup = StaticLookup({"hooks.example": ["127.0.0.1"]})
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=lookup)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{svc.base_url}/openapi.json") as response:
            document = await response.json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    calls: list[str] = []

    def fuzz() -> None:
        for result, mode in itertools.product(
            list(schema.get_all_operations()), GenerationMode
        ):
            operation = result.ok()
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=40,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis_given(strategy)
            def check(case) -> None:
                calls.append(case.operation.label)
                case.call_and_validate(
                    base_url=svc.base_url, headers=svc.auth, checks=CHECKS
                )

            try:
                check()
            except Unsatisfiable:
                # A route without parameters has no invalid input to send.
                assert mode is GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as exc:  # collect them all
                failures.append(f"{operation.label}: {exc}")

    await asyncio.to_thread(fuzz)
    assert not failures, "\n\n".join(failures)
    assert {"POST /notify", "GET /notify", "GET /notify/{job_id}"} <= set(calls)
    assert len(calls) > 200


def hypothesis_given(strategy):
    from hypothesis import given

    return given(case=strategy)
