"""fer_core.tracking: ids stay with faces, the detection plan, smoothing."""

from __future__ import annotations

import numpy as np

from fer_core.tracking import Tracker, find_faces


def test_ids_follow_moving_faces_and_new_faces_get_new_ids():
    tr = Tracker(max_missing=3)
    a, b = np.array([100, 100, 80, 80]), np.array([400, 120, 90, 90])
    first = tr.update([a, b], 0)
    assert [t.id for t in first] == [1, 2]
    for f in range(1, 30):  # both move 6 px a frame, listed in either order
        a, b = a + [6, 0, 0, 0], b + [-6, 2, 0, 0]
        boxes = [b, a] if f % 2 else [a, b]
        ids = [t.id for t in tr.update(boxes, f)]
        assert ids == ([2, 1] if f % 2 else [1, 2])
    third = tr.update([a, b, np.array([10, 300, 60, 60])], 30)
    assert [t.id for t in third] == [1, 2, 3]


def test_a_face_hidden_briefly_keeps_its_id_and_a_long_absence_drops_it():
    tr = Tracker(max_missing=3)
    box = np.array([100, 100, 80, 80])
    tr.update([box], 0)
    tr.update([], 1)
    tr.update([], 2)
    assert tr.update([box + [4, 0, 0, 0]], 3)[0].id == 1
    for f in range(4, 9):
        tr.update([], f)
    assert tr.tracks == []
    assert tr.update([box], 9)[0].id == 2


def test_search_plan_full_every_n_and_when_nothing_seen():
    tr = Tracker()
    assert tr.search_regions(1, 4) is None  # no faces yet
    tr.update([[10, 10, 50, 50]], 1)
    assert tr.search_regions(2, 4) is not None
    assert tr.search_regions(4, 4) is None  # every 4th frame: full detection
    assert tr.search_regions(3, 4) is None  # face last seen 2 frames ago: not "near" any more


def test_find_faces_falls_back_to_full_frame_when_a_face_is_lost():
    calls = []

    def detect(frame, near=None):
        calls.append(near is None)
        return np.zeros((0, 4)) if near is not None else np.array([[1, 2, 3, 4]])

    assert len(find_faces(detect, None, [np.array([0, 0, 9, 9])])) == 1
    assert calls == [False, True]
    calls.clear()
    find_faces(detect, None, None)
    assert calls == [True]


def test_probability_smoothing_is_an_ema():
    tr = Tracker()
    box = [[0, 0, 50, 50]]
    tr.update(box, 0, np.array([[1.0, 0.0]]))
    t = tr.update(box, 1, np.array([[0.0, 1.0]]), smoothing=0.75)[0]
    assert np.allclose(t.probs, [0.75, 0.25])
    assert t.first_seen == 0 and t.last_seen == 1 and t.hits == 2
