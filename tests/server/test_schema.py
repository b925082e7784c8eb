"""Property-based run against the app's own OpenAPI schema (schemathesis): whatever a client sends
within or around the documented shapes, no 5xx and every answer matches the schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from server.app import create_app
from server.settings import Settings
from service_data import AUTH, fill_gallery

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402


@pytest.fixture
def api_schema(make_settings: Callable[..., Settings]) -> Iterator[object]:
    with TestClient(create_app(make_settings())) as client:
        fill_gallery(client)
    # A fresh app over the filled gallery; schemathesis runs its lifespan (one opener at a time).
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(make_settings()))


@pytest.mark.slow
def test_api_conforms_to_its_schema(api_schema) -> None:
    # Driven with hypothesis directly: schemathesis's pytest plugin does not support this
    # pytest. Random bytes are a valid "binary" upload to the schema but not a valid image, and
    # form lists may disagree in length: the schema cannot say so, hence no positive-acceptance
    # check.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /search", "POST /gallery", "DELETE /gallery", "DELETE /gallery/{item_id}",
        "GET /gallery/stats", "GET /gallery/{item_id}/image", "GET /healthz", "GET /readyz",
        "GET /metrics"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        run()
    # The examples really reached the service, uploads included.
    served = api_schema.app.state.metrics.render().decode()
    assert 'route="/search",status="200"' in served or 'route="/search",status="400"' in served
