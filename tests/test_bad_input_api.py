"""Bad input the API probe found: deep JSON, server paths in /v1/models, odd numeric settings."""

from __future__ import annotations

import pytest

from fer_core.api.settings import Settings
from fer_core.errors import FerError
from tests.factories import assert_error, make_client


def _deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


@pytest.fixture
def client(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch", "/v1/feedback"])
@pytest.mark.parametrize("body", [_deep(3000), _deep(100_000),
                                  b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                  b'{"image_base64": ' + _deep(4000) + b"}"])
def test_deeply_nested_json_is_400_invalid_json(client, path, body):
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    detail = assert_error(r, 400, "invalid_json")["detail"]
    assert "nested" in detail and len(detail) < 300, detail


def test_models_list_ids_and_names_not_server_paths(client, tiny_run_dir, tmp_path):
    models = client.get("/v1/models").json()["models"]
    assert models
    text = repr(models)
    assert str(tiny_run_dir) not in text and str(tiny_run_dir.parent) not in text
    for m in models:
        assert "path" not in m, m
        assert "/" not in m["id"] and "/" not in m["name"], m
    active = [m for m in models if m["active"]]
    assert len(active) == 1 and active[0]["id"] == tiny_run_dir.name
    assert active[0]["name"] == tiny_run_dir.name
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ModelInfo"]
    assert "path" not in schema["properties"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "Infinity", "1e400", "NaN"])
def test_non_finite_upload_limit_is_a_clear_error(value):
    with pytest.raises(FerError, match="FER_MAX_UPLOAD_MB"):
        Settings.from_env({"FER_MAX_UPLOAD_MB": value})


@pytest.mark.parametrize("kind", ["missing", "not-a-model"])
def test_model_errors_name_no_server_paths(tmp_path, kind):
    """/v1/health and the 503 of /v1/predict say why the model is missing without the
    server's folders (the server log keeps the full path)."""
    model = tmp_path / "secret-folder" / "my-run"
    if kind == "not-a-model":
        model.mkdir(parents=True)
        (model / "model.keras").write_bytes(b"not a zip")
    with make_client(tmp_path, model) as c:
        health = c.get("/v1/health").json()
        assert health["model_loaded"] is False and health["model_error"]
        r = c.post("/v1/predict", files={"file": ("a.png", b"x", "image/png")})
        assert r.status_code == 503
        for text in (health["model_error"], r.json()["detail"]):
            assert str(tmp_path) not in text and "secret-folder" not in text, text
        assert c.app.state.service.error and str(tmp_path) in c.app.state.service.error
