"""Schemathesis over the OpenAPI documents of a real `vft serve` (facade + in-process inference server) and of a
real `vft inference`: generated requests, valid and invalid, never get a 5xx. Bounded: a few cases per operation
and generation mode (a few hundred in all), so that `make test` stays short."""

from __future__ import annotations

import contextlib

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

CASES_PER_OPERATION = 6
FUZZ = settings(
    max_examples=CASES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def server_errors(base_url: str) -> tuple[int, list[str]]:
    """(cases sent, the 5xx answers) over every operation of the server's OpenAPI document."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    sent = 0
    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case) -> None:
                nonlocal sent
                sent += 1
                response = case.call(base_url=base_url, timeout=120)
                if response.status_code >= 500:
                    errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                    )

            with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
                send()
    return sent, errors


def test_facade_never_answers_5xx(served):
    sent, errors = server_errors(served.url)
    assert sent >= 50
    assert errors == [], "\n".join(errors)


def test_inference_server_never_answers_5xx(inference_served):
    sent, errors = server_errors(inference_served)
    assert sent >= 50
    assert errors == [], "\n".join(errors)
