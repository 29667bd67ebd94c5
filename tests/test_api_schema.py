"""Property-based run of the OpenAPI schema (schemathesis): no input gives a 5xx, responses
match the documented schemas and status codes."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from fer_core.api.app import create_app
from fer_core.api.settings import Settings
from tests.factories import tiny_model_dir


API_KEY = "schema-test-key"


def _app():
    # built at import: schemathesis fetches /openapi.json (and starts the lifespan) right away
    root = Path(tempfile.mkdtemp(prefix="fer-api-schema-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    model = tiny_model_dir(root / "tiny-run")
    return create_app(Settings(model=str(model), feedback_db=root / "fb.sqlite3",
                               max_upload_mb=1, max_pixels=4_000_000, api_key=API_KEY))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())

# Random bytes are schema-valid "binary" but not images: a 4xx for them is right, so the check
# that schema-valid data must be accepted does not apply.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=int(os.environ.get("FER_SCHEMA_EXAMPLES", "12")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_documented_responses(case):
    response = case.call_and_validate(headers={"X-API-Key": API_KEY},
                                      excluded_checks=EXCLUDED)
    assert response.status_code < 500, (case.method, case.path, response.text)
