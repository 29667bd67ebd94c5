"""The video job API: upload -> 202, status/progress, summary, frames.csv, limits, errors, TTL.

Jobs run for real: a child process per video through ``fer_core.jobs``."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fer_core import synthetic
from fer_core.api.app import create_app
from fer_core.api.routers.videos import store_of
from fer_core.settings import Settings


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return synthetic.synthetic_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", seconds=1.5)


def make_client(tmp_path, model_dir, **video_kw):
    return TestClient(create_app(Settings(model=str(model_dir), feedback_db=tmp_path / "fb.sqlite3",
                                          max_upload_mb=50, video_dir=tmp_path / "videos",
                                          **video_kw)))


def wait_done(c, vid, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = c.get(f"/v1/videos/{vid}")
        assert r.status_code == 200
        if r.json()["status"] not in ("queued", "running"):
            return r.json()
        time.sleep(0.3)
    raise AssertionError("video job did not finish")


def test_upload_status_summary_and_csv(tmp_path, tiny_run_dir, clip):
    with make_client(tmp_path, tiny_run_dir) as c:
        with open(clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("talk.mp4", f, "video/mp4")},
                       data={"every": "3", "annotate": "true"})
        assert r.status_code == 202, r.text
        job = r.json()
        vid = job["id"]
        assert job["status"] in ("queued", "running", "finished") and job["name"] == "talk.mp4"
        done = wait_done(c, vid)
        assert done["status"] == "finished", done
        s = done["summary"]
        assert s["video"]["frames"] == 45 and s["video"]["path"] == "talk.mp4"
        assert s["processing"]["every"] == 3 and len(s["faces"]) == 2
        assert done["progress"]["done"] == 45 and done["progress"]["fraction"] == 1.0
        r = c.get(f"/v1/videos/{vid}/frames.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        # 15 analysed frames; a new face counts once confirmed (its 2nd analysed frame)
        assert len(table) == 2 * 14 and {t["face"] for t in table} == {"1", "2"}
        assert c.get(f"/v1/videos/{vid}/summary.json").json()["faces"] == s["faces"]
        r = c.get(f"/v1/videos/{vid}/annotated")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"


def test_errors_are_json_4xx(tmp_path, tiny_run_dir, clip):
    with make_client(tmp_path, tiny_run_dir, video_max_mb=0.01, video_max_seconds=1.0) as c:
        r = c.post("/v1/videos", files={"file": ("notes.mp4", b"hello" * 100, "video/mp4")})
        assert r.status_code == 415 and r.json()["error"] == "not_a_video"
        assert "not a video file" in r.json()["detail"]
        with open(clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("talk.mp4", f, "video/mp4")})
        assert r.status_code == 413 and "0.01 MB" in r.json()["detail"]
        r = c.post("/v1/videos", json={"file": "x"})
        assert r.status_code == 415
        r = c.post("/v1/videos", files={"other": ("a.mp4", b"x")})
        assert r.status_code == 422 and r.json()["error"] == "missing_file"
        for bad in ("nope", "0" * 32, "../etc"):
            r = c.get(f"/v1/videos/{bad}")
            assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert not list((tmp_path / "videos").glob("*/input*"))  # nothing left behind
    with make_client(tmp_path, tiny_run_dir, video_max_seconds=1.0) as c:
        with open(clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("talk.mp4", f, "video/mp4")})
        assert r.status_code == 413 and r.json()["error"] == "too_long"


def test_jobs_in_flight_limit_and_ttl_cleanup(tmp_path, tiny_run_dir, clip):
    with make_client(tmp_path, tiny_run_dir, video_max_jobs=1) as c:
        with open(clip, "rb") as f:
            first = c.post("/v1/videos", files={"file": ("a.mp4", f, "video/mp4")})
        assert first.status_code == 202
        # the child process is still loading TensorFlow: the job counts as in flight
        assert c.get(f"/v1/videos/{first.json()['id']}").json()["status"] == "running"
        with open(clip, "rb") as f:
            second = c.post("/v1/videos", files={"file": ("b.mp4", f, "video/mp4")})
        assert second.status_code == 429 and second.json()["error"] == "too_many_jobs"
        wait_done(c, first.json()["id"])
        s = c.app.state.settings
        assert store_of(s).prune(now=time.time() + 3600) == []  # younger than the 24 h TTL
        assert store_of(s).prune(now=time.time() + 25 * 3600) == [first.json()["id"]]
        assert c.get(f"/v1/videos/{first.json()['id']}").status_code == 404


def test_openapi_documents_the_video_endpoints(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir) as c:
        spec = c.get("/openapi.json").json()
    post = spec["paths"]["/v1/videos"]["post"]
    assert {"202", "413", "415", "422", "429"} <= set(post["responses"])
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "404" in spec["paths"]["/v1/videos/{vid}"]["get"]["responses"]
    assert "409" in spec["paths"]["/v1/videos/{vid}/frames.csv"]["get"]["responses"]


def test_video_uploads_have_their_own_size_limit(tmp_path, tiny_run_dir, clip):
    """FER_VIDEO_MAX_MB, not the API's smaller request-body limit, bounds a video upload; other
    routes keep the API's limit."""
    size_mb = clip.stat().st_size / 1024 / 1024
    settings = Settings(model=str(tiny_run_dir), feedback_db=tmp_path / "fb.sqlite3",
                        max_upload_mb=size_mb / 4, video_dir=tmp_path / "videos",
                        video_max_mb=size_mb * 4)
    app = create_app(settings)
    with TestClient(app) as c:
        with open(clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("talk.mp4", f, "video/mp4")})
        assert r.status_code == 202, r.text
        wait_done(c, r.json()["id"])
        r = c.post("/v1/predict", files={"file": ("talk.png", clip.read_bytes(), "image/png")})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        app.state.settings = settings.with_(video_max_mb=size_mb / 8)
        with open(clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("talk.mp4", f, "video/mp4")})
        assert r.status_code == 413 and r.json()["error"] in ("too_large", "video_too_large"), r.text
