"""fer_core.webcam.FrameAnnotator: drawing, tracking, smoothing, skipping, history, CSV."""

from __future__ import annotations

import csv
import io
import threading
import time

import numpy as np
import pytest

from fer_core.errors import FerError
from fer_core.labels import FER7
from fer_core.predict import Predictor
from fer_core.vision import DetectorConfig
from fer_core.synthetic import synthetic_frame
from fer_core.webcam import FrameAnnotator
from tests.factories import tiny_cnn


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(tiny_cnn(width=8, strides=2), DetectorConfig.realtime(), labels=FER7)


class Spy:
    """A Predictor stand-in that records detector calls, adds noise or blocks on a gate."""

    def __init__(self, inner: Predictor, noise: float = 0.0, gate: threading.Event | None = None):
        self.inner, self.noise, self.gate = inner, noise, gate
        self.labels, self.margin, self.describe = inner.labels, inner.margin, inner.describe
        self.crops = inner.crops
        self.detect_calls: list[bool] = []  # True = full frame, False = near known faces
        self.entered = threading.Event()
        self.rng = np.random.default_rng(0)

    def detect(self, frame, near=None):
        self.detect_calls.append(near is None)
        return self.inner.detect(frame, near=near)

    def predict_faces(self, faces):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        p = self.inner.predict_faces(faces)
        if self.noise:
            p = np.clip(p + self.rng.normal(0, self.noise, p.shape), 1e-4, None)
            p = (p / p.sum(1, keepdims=True)).astype(np.float32)
        return p


class Clock:
    def __init__(self, t=1_000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_annotator_draws_tracks_and_reports(predictor):
    ann = FrameAnnotator(predictor, smoothing=0.5, detect_every=3)
    frame = synthetic_frame(640, 480, face_size=160)
    original = frame.copy()
    out = ann(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(frame, original)  # input untouched
    assert ann.latest()["faces"] == []  # a new face is shown once confirmed (2 detections)
    out = ann(frame)
    assert (np.abs(out.astype(int) - frame).sum(axis=2) > 60).sum() > 500  # box, label, fps
    first = ann.latest()
    assert len(first["faces"]) == 1 and first["processed"] == 2
    face = first["faces"][0]
    assert abs(sum(face["scores"].values()) - 1) < 1e-4 and face["emotion"] in FER7
    ann(synthetic_frame(640, 480, face_size=160, centre=(330, 245)))  # moved a little
    assert ann.latest()["faces"][0]["id"] == face["id"]  # same face, same id
    emoji = FrameAnnotator(predictor, mode="emoji", show_fps=False)(frame)
    assert not np.array_equal(emoji, out)


def test_full_detection_every_n_frames_and_tracking_between(predictor):
    spy = Spy(predictor)
    ann = FrameAnnotator(spy, detect_every=4)
    frame = synthetic_frame(640, 480, face_size=160)
    for _ in range(8):
        ann(frame)
    assert spy.detect_calls == [True, False, False, False, True, False, False, False]
    assert len(ann.latest()["faces"]) == 1


def test_smoothing_reduces_variance(predictor):
    frame = synthetic_frame(640, 480, face_size=160)

    def spread(smoothing):
        ann = FrameAnnotator(Spy(predictor, noise=0.05), smoothing=smoothing, detect_every=1)
        for _ in range(25):
            ann(frame)
        rows = ann.history()
        assert len(rows) == 24 and len({r["face"] for r in rows}) == 1
        return np.array([[r[k] for k in FER7] for r in rows[5:]]).std(axis=0).mean()

    raw, smooth = spread(0.0), spread(0.8)
    assert smooth < 0.5 * raw
    ann = FrameAnnotator(predictor, window=9)  # window N <-> EMA with the same mean age
    assert ann.smoothing == pytest.approx(0.8)


def test_busy_annotator_skips_instead_of_queueing(predictor):
    gate = threading.Event()
    spy = Spy(predictor, gate=gate)
    ann = FrameAnnotator(spy, detect_every=1)
    frame = synthetic_frame(640, 480, face_size=160)
    worker = threading.Thread(target=ann, args=(frame,))
    worker.start()
    assert spy.entered.wait(10)  # the worker is inside the model call
    t0 = time.perf_counter()
    out = ann(frame)  # must not wait for the worker
    waited = time.perf_counter() - t0
    gate.set()
    worker.join(10)
    assert waited < 2.0 and out.shape == frame.shape
    stats = ann.latest()
    assert stats["skipped"] == 1 and stats["processed"] == 1 and stats["frames"] == 2


def test_history_window_summary_and_csv(predictor):
    clock = Clock()
    ann = FrameAnnotator(predictor, smoothing=0.0, detect_every=2, history_seconds=30,
                         clock=clock)
    assert ann.summary() == {k: 0.0 for k in FER7} and ann.history() == []
    frame = synthetic_frame(640, 480, face_size=160)
    for _ in range(40):  # one frame per second for 40 s
        ann(frame)
        clock.t += 1.0
    rows = ann.history()
    assert 30 <= len(rows) <= 31 and rows[-1]["timestamp"] - rows[0]["timestamp"] <= 30
    assert len(ann.history(5)) == 6
    summary = ann.summary()
    assert sum(summary.values()) == pytest.approx(1.0)
    dominant = ann.latest()["faces"][0]["emotion"]
    assert summary[dominant] == pytest.approx(1.0)  # one face, same input every frame
    assert ann.seconds_tracked() == pytest.approx(39.0, abs=0.01)
    table = list(csv.reader(io.StringIO(ann.to_csv())))
    assert table[0] == ["timestamp", "face", *FER7]
    assert len(table) == 40  # the whole session (from the confirming frame on)
    assert abs(sum(float(v) for v in table[1][2:]) - 1) < 1e-3
    df = ann.history_frame()
    assert list(df.columns) == ["time", "timestamp", "face", *FER7] and len(df) == len(rows)
    # frames are never stored: no image-sized array anywhere in the annotator
    arrays = [v for v in vars(ann).values() if isinstance(v, np.ndarray)]
    assert all(a.size < 1000 for a in arrays)
    ann.reset()
    assert ann.history() == [] and ann.to_csv().count("\n") == 1


def test_settings_are_validated_and_live_configurable(predictor):
    with pytest.raises(FerError, match="smoothing"):
        FrameAnnotator(predictor, smoothing=1.0)
    with pytest.raises(FerError, match="mode"):
        FrameAnnotator(predictor, mode="hearts")
    with pytest.raises(FerError, match="detect_every"):
        FrameAnnotator(predictor, detect_every=0)
    ann = FrameAnnotator(predictor)
    ann.configure(smoothing=0.3, mode="emoji", detect_every=5)
    assert (ann.smoothing, ann.mode, ann.detect_every) == (0.3, "emoji", 5)
    with pytest.raises(FerError):
        ann(np.zeros((10, 10), np.uint8))


def test_no_face_frames_keep_running(predictor):
    ann = FrameAnnotator(predictor)
    blank = np.full((480, 640, 3), 90, np.uint8)
    out = ann(blank)
    assert out.shape == blank.shape and ann.latest()["faces"] == []
    assert ann.summary() == {k: 0.0 for k in FER7}
