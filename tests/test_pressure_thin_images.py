"""Degenerate image shapes (1xN, Nx1, >100:1) decode or are refused in words on every route, the
CLI and the Photo page's path; one bad item in a batch gets its own error; an unexpected error is
a 500 JSON answer that leaves the server (and the keep-alive connection) alone."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fer_core.api.app import create_app
from fer_core.api.settings import Settings
from fer_core.synthetic import synthetic_frame
from tests.factories import ROOT

THIN = [(641, 1), (700, 1), (2000, 3), (20000, 1), (1, 20000)]


def png(w: int, h: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings(feedback_db=tmp_path_factory.mktemp("fb") / "fb.sqlite3"))
    with TestClient(app) as c:
        assert c.get("/v1/health").json()["model_loaded"]
        yield c


@pytest.mark.parametrize("w,h", THIN)
def test_thin_images_give_no_face_on_predict_and_a_clear_422_on_feedback(client, w, h):
    r = client.post("/v1/predict?detect=true", files={"file": ("thin.png", png(w, h))})
    assert r.status_code == 200 and r.json()["faces"] == [], r.text
    r = client.post("/v1/predict?detect=false", json={"image_base64": b64(png(w, h))})
    assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text
    r = client.post("/v1/feedback", json={"label": "happy", "image_base64": b64(png(w, h))})
    assert r.status_code == 422 and r.json()["error"] == "no_face", r.text


def test_one_bad_item_in_a_batch_gets_its_own_answer(client, monkeypatch):
    photo = cv2.imencode(".jpg", synthetic_frame(640, 480, face_size=160))[1].tobytes()
    items = [photo, png(641, 1), b"not an image", png(1, 20000), photo]
    r = client.post("/v1/predict/batch?detect=true",
                    json={"images_base64": [b64(x) for x in items]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["ok"] for x in res] == [True, True, False, True, True]
    assert len(res[0]["faces"]) == 1 and res[4]["faces"][0]["box"] == res[0]["faces"][0]["box"]
    assert res[1]["faces"] == [] and res[2]["error"] == "unsupported_type"

    # an unexpected failure in one item's analysis: that item's 422, the others answered
    service = client.app.state.service
    real = service._detect

    def flaky(image):
        if image.shape[:2] == (1, 641):
            raise RuntimeError("detector broke")
        return real(image)

    monkeypatch.setattr(service, "_detect", flaky)
    r = client.post("/v1/predict/batch", json={"images_base64": [b64(x) for x in items]})
    res = r.json()["results"]
    assert r.status_code == 200 and [x["ok"] for x in res] == [True, False, False, True, True]
    assert res[1]["error"] == "cannot_analyse" and "641x1" in res[1]["detail"]
    r = client.post("/v1/predict", files={"file": ("thin.png", png(641, 1))})
    assert r.status_code == 422 and r.json()["error"] == "cannot_analyse"

    # anything else unexpected: a per-item 500 in a batch, a 500 JSON answer (not re-raised to
    # the server, which would close the keep-alive connection) for a single image
    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "prepare", broken)
    r = client.post("/v1/predict/batch", json={"images_base64": [b64(photo)] * 2})
    assert r.status_code == 200
    assert [(x["ok"], x["error"]) for x in r.json()["results"]] == [(False, "internal")] * 2
    r = client.post("/v1/predict", files={"file": ("a.jpg", photo)})  # TestClient re-raises
    assert r.status_code == 500 and r.json() == {"error": "internal",  # server errors, so
                                                 "detail": "internal server error"}  # none left


def test_cli_predict_on_a_thin_image_reports_no_face(tmp_path):
    for w, h in ((641, 1), (1, 20000)):
        (tmp_path / f"thin-{w}x{h}.png").write_bytes(png(w, h))
    r = subprocess.run([sys.executable, "-m", "fer_core", "predict", str(tmp_path / "thin-641x1.png"),
                        str(tmp_path / "thin-1x20000.png"), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    out = json.loads(r.stdout)
    items = out["images"] if isinstance(out, dict) else out
    assert [item["faces"] for item in items] == [[], []], r.stdout[-2000:]


def test_photo_page_path_on_a_thin_image(client):
    from fer_core.photo import analyse_photo
    predictor = client.app.state.service.predictor
    for w, h in THIN:
        result = analyse_photo(f"thin-{w}x{h}.png", png(w, h), predictor)
        assert result.faces == [] and result.annotated.shape[:2] == (h, w)
