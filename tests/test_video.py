"""fer_core.video: frames.csv + summary.json from video files, tracks, timestamps, bad input.

Tests taking the ``reader`` fixture run with both readers: PyAV, and OpenCV's own FFmpeg as on
the runtime install (no PyAV); tests/test_install.py runs ``fer-studio video`` on that install.
"""

from __future__ import annotations

import csv
import errno
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_core import synthetic, video
from fer_core.errors import FerError
from fer_core.labels import FER7
from fer_core.model import FerModel
from fer_core.predict import Predictor
from tests.factories import ROOT, save_model_dir, tiny_cnn

HEAD = ["frame", "time_s", "face", "x", "y", "w", "h", "emotion", *FER7]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(tiny_cnn(width=8, strides=2), video.detector_config(), labels=FER7)


@pytest.fixture(params=["pyav", "opencv"])
def reader(request, monkeypatch) -> str:
    """A test taking it runs twice: videos read through PyAV, then through OpenCV's own FFmpeg
    as on the runtime install, which has no PyAV (``video.has_pyav()`` answering False)."""
    if request.param == "opencv":
        monkeypatch.setattr(video, "has_pyav", lambda: False)
    return request.param


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s, 30 fps, 640x480, two drawn faces moving."""
    return synthetic.synthetic_clip(tmp_path_factory.mktemp("clip") / "two.mp4", seconds=2.0)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def test_two_moving_faces_give_rows_tracks_and_summary(clip, predictor, tmp_path):
    s = video.analyze(clip, tmp_path, predictor=predictor, every=5)
    assert header(tmp_path / "frames.csv") == HEAD
    table = rows(tmp_path / "frames.csv")
    analysed = list(range(5, 60, 5))  # a new face counts once confirmed: from frame 5 on
    assert [int(r["frame"]) for r in table] == [f for f in analysed for _ in (0, 1)]
    for r in table:
        assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / 30, abs=2e-3)
        p = np.array([float(r[k]) for k in FER7])
        assert p.sum() == pytest.approx(1, abs=1e-3) and r["emotion"] == FER7[int(p.argmax())]
    # stable ids: face 1 stays on one side, face 2 on the other, both move
    by_id = {i: [r for r in table if r["face"] == str(i)] for i in (1, 2)}
    assert set(r["face"] for r in table) == {"1", "2"}
    xs = {i: [int(r["x"]) + int(r["w"]) / 2 for r in by_id[i]] for i in (1, 2)}
    assert max(xs[1]) < 320 < min(xs[2]) or max(xs[2]) < 320 < min(xs[1])
    assert all(max(v) - min(v) > 20 for v in xs.values())
    assert s["video"]["frames"] == 60 and s["video"]["path"] == str(clip)
    assert (s["video"]["width"], s["video"]["height"]) == (640, 480)
    assert s["video"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert s["video"]["fps"] == pytest.approx(30, abs=0.1)
    assert s["processing"]["every"] == 5 and s["processing"]["frames_per_sec"] > 0
    assert [f["id"] for f in s["faces"]] == [1, 2]
    for f in s["faces"]:
        assert f["frames"] == 11 and f["first_s"] == pytest.approx(5 / 30, abs=2e-3)
        assert f["last_s"] == pytest.approx(55 / 30, abs=2e-3)
        assert sum(f["share"].values()) == pytest.approx(1, abs=1e-3)
        assert f["dominant"] == max(f["share"], key=f["share"].get)
        labels = [r["emotion"] for r in by_id[f["id"]]]
        assert f["share"][f["dominant"]] == pytest.approx(labels.count(f["dominant"]) / 11,
                                                          abs=0.02)
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert s["warnings"] == [] and not list(tmp_path.glob("*.part"))


def test_smoothed_columns_follow_the_raw_ones(clip, predictor, tmp_path):
    video.analyze(clip, tmp_path, predictor=predictor, every=10, smoothing=0.6)
    head = header(tmp_path / "frames.csv")
    assert head == HEAD + ["emotion_smoothed", *(f"{k}_smoothed" for k in FER7)]
    r = rows(tmp_path / "frames.csv")
    first = [x for x in r if x["face"] == "1"]
    raw = np.array([[float(x[k]) for k in FER7] for x in first])
    sm = np.array([[float(x[f"{k}_smoothed"]) for k in FER7] for x in first])
    assert np.allclose(sm[1], 0.6 * sm[0] + 0.4 * raw[1], atol=1e-4)


def test_variable_frame_rate_times_come_from_timestamps(predictor, tmp_path, reader):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 1.3, 1.35, 2.0]
    clip = synthetic.synthetic_clip(tmp_path / "vfr.mkv", frame_times=times, faces=1)
    s = video.analyze(clip, tmp_path / "out", predictor=predictor, every=1)
    got = [float(r["time_s"]) for r in rows(tmp_path / "out" / "frames.csv")]
    assert got == pytest.approx(times[1:], abs=2e-3)  # counted once confirmed (2nd frame)
    assert s["video"]["frames"] == len(times)
    share_time = s["faces"][0]["seconds"]
    assert share_time == pytest.approx(2.0 - 0.1 + 1 / s["video"]["fps"], abs=0.05)


def test_phone_rotation_is_honoured(predictor, tmp_path, reader):
    # stored sideways (240x320) with a 90 degree display rotation: upright faces only if rotated
    clip = synthetic.synthetic_clip(tmp_path / "phone.mp4", seconds=0.5, size=(320, 480), faces=1,
                                rotation=90, face_size=70, moving=False)
    s = video.analyze(clip, tmp_path / "out", predictor=predictor, every=3)
    assert (s["video"]["width"], s["video"]["height"], s["video"]["rotation"]) == (320, 480, 90)
    table = rows(tmp_path / "out" / "frames.csv")
    assert len(table) == 4 and {r["face"] for r in table} == {"1"}  # frames 3..12
    for r in table:  # the face is centred in the displayed (portrait) frame
        cx, cy = int(r["x"]) + int(r["w"]) / 2, int(r["y"]) + int(r["h"]) / 2
        assert abs(cx - 160) < 30 and abs(cy - 240) < 40


def test_no_face_gives_a_header_only_csv_and_says_so(predictor, tmp_path):
    clip = synthetic.synthetic_clip(tmp_path / "empty.mp4", seconds=0.5, faces=0)
    s = video.analyze(clip, tmp_path / "out", predictor=predictor)
    assert (tmp_path / "out" / "frames.csv").read_text().splitlines() == [",".join(HEAD)]
    assert s["faces"] == [] and s["video"]["frames"] == 15
    assert any("no face found in 15 frames" in w for w in s["warnings"])


def test_4k_frames_are_downscaled_and_boxes_mapped_back(predictor, tmp_path):
    clip = synthetic.synthetic_clip(tmp_path / "uhd.mp4", seconds=0.2, fps=30, size=(3840, 2160),
                                faces=1, face_size=500, moving=False)
    s = video.analyze(clip, tmp_path / "out", predictor=predictor, every=3)
    assert (s["video"]["width"], s["video"]["height"]) == (3840, 2160)
    assert s["processing"]["work_scale"] == pytest.approx(1280 / 3840, abs=1e-3)
    r = rows(tmp_path / "out" / "frames.csv")[0]
    cx = int(r["x"]) + int(r["w"]) / 2
    assert abs(cx - 1920) < 120 and int(r["w"]) > 300  # original pixels, not the work copy


def test_annotated_video_is_h264_with_every_frame_and_the_band(clip, predictor, tmp_path):
    import av
    s = video.analyze(clip, tmp_path, predictor=predictor, annotate=True)
    assert s["outputs"]["annotated"] == "annotated.mp4"
    with av.open(str(tmp_path / "annotated.mp4")) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
    assert len(frames) == 60 and frames[0].shape == (480 + 44, 640, 3)
    band = frames[-1][480:]
    assert (band.std(axis=2) > 20).sum() > 200  # coloured timeline marks, not a flat strip


def test_opencv_reader_gives_what_pyav_gives(clip, predictor, tmp_path, monkeypatch):
    """The runtime install's reader (OpenCV's FFmpeg) against PyAV on the same clip."""
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
        # grey from OpenCV's BGR instead of FFmpeg's luma plane: the same faces, the boxes
        # within a detector scale step (seen: up to 7 px on a 69 px face)
        tol = max(4, 0.12 * int(ra["w"]))
        assert all(abs(int(rb[k]) - int(ra[k])) <= tol for k in "xywh"), (ra, rb)
    assert [f["id"] for f in got["faces"]] == [f["id"] for f in ref["faces"]] == [1, 2]
    assert got["warnings"] == [] and video.probe(clip)["codec"] == "h264"


def test_without_pyav_the_annotated_video_is_vp8_webm(clip, predictor, tmp_path, monkeypatch):
    import cv2
    monkeypatch.setattr(video, "has_pyav", lambda: False)
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
    assert len(frames) == 60 and frames[0].shape == (480 + 44, 640, 3)
    assert (frames[-1][480:].std(axis=2) > 20).sum() > 200  # the coloured timeline band


def test_stop_request_keeps_what_was_analysed(clip, predictor, tmp_path):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3
    s = video.analyze(clip, tmp_path, predictor=predictor, every=2, should_stop=stop)
    assert s["video"]["frames"] == 24 and s["processing"]["stopped_by_user"]["frame"] == 24
    assert len(rows(tmp_path / "frames.csv")) == 2 * 11
    assert any("stopped on request" in w for w in s["warnings"])
    # stopped before the first frame (e.g. while the model loaded): empty outputs, not an error
    s = video.analyze(clip, tmp_path / "early", predictor=predictor, should_stop=lambda: True)
    assert s["video"]["frames"] == 0 and s["faces"] == []
    assert len((tmp_path / "early" / "frames.csv").read_text().splitlines()) == 1


def test_progress_reports_frames(clip, predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "_progress_every", lambda interval=0.5: (lambda: True))
    seen = []
    video.analyze(clip, tmp_path, predictor=predictor,
                  progress=lambda done, total, **kw: seen.append((done, total, kw)))
    assert [d for d, _, _ in seen] == [*range(1, 61), 60]  # each frame, then the end
    assert all(t == 60 for _, t, _ in seen) and "fps" in seen[-1][2]


# ---- bad input -------------------------------------------------------------------------------

def test_not_a_video_an_image_an_empty_file_and_a_folder(tmp_path, reader):
    import cv2
    (tmp_path / "notes.mp4").write_text("hello\n" * 50)
    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = {"notes.mp4": "not a video file", "face.png": "is an image",
             "empty.mp4": "empty file", "missing.mp4": "no such video file",
             ".": "is a folder"}
    for name, msg in cases.items():
        with pytest.raises(FerError, match=msg) as e:
            video.probe(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) or name == "."


def test_truncated_file_keeps_what_was_decoded_and_says_where_it_stopped(predictor, tmp_path,
                                                                          reader):
    full = synthetic.synthetic_clip(tmp_path / "full.mkv", seconds=4, faces=1)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 2])
    s = video.analyze(cut, tmp_path / "out", predictor=predictor)
    stop = s["video"]["stopped"]
    assert stop is not None and 10 < stop["frame"] < 110
    assert s["video"]["frames"] == stop["frame"]
    assert any(f"stopped at frame {stop['frame']}" in w for w in s["warnings"])
    assert len(rows(tmp_path / "out" / "frames.csv")) >= stop["frame"] // 5 - 1
    # an MP4 cut before its index was written cannot be decoded at all: said so
    mp4 = synthetic.synthetic_clip(tmp_path / "full.mp4", seconds=1, faces=1)
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[:mp4.stat().st_size // 2])
    with pytest.raises(FerError, match="truncated or unfinished MP4"):
        video.analyze(tmp_path / "cut.mp4", tmp_path / "out2", predictor=predictor)


def test_zero_frames(predictor, tmp_path):
    import av
    path = tmp_path / "zero.mkv"
    out = av.open(str(path), "w")
    s = out.add_stream("libx264", rate=30)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    out.start_encoding()
    out.close()
    with pytest.raises(FerError, match="no frames"):
        video.analyze(path, tmp_path / "out", predictor=predictor)
    assert not (tmp_path / "out" / "frames.csv").exists()


def test_unsupported_codec(tmp_path):
    import av
    path = tmp_path / "odd.avi"
    out = av.open(str(path), "w")
    s = out.add_stream("mpeg4", rate=30)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    for _ in range(3):
        for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8),
                                                     format="bgr24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    data = path.read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))  # a FourCC no decoder knows
    with pytest.raises(FerError, match="unsupported video codec"):
        video.probe(path)


def test_too_long_is_refused_before_any_work(clip, predictor, tmp_path):
    with pytest.raises(FerError, match="limit is 1 s") as e:
        video.analyze(clip, tmp_path / "out", predictor=predictor, max_duration_s=1)
    assert e.value.status == 413 and not (tmp_path / "out").exists()


def test_disk_full_mid_run_removes_partial_outputs(clip, predictor, tmp_path, monkeypatch):
    class FullDisk:
        """A file on a disk with room for ``room`` bytes: the write after that fails ENOSPC."""

        def __init__(self, path, room):
            self.f, self.room = open(path, "w", newline=""), room

        def write(self, text):
            self.room -= len(text)
            if self.room < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(video, "_open_output", lambda path: FullDisk(path, 2000))
    with pytest.raises(FerError, match="disk full after") as e:
        video.analyze(clip, tmp_path, predictor=predictor, every=1, annotate=True)
    assert e.value.status == 507 and "partial outputs were removed" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_settings(clip, predictor, tmp_path):
    with pytest.raises(FerError, match="every"):
        video.analyze(clip, tmp_path, predictor=predictor, every=0)
    with pytest.raises(FerError, match="smoothing"):
        video.analyze(clip, tmp_path, predictor=predictor, smoothing=1.0)


# ---- CLI -------------------------------------------------------------------------------------

def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "fer_core", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_writes_outputs_prints_json_and_progress(clip, tmp_path):
    run = save_model_dir(tmp_path / "tiny", tiny_cnn(width=8, strides=2), list(FER7))
    FerModel.load(run)  # its checked conversion is cached: the CLI runs without TensorFlow
    out = tmp_path / "out"
    r = _cli("video", clip, "--out", out, "--model", run, "--every", "3", "--json",
             "--annotate", "--progress")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert s["video"]["frames"] == 60 and s["processing"]["every"] == 3
    assert len(s["faces"]) == 2 and (out / "annotated.mp4").stat().st_size > 1000
    assert s == json.loads((out / "summary.json").read_text())
    assert len(rows(out / "frames.csv")) == 2 * 19
    # tqdm's bar where tqdm is installed (ai-edge-litert brings it), else the plain one
    assert re.search(r"60/60 (frames|\[.*frame/s)", r.stderr) and \
        ("fps" in r.stderr or "frame/s" in r.stderr), r.stderr


def test_cli_bad_input_exits_2_with_a_message(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    r = _cli("video", tmp_path / "notes.mp4", "--out", tmp_path / "out", timeout=60)
    assert r.returncode == 2 and "not a video file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_pyav_after_tensorflow_in_one_process(clip):
    """fer_core.video imports av lazily, often after TensorFlow: that order must not crash
    (unlike TensorFlow before pylibsrtp, see tests/test_import_order.py)."""
    code = ("import tensorflow, av\n"
            f"c = av.open({str(clip)!r})\n"
            "print(sum(1 for _ in c.decode(video=0)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=240, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split()[-1] == "60"


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av
    path = tmp_path / "voice.mp4"
    out = av.open(str(path), "w")
    s = out.add_stream("aac", rate=8000)
    for i in range(10):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 8000, i * 1024
        for p in s.encode(frame):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    with pytest.raises(FerError, match=r"has no video stream \(streams: audio\)"):
        video.probe(path)


def test_without_pyav_a_variable_frame_rate_video_keeps_its_timing(predictor, tmp_path,
                                                                    monkeypatch):
    """OpenCV's writer has one frame rate: each frame fills the slots its timestamp covers, so
    the annotated copy of a variable-frame-rate clip lasts as long as the clip."""
    import cv2
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 1.3, 1.35, 2.0]
    clip = synthetic.synthetic_clip(tmp_path / "vfr.mkv", frame_times=times, faces=1)
    monkeypatch.setattr(video, "has_pyav", lambda: False)
    video.analyze(clip, tmp_path / "out", predictor=predictor, every=1, annotate=True)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "annotated.webm"))
    fps, stamps = cap.get(cv2.CAP_PROP_FPS), []
    while cap.read()[0]:
        stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    cap.release()
    assert fps == pytest.approx(30, abs=0.01)  # the clip's declared rate
    # 2 s at 30 frames/s, the last frame at 2.0 s (before: the 8 frames in 0.27 s)
    assert len(stamps) == 61 and stamps[-1] == pytest.approx(2.0, abs=0.04)
