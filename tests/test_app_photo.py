"""Photo page (AppTest): a drawn face is found and labelled; bad uploads give a clear message."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.factories import face_image, make_tiny_run
from ui.text import md

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("photo-runs")
    make_tiny_run(root, "tiny-photo")
    return root


def _app(monkeypatch, runs):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("FER_RUNS_DIR", str(runs))
    monkeypatch.setenv("FER_MODEL", str(runs / "tiny-photo"))
    return AppTest.from_file(str(ROOT / "pages" / "photo.py"), default_timeout=120).run()


def _png(img) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_photo_upload_finds_and_labels_the_face(runs, monkeypatch):
    at = _app(monkeypatch, runs)
    assert not at.exception, at.exception
    at.file_uploader(key="photo_upload").set_value(("face.png", _png(face_image()),
                                                    "image/png")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("1 face found" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table["image"]) == ["face.png"]
    scores = table[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]]
    assert np.isclose(scores.sum(axis=1).iloc[0], 1.0, atol=1e-3)
    x, y, w, h = table[["x", "y", "w", "h"]].iloc[0]
    assert 100 < x + w / 2 < 300 and 100 < y + h / 2 < 300, "box around the drawn face"
    labels = [b.label for b in at.get("download_button")]
    assert "Download annotated image" in labels and "Download results (CSV)" in labels


def test_photo_mirror_averaging_toggle(runs, monkeypatch):
    from fer_core.predict import Predictor
    image = face_image()
    image[:, :200] = image[:, :200] * 0.8                   # left half darker: not symmetric
    pred = Predictor(runs / "tiny-photo")
    (plain,) = pred.predict_image(image)
    (face,) = pred.predict_image(image, tta=True)
    assert max(abs(face.scores[k] - plain.scores[k]) for k in face.scores) > 1e-3
    at = _app(monkeypatch, runs)
    at.toggle(key="photo_tta").set_value(True)
    at.file_uploader(key="photo_upload").set_value(("face.png", _png(image), "image/png")).run()
    assert not at.exception and not at.error
    row = at.dataframe[0].value.iloc[0]
    assert [row[k] for k in face.scores] == pytest.approx(list(face.scores.values()), abs=2e-4)


def test_photo_emoji_mode_and_several_files(runs, monkeypatch):
    at = _app(monkeypatch, runs)
    at.radio(key="photo_mode").set_value("emoji")
    blank = np.full((300, 300, 3), 200, np.uint8)
    at.file_uploader(key="photo_upload").set_value([
        ("face.webp", cv2.imencode(".webp", face_image(), [cv2.IMWRITE_WEBP_QUALITY, 101])[1]
         .tobytes(), "image/webp"),
        ("wall.png", _png(blank), "image/png")]).run()
    assert not at.exception, at.exception
    assert any("No face found in wall\\.png" in w.value for w in at.warning)  # escaped
    assert list(at.dataframe[0].value["image"]) == ["face.webp"]
    assert len(at.get("plotly_chart")) == 1          # probability bars for the one face


@pytest.mark.parametrize("name,data,expect", [
    ("notes.png", b"this is plain text, not a picture", "not an image"),
    ("cut.png", None, "corrupt"),
    ("huge.png", "big", "too large"),
])
def test_photo_bad_uploads_show_a_clear_error(runs, monkeypatch, name, data, expect):
    if data is None:
        data = _png(face_image())[:400]          # truncated PNG
    elif data == "big":
        data = _png(np.zeros((7000, 6000), np.uint8))   # 42 MP, above the pixel limit
    at = _app(monkeypatch, runs)
    at.file_uploader(key="photo_upload").set_value((name, data, "image/png")).run()
    assert not at.exception, at.exception
    assert at.error and md(name) in at.error[0].value and expect in at.error[0].value.lower(), \
        [e.value for e in at.error]
    # the page stays usable: a good photo afterwards works
    at.file_uploader(key="photo_upload").set_value(("face.png", _png(face_image()),
                                                    "image/png")).run()
    assert not at.exception and not at.error
    assert any("face found" in m.value for m in at.markdown)


def test_analyse_photo_box_and_emoji_overlays_differ(runs):
    from fer_core.predict import Predictor
    from fer_core.photo import analyse_photo, photo_rows

    pred = Predictor(runs / "tiny-photo")
    data = _png(face_image())
    box = analyse_photo("f.png", data, pred, "box")
    emoji = analyse_photo("f.png", data, pred, "emoji")
    assert len(box.faces) == 1 and box.annotated.shape == face_image().shape
    x, y, w, h = box.faces[0].box
    inner = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
    assert np.abs(emoji.annotated[inner].astype(int) - box.annotated[inner]).mean() > 10, \
        "the emoji is drawn over the face"
    assert cv2.imdecode(np.frombuffer(box.png(), np.uint8), cv2.IMREAD_COLOR).shape == \
        box.annotated.shape
    (row,) = photo_rows([box])
    assert row["emotion"] == box.faces[0].emotion and row["face"] == 1
