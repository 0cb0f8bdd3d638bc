"""Fuzz the HTTP API from its own OpenAPI document (schemathesis): valid and invalid requests,
no 5xx, no worker crash, and a JSON error body on every 4xx; with the key configured as a
``sha256:`` entry and per-key rate limits on."""

import importlib
import os
import pkgutil

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from app.ingest import openapi
from app.ingest.keys import hashed_entry
from tests.support.helpers import AUTH, KEY


def _import_all_of(package) -> None:
    """Import every module of ``package`` now. schemathesis is a pytest plugin, so pytest rewrites
    its modules as they are imported, and CPython 3.11.7 can fail that in a deep call stack
    ("SystemError: AST constructor recursion depth mismatch": twice in the 10k run, from
    different lazily imported modules). At collection the stack is shallow."""
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(module.name)
        except ImportError:
            pass  # an optional integration whose library is not installed (allure)


_import_all_of(schemathesis)

# `make faults` runs the 10,000 requests of issue 4; `make test` a quick smoke of the same test.
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "600"))


@pytest.mark.parametrize(
    "requests",
    [
        pytest.param(10_000, marks=[pytest.mark.faults, pytest.mark.long], id="10k"),
        pytest.param(REQUESTS, id="smoke"),
    ],
)
def test_fuzzed_requests_never_get_a_5xx(pipeline_factory, requests):
    # The key configured hashed, rate limits on: both paths are fuzzed too (429 is a 4xx).
    pipeline = pipeline_factory(api_keys=hashed_entry(KEY, "fuzz"), rate_limit="2000")
    worker = pipeline.start_worker()  # rows to read back
    ingest = pipeline.start_ingest()
    base = f"http://127.0.0.1:{ingest.port}"
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    per_strategy = requests // (2 * len(operations)) + 1
    seen = {"requests": 0, "4xx": 0, "2xx": 0}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=per_strategy,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case):
                headers = {**(case.headers or {}), **AUTH}  # a valid key: fuzz past the auth check
                response = case.call(base_url=base, headers=headers, timeout=30)
                seen["requests"] += 1
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                if response.status_code >= 400:
                    seen["4xx"] += 1
                    seen[response.status_code] = seen.get(response.status_code, 0) + 1
                    body = response.json()
                    assert isinstance(body, dict) and body.get("error"), response.text
                else:
                    seen["2xx"] += 1

            exercise()
    assert ingest.process.poll() is None, "the ingest tier died"
    assert worker.process.poll() is None, "the worker died"
    print(f"\nfuzz: {seen}")
    assert seen["requests"] >= requests
