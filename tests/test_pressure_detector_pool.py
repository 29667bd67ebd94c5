"""One ``FaceDetector`` shared by many threads builds few detector objects and keeps them.

The API detects faces in the worker threads of its thread pool (up to 40, each retired after
10 s idle). With one detector object per thread, every new thread built a BlazeFace interpreter
(about 10 MB) and every retired one freed it: dozens a minute under steady traffic, the memory
creep of issue 25's ``bench soak``. Detector objects are now lent from a pool of at most
``max_detectors`` (default: one per core) and kept for the next call, whichever thread makes it.
"""

from __future__ import annotations

import threading

import pytest

import fer_core.detectors as detectors
from fer_core.synthetic import synthetic_frame
from fer_core.vision import DetectorConfig, FaceDetector
from tests.factories import run_threads


@pytest.fixture
def made(monkeypatch):
    """A list that gets the name of every detector object built from now on."""
    names: list[str] = []
    create = detectors.create

    def counting(name, **params):
        names.append(name)
        return create(name, **params)
    monkeypatch.setattr(detectors, "create", counting)
    return names


@pytest.fixture(scope="module")
def frames():
    return [synthetic_frame(640, 480, face_size=s, centre=(c, 240))
            for s, c in ((120, 200), (160, 320), (200, 420))]


def test_new_threads_one_after_another_reuse_the_first_detector(made, frames):
    det = FaceDetector(DetectorConfig.realtime("blazeface"))
    assert made == ["blazeface"]
    want = det.detect(frames[0]).int_boxes.tolist()
    assert len(want) == 1
    got = []
    for _ in range(6):  # like a thread pool retiring idle threads and starting new ones
        t = threading.Thread(target=lambda: got.append(det.detect(frames[0]).int_boxes.tolist()))
        t.start()
        t.join()
    assert got == [want] * 6
    assert made == ["blazeface"]  # before: one more per thread (7)
    assert det.detectors_made == 1


def test_concurrent_threads_share_at_most_max_detectors_and_get_their_own_answers(made,
                                                                                    frames):
    det = FaceDetector(DetectorConfig.realtime("blazeface"), max_detectors=2)
    serial = [det.detect(f).int_boxes.tolist() for f in frames]
    start = threading.Barrier(8)
    results: dict = {}

    def work(k):
        start.wait(10)
        results[k] = [det.detect(frames[(k + j) % 3]).int_boxes.tolist() for j in range(3)]

    run_threads(work, 8)
    assert sorted(results) == list(range(8))
    for k, got in results.items():
        assert got == [serial[(k + j) % 3] for j in range(3)]
    assert 1 <= len(made) <= 2 and det.detectors_made == len(made)  # before: up to 9


def test_a_detector_that_fails_to_build_frees_its_place(made, frames, monkeypatch):
    det = FaceDetector(DetectorConfig.realtime("blazeface"), max_detectors=2)
    lent = threading.Event()
    release = threading.Event()

    def hold():  # keeps the first detector busy so the next call must build one
        with det._borrowed():
            lent.set()
            release.wait(10)
    holder = threading.Thread(target=hold)
    holder.start()
    assert lent.wait(10)

    def broken(name, **params):
        raise RuntimeError("no weights")
    monkeypatch.setattr(detectors, "create", broken)
    with pytest.raises(RuntimeError, match="no weights"):
        det.detect(frames[0])
    assert det.detectors_made == 1  # the failed one does not count against the cap
    monkeypatch.undo()
    release.set()
    holder.join()
    assert len(det.detect(frames[0])) == 1
