"""fer_core.video without PyAV, as on the runtime install: videos read through OpenCV's own
FFmpeg (``_CvReader``) and the annotated copy written as VP8 WebM (``_CvEncoder``).

Each test makes ``video.has_pyav()`` answer False, so the same ``analyze``/``probe`` calls take
the OpenCV path in this (full) virtualenv; the results are compared with the PyAV path on the
same clips. tests/test_install.py runs ``fer-studio video`` on the real runtime install.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import synthetic, video
from fer_core.errors import FerError
from fer_core.labels import FER7
from fer_core.predict import Predictor
from tests.factories import tiny_cnn


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(tiny_cnn(width=8, strides=2), video.detector_config(), labels=FER7)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """1 s, 30 fps, 640x480, two drawn faces moving."""
    return synthetic.synthetic_clip(tmp_path_factory.mktemp("clip") / "two.mp4", seconds=1.0)


@pytest.fixture
def no_pyav(monkeypatch):
    monkeypatch.setattr(video, "has_pyav", lambda: False)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_opencv_reader_gives_what_pyav_gives(clip, predictor, tmp_path, monkeypatch):
    ref = video.analyze(clip, tmp_path / "av", predictor=predictor, every=5)
    monkeypatch.setattr(video, "has_pyav", lambda: False)
    assert isinstance(video.open_video(clip), video._CvReader)
    got = video.analyze(clip, tmp_path / "cv", predictor=predictor, every=5)
    for key in ("frames", "fps", "width", "height", "codec", "rotation", "duration_s"):
        assert got["video"][key] == ref["video"][key], key
    a, b = rows(tmp_path / "av" / "frames.csv"), rows(tmp_path / "cv" / "frames.csv")
    assert len(b) == len(a) > 0
    for ra, rb in zip(a, b):
        assert (rb["frame"], rb["time_s"], rb["face"]) == (ra["frame"], ra["time_s"], ra["face"])
        # grey from OpenCV's BGR instead of FFmpeg's luma plane: the same faces, within pixels
        assert all(abs(int(rb[k]) - int(ra[k])) <= 4 for k in "xywh")
    assert [f["id"] for f in got["faces"]] == [f["id"] for f in ref["faces"]] == [1, 2]
    assert got["warnings"] == []
    assert video.probe(clip)["codec"] == "h264"


def test_variable_frame_rate_and_rotation(predictor, tmp_path, no_pyav):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 1.3, 1.35, 2.0]
    vfr = synthetic.synthetic_clip(tmp_path / "vfr.mkv", frame_times=times, faces=1)
    s = video.analyze(vfr, tmp_path / "vfr", predictor=predictor, every=1)
    got = [float(r["time_s"]) for r in rows(tmp_path / "vfr" / "frames.csv")]
    assert got == pytest.approx(times[1:], abs=2e-3) and s["video"]["frames"] == len(times)

    phone = synthetic.synthetic_clip(tmp_path / "phone.mp4", seconds=0.5, size=(320, 480),
                                     faces=1, rotation=90, face_size=70, moving=False)
    s = video.analyze(phone, tmp_path / "phone", predictor=predictor, every=3)
    assert (s["video"]["width"], s["video"]["height"], s["video"]["rotation"]) == (320, 480, 90)
    table = rows(tmp_path / "phone" / "frames.csv")
    assert len(table) == 4
    for r in table:  # the face is centred in the displayed (portrait) frame
        cx, cy = int(r["x"]) + int(r["w"]) / 2, int(r["y"]) + int(r["h"]) / 2
        assert abs(cx - 160) < 30 and abs(cy - 240) < 40


def test_annotated_video_is_vp8_webm_with_every_frame_and_the_band(clip, predictor, tmp_path,
                                                                   no_pyav):
    s = video.analyze(clip, tmp_path, predictor=predictor, annotate=True)
    assert s["outputs"]["annotated"] == "annotated.webm"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "annotated.webm", "frames.csv", "summary.json"]
    cap = cv2.VideoCapture(str(tmp_path / "annotated.webm"))
    tag = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1")
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert tag.upper() == "VP80"
    assert len(frames) == 30 and frames[0].shape == (480 + 44, 640, 3)
    assert (frames[-1][480:].std(axis=2) > 20).sum() > 200  # the coloured timeline band


def test_bad_files_get_clear_messages(predictor, tmp_path, no_pyav):
    (tmp_path / "notes.mp4").write_text("hello\n" * 50)
    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = {"notes.mp4": "not a video file", "face.png": "is an image",
             "empty.mp4": "empty file", "missing.mp4": "no such video file",
             ".": "is a folder"}
    for name, msg in cases.items():
        with pytest.raises(FerError, match=msg) as e:
            video.probe(tmp_path / name)
        assert e.value.where == str(tmp_path / name)
    # an MP4 cut before its index was written; a Matroska file cut in the middle
    mp4 = synthetic.synthetic_clip(tmp_path / "full.mp4", seconds=1, faces=1)
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[:mp4.stat().st_size // 2])
    with pytest.raises(FerError, match="truncated or unfinished MP4"):
        video.analyze(tmp_path / "cut.mp4", tmp_path / "out", predictor=predictor)
    mkv = synthetic.synthetic_clip(tmp_path / "full.mkv", seconds=4, faces=1)
    (tmp_path / "cut.mkv").write_bytes(mkv.read_bytes()[:mkv.stat().st_size // 2])
    s = video.analyze(tmp_path / "cut.mkv", tmp_path / "out", predictor=predictor)
    stop = s["video"]["stopped"]
    assert stop is not None and 10 < stop["frame"] < 110
    assert s["video"]["frames"] == stop["frame"]
    assert any(f"stopped at frame {stop['frame']}" in w for w in s["warnings"])
