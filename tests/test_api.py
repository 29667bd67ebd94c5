"""REST API: every endpoint and error, feedback store under concurrency, export round trip."""

from __future__ import annotations

import base64
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest

from fer_core.api.settings import Settings
from fer_core.labels import FER7
from tests.factories import assert_error, make_client, png


@pytest.fixture
def client(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir) as c:
        yield c


def face_crop(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid-looking PNG whose header declares width x height pixels (data is tiny)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


# ---- meta -------------------------------------------------------------------------------------

def test_health_labels_models_with_model(client, tiny_run_dir):
    h = client.get("/v1/health").json()
    assert h["model_loaded"] is True and h["status"] == "ok"
    assert h["model_id"]
    assert h["labels"] == list(FER7)
    for k in ("fer_studio", "tensorflow", "keras", "opencv"):
        assert h["versions"][k], k
    lab = client.get("/v1/labels").json()
    assert lab["labels"] == list(FER7) and lab["label_set"] == "fer7"
    assert lab["emoji"]["happy"]
    models = client.get("/v1/models").json()["models"]
    active = [m for m in models if m["active"]]
    assert len(active) == 1 and active[0]["id"] == tiny_run_dir.name
    assert active[0]["labels"] == list(FER7)


def test_missing_model_health_and_503(tmp_path):
    with make_client(tmp_path) as c:
        h = c.get("/v1/health").json()
        assert h["model_loaded"] is False and h["status"] == "degraded"
        assert "not found" in h["model_error"]
        r = c.post("/v1/predict", files={"file": ("f.png", png(face_crop()), "image/png")})
        body = assert_error(r, 503, "model_not_loaded")
        assert "not found" in body["detail"]
        assert_error(c.post("/v1/predict/batch", json={"images_base64": ["aGk="]}), 503,
                     "model_not_loaded")
        # labels still answer (FER2013-7 by default)
        assert c.get("/v1/labels").json()["labels"] == list(FER7)


# ---- predict ----------------------------------------------------------------------------------

def test_predict_crop_multipart(client):
    r = client.post("/v1/predict?detect=false&top_k=2",
                    files={"file": ("f.png", png(face_crop()), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] and body["timing_ms"] > 0
    (face,) = body["faces"]
    assert face["box"] == [0, 0, 48, 48]
    assert set(face["scores"]) == set(FER7)
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(face["top_k"]) == 2
    assert face["top_k"][0][0] == face["emotion"] == max(face["scores"], key=face["scores"].get)
    assert len(face["prediction_id"]) >= 16


def test_predict_json_base64_same_result_as_multipart(client):
    data = png(face_crop(1))
    a = client.post("/v1/predict?detect=false", files={"file": ("f.png", data)}).json()
    b = client.post("/v1/predict?detect=false",
                    json={"image_base64": base64.b64encode(data).decode()}).json()
    c = client.post("/v1/predict?detect=false", json={
        "image_base64": "data:image/png;base64," + base64.b64encode(data).decode()}).json()
    for other in (b, c):
        assert other["faces"][0]["scores"] == pytest.approx(a["faces"][0]["scores"], abs=1e-5)
        assert other["faces"][0]["prediction_id"] != a["faces"][0]["prediction_id"]


def test_predict_detects_face_in_photo(client):
    from fer_core.synthetic import synthetic_frame
    img = synthetic_frame(640, 480, face_size=160, centre=(400, 200))
    r = client.post("/v1/predict", files={"file": ("p.jpg", cv2.imencode(".jpg", img)[1].tobytes())})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1
    x, y, w, h = faces[0]["box"]
    assert abs(x + w / 2 - 400) < 40 and abs(y + h / 2 - 200) < 60  # on the drawn face
    # feedback by image with detection keeps the detected face, not the whole photo
    b64 = base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()
    r = client.post("/v1/feedback", json={"label": "happy", "image_base64": b64})
    assert r.status_code == 201, r.text


def test_predict_blank_photo_has_no_faces(client):
    blank = np.full((200, 200, 3), 128, np.uint8)
    r = client.post("/v1/predict", files={"file": ("b.png", png(blank))})
    assert r.status_code == 200 and r.json()["faces"] == []


def test_batch_reports_errors_per_image(client):
    good = png(face_crop(2))
    r = client.post("/v1/predict/batch?detect=false",
                    files=[("files", ("a.png", good)), ("files", ("b.txt", b"not an image")),
                           ("files", ("c.png", good))])
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["index"] for x in res] == [0, 1, 2]
    assert res[0]["ok"] and res[2]["ok"] and not res[1]["ok"]
    assert res[1]["error"] == "unsupported_type" and res[1]["faces"] == []
    assert res[0]["faces"][0]["scores"] == pytest.approx(res[2]["faces"][0]["scores"], abs=1e-5)

    b64 = base64.b64encode(good).decode()
    r = client.post("/v1/predict/batch?detect=false",
                    json={"images_base64": [b64, "%%%not base64%%%", b64]})
    res = r.json()["results"]
    assert [x["ok"] for x in res] == [True, False, True]
    assert res[1]["error"] == "bad_base64"


# ---- errors -----------------------------------------------------------------------------------

def test_upload_too_big_by_content_length_and_while_reading(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir, max_upload_mb=0.05) as c:  # ~52 KB
        big = b"\xff\xd8\xff" + b"0" * 100_000
        assert_error(c.post("/v1/predict", files={"file": ("a.jpg", big)}), 413, "too_large")
        # chunked: no Content-Length, caught while reading
        r = c.post("/v1/predict", content=iter([big[:40_000], big[40_000:]]),
                   headers={"Content-Type": "application/json"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_error(r, 413, "too_large")
        # still serving afterwards
        ok = c.post("/v1/predict?detect=false", files={"file": ("a.png", png(face_crop()))})
        assert ok.status_code == 200


def test_decompression_bomb_rejected(client):
    r = client.post("/v1/predict", files={"file": ("bomb.png", bomb_png())})
    body = assert_error(r, 413, "too_many_pixels")
    assert "pixels" in body["detail"]


def test_pixel_limit_setting(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir, max_pixels=100 * 100) as c:
        big = png(np.zeros((200, 200), np.uint8))
        assert_error(c.post("/v1/predict", files={"file": ("a.png", big)}), 413,
                     "too_many_pixels")
        assert c.post("/v1/predict?detect=false",
                      files={"file": ("a.png", png(face_crop()))}).status_code == 200


@pytest.mark.parametrize("data,code", [
    (b"hello, this is text", "unsupported_type"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "unsupported_type"),  # wrong type
    (b"", "empty_file"),
])
def test_non_images_rejected(client, data, code):
    r = client.post("/v1/predict", files={"file": ("x", data)})
    assert_error(r, 415 if code == "unsupported_type" else 400, code)


def test_truncated_image_is_400(client):
    data = png(face_crop())[:60]
    assert_error(client.post("/v1/predict", files={"file": ("t.png", data)}), 400, "bad_image")


def test_bad_base64_bad_json_wrong_body(client):
    assert_error(client.post("/v1/predict", json={"image_base64": "!!!"}), 400, "bad_base64")
    assert_error(client.post("/v1/predict", content=b"{nope",
                             headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert_error(client.post("/v1/predict", json={"image": "x"}), 422, "invalid_request")
    assert_error(client.post("/v1/predict", content=b"abc",
                             headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(client.post("/v1/predict", files={"other": ("x.png", b"x")}), 422,
                 "missing_file")


def test_validation_errors_have_the_same_shape(client):
    r = client.post("/v1/predict?top_k=0", files={"file": ("f.png", png(face_crop()))})
    body = assert_error(r, 422, "invalid_request")
    assert "top_k" in body["detail"]
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


# ---- feedback ---------------------------------------------------------------------------------

def _predict_crop(client, seed=0):
    crop = face_crop(seed)
    r = client.post("/v1/predict?detect=false", files={"file": ("f.png", png(crop))})
    return crop, r.json()["faces"][0]


def test_feedback_by_prediction_id_and_export_round_trip(client, tmp_path):
    from fer_core import data
    crop, face = _predict_crop(client, 3)
    r = client.post("/v1/feedback", json={"prediction_id": face["prediction_id"],
                                          "label": "Happiness", "note": "smiling"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["label"] == "happy" and body["predicted"] == face["emotion"]
    assert body["stored"] == 1
    # by image (multipart) too
    r = client.post("/v1/feedback", data={"label": "sad", "detect": "false"},
                    files={"file": ("f.png", png(face_crop(4)))})
    assert r.status_code == 201, r.text
    export = client.get("/v1/feedback/export")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    path = tmp_path / "feedback.csv"
    path.write_bytes(export.content)
    ds = data.load(path, cache=False)
    assert len(ds) == 2
    assert list(ds.labels) == [FER7.index("happy"), FER7.index("sad")]
    assert set(ds.split) == {"train"}
    np.testing.assert_array_equal(ds.images[0], crop)  # the crop itself was kept
    np.testing.assert_array_equal(ds.images[1], face_crop(4))


def test_feedback_errors(client):
    _, face = _predict_crop(client)
    pid = face["prediction_id"]
    body = assert_error(client.post("/v1/feedback", json={"prediction_id": pid,
                                                          "label": "bored"}), 422,
                        "unknown_label")
    assert "angry" in body["detail"]
    assert_error(client.post("/v1/feedback", json={"prediction_id": "f" * 32, "label": "sad"}),
                 404, "unknown_prediction_id")
    assert_error(client.post("/v1/feedback", json={"label": "sad"}), 422, "invalid_request")
    b64 = base64.b64encode(png(face_crop())).decode()
    assert_error(client.post("/v1/feedback", json={"label": "sad", "prediction_id": pid,
                                                   "image_base64": b64}),
                 422, "invalid_request")
    assert_error(client.post("/v1/feedback", json={"label": "sad", "image_base64": "@@"}), 400,
                 "bad_base64")
    blank = base64.b64encode(png(np.full((100, 100), 90, np.uint8))).decode()
    assert_error(client.post("/v1/feedback", json={"label": "sad", "image_base64": blank}), 422,
                 "no_face")
    assert_error(client.post("/v1/feedback", data={"note": "x"}), 422, "invalid_request")
    assert client.get("/v1/feedback/export").text == "emotion,pixels,Usage\n"  # nothing stored


def test_crop_cache_is_bounded(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir, crop_cache=2) as c:
        ids = [_predict_crop(c, s)[1]["prediction_id"] for s in range(3)]
        assert_error(c.post("/v1/feedback", json={"prediction_id": ids[0], "label": "sad"}),
                     404, "unknown_prediction_id")
        assert c.post("/v1/feedback", json={"prediction_id": ids[2],
                                            "label": "sad"}).status_code == 201


def test_crop_cache_keeps_copies_in_one_ring_and_forgets_the_oldest():
    from fer_core.api.service import CropCache
    cache = CropCache(3)
    assert cache._crops.shape == (3, 48, 48) and len(cache) == 0  # all of it from the start
    batch = np.arange(4 * 48 * 48, dtype=np.uint32).reshape(4, 48, 48).astype(np.uint8)
    ids = [cache.put(face, f"label{i}", "m") for i, face in enumerate(batch)]
    assert len(cache) == 3 and cache.get(ids[0]) is None  # the oldest slot was reused
    crop, label, model_id = cache.get(ids[3])
    assert np.array_equal(crop, batch[3]) and (label, model_id) == ("label3", "m")
    assert not np.shares_memory(crop, batch) and not np.shares_memory(crop, cache._crops)
    crop[:] = 0  # the caller's copy: the cache keeps its own
    assert np.array_equal(cache.get(ids[3])[0], batch[3])
    assert [cache.get(i)[1] for i in ids[1:]] == ["label1", "label2", "label3"]


def test_api_key_enforced_when_set(tmp_path, tiny_run_dir):
    with make_client(tmp_path, tiny_run_dir, api_key="s3cret") as c:
        _, face = _predict_crop(c)  # predict needs no key
        fb = {"prediction_id": face["prediction_id"], "label": "fear"}
        assert_error(c.post("/v1/feedback", json=fb), 401, "unauthorized")
        assert_error(c.post("/v1/feedback", json=fb, headers={"X-API-Key": "wrong"}), 401,
                     "unauthorized")
        assert_error(c.get("/v1/feedback/export"), 401, "unauthorized")
        assert c.post("/v1/feedback", json=fb, headers={"X-API-Key": "s3cret"}).status_code == 201
        r = c.get("/v1/feedback/export", headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.text.count("\n") == 2


def test_api_key_not_required_when_unset(client):
    _, face = _predict_crop(client)
    r = client.post("/v1/feedback", json={"prediction_id": face["prediction_id"],
                                          "label": "fear"})
    assert r.status_code == 201
    assert client.get("/v1/feedback/export").status_code == 200


def test_concurrent_feedback_8_threads_x_100(client, tmp_path):
    from fer_core import data
    crops, pids = [], []
    for s in range(8):
        crop, face = _predict_crop(client, 100 + s)
        crops.append(crop)
        pids.append(face["prediction_id"])
    errors = []

    def worker(t):
        for i in range(100):
            r = client.post("/v1/feedback", json={"prediction_id": pids[t],
                                                  "label": FER7[(t + i) % 7], "note": f"{t}-{i}"})
            if r.status_code != 201:
                errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    path = tmp_path / "export.csv"
    path.write_bytes(client.get("/v1/feedback/export").content)
    ds = data.load(path, cache=False)
    assert len(ds) == 800
    assert np.bincount(ds.labels, minlength=7).tolist() == [
        sum(1 for t in range(8) for i in range(100) if (t + i) % 7 == c) for c in range(7)]
    # every stored crop is one of the 8 predicted crops
    stored = {ds.images[i].tobytes() for i in range(len(ds))}
    assert stored == {c.tobytes() for c in crops}


def test_feedback_store_threads_direct(tmp_path):
    from fer_core.api.feedback_store import FeedbackStore
    store = FeedbackStore(tmp_path / "direct.sqlite3")
    faces = face_crop()

    def worker(t):
        for i in range(100):
            store.add(faces, FER7[t % 7], note=str(i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 800
    import sqlite3
    mode = sqlite3.connect(tmp_path / "direct.sqlite3").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"
    assert store.export_csv().count("\n") == 801
    store.close()


def test_settings_from_env(tmp_path):
    from fer_core.errors import FerError
    s = Settings.from_env({"FER_MODEL": "/x/run", "FER_FEEDBACK_DB": str(tmp_path / "a.db"),
                           "FER_API_KEY": "k", "FER_MAX_UPLOAD_MB": "2",
                           "FER_MAX_PIXELS": "1000000", "FER_BATCH_WAIT_MS": "5"})
    assert s.max_upload_bytes == 2 * 1024 * 1024 and s.api_key == "k"
    assert s.max_pixels == 1_000_000 and s.batch_wait_ms == 5.0
    assert s.model == "/x/run"
    with pytest.raises(FerError, match="FER_MAX_UPLOAD_MB"):
        Settings.from_env({"FER_MAX_UPLOAD_MB": "lots"})
    d = Settings.from_env({})
    assert d.api_key is None and d.max_upload_mb == 10 and d.feedback_db.name == "feedback.sqlite3"
    assert d.tta is False and Settings.from_env({"FER_TTA": " Yes "}).tta is True
    assert Settings.from_env({"FER_TTA": "0"}).tta is False
    with pytest.raises(FerError, match="FER_TTA.*maybe"):
        Settings.from_env({"FER_TTA": "maybe"})


def test_tta_setting_averages_faces_with_their_mirrors(tmp_path, tiny_run_dir):
    from fer_core.predict import Predictor
    crop = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))  # dark left, light right
    expect = {tta: Predictor(tiny_run_dir).predict_faces(crop[None], tta=tta)[0] for tta in (0, 1)}
    assert np.abs(expect[0] - expect[1]).max() > 1e-4
    for tta in (False, True):
        with make_client(tmp_path, tiny_run_dir, tta=tta) as c:
            assert c.get("/v1/health").json()["tta"] is tta
            face = c.post("/v1/predict?detect=false",
                          files={"file": ("f.png", png(crop))}).json()["faces"][0]
            got = [face["scores"][k] for k in FER7]
            np.testing.assert_allclose(got, expect[tta], atol=1e-5)
