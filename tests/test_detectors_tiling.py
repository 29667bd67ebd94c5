"""The tiling pass of the ``photo`` preset (``DetectorConfig.tile``): small faces in a large
photo, which BlazeFace's one 192x192 whole-image pass cannot resolve, and faces cut by the
photo's edge, which the mirrored edge tiles complete. Every image is drawn here
(``synthetic.synthetic_group``)."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core import vision
from fer_core.errors import FerError
from fer_core.synthetic import synthetic_group
from fer_core.vision import DetectorConfig, FaceDetector

@pytest.fixture(scope="module")
def photo() -> FaceDetector:
    return FaceDetector(DetectorConfig.preset("photo", "blazeface"))


@pytest.fixture(scope="module")
def single() -> FaceDetector:
    """The same preset with the tiling pass off: the one whole-image pass."""
    return FaceDetector(DetectorConfig.preset("photo", "blazeface", tile=0.0))


def matched(boxes, centres, size) -> int:
    """How many drawn faces get a box whose centre lies within half a face of theirs, each
    face counted once; raises if a box matches no face or a face twice."""
    used = set()
    for x, y, w, h in boxes:
        cx, cy = x + w / 2, y + h / 2
        hits = [i for i, (tx, ty) in enumerate(centres)
                if abs(cx - tx) < size / 2 and abs(cy - ty) < size / 2]
        assert len(hits) == 1 and hits[0] not in used, (boxes, centres)
        used.add(hits[0])
    return len(used)


def test_small_faces_in_a_large_photo_are_found_by_the_tiles_only(photo, single):
    w, h, size = 1280, 960, 70
    centres = [(int(w * x), int(h * y))
               for x, y in ((.2, .3), (.5, .3), (.8, .3), (.3, .7), (.7, .7))]
    img = synthetic_group(w, h, centres, size)
    assert matched(photo.detect(img).boxes, centres, size) == 5
    assert matched(single.detect(img).boxes, centres, size) <= 1   # 70 px -> ~10 px at 192
    # the realtime preset stays one pass (speed): it finds none of these small faces
    assert DetectorConfig.preset("realtime", "blazeface").tile == 0.0


@pytest.mark.parametrize("off", [0, 10])
def test_faces_cut_in_half_by_the_photo_edge_are_found_through_mirrored_tiles(photo, off,
                                                                               monkeypatch):
    w, h, size = 1280, 960, 90
    centres = [(off, 480), (640, 300), (w - off, 700)]   # half outside left and right
    img = synthetic_group(w, h, centres, size)
    d = photo.detect(img)
    assert matched(d.boxes, centres, size) == 3
    assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 0] + d.boxes[:, 2] <= w).all()
    monkeypatch.setattr(vision, "TILE_MIRROR", 0.0)      # without the mirror: both missed
    assert matched(photo.detect(img).boxes, centres, size) == 1


def test_a_face_touching_the_edge_is_not_counted_again_as_its_mirror_image(photo):
    w, h, size = 1280, 960, 90
    centres = [(50, 480), (640, 300), (w - 50, 700)]     # whole, touching the edges
    img = synthetic_group(w, h, centres, size)
    d = photo.detect(img)
    assert len(d) == 3 and matched(d.boxes, centres, size) == 3


def test_tiles_cover_the_image_with_the_promised_overlap():
    for n, t in ((600, 360), (1280, 768), (853, 768), (5000, 700), (700, 700), (300, 700)):
        starts = vision._tile_starts(n, t, vision.TILE_OVERLAP)
        assert starts[0] == 0 and min(n, starts[-1] + t) == n
        gaps = np.diff(starts)
        assert (t - gaps >= vision.TILE_OVERLAP * t - 1).all(), (n, t, starts)


def test_tile_setting_is_checked():
    with pytest.raises(FerError, match=r"detector.tile: tile must be 0 \(one pass\) or in"):
        FaceDetector(DetectorConfig(kind="blazeface", tile=0.1))


# --------------------------------------------------------------------------- bench detect --truth

def test_bench_detect_counts_true_and_invented_faces_from_a_truth_file(tmp_path):
    """A box count alone would call 3 boxes on a 3-face photo right; against the marked faces
    a box on an unmarked face is invented and the marked face without a box is missed."""
    import cv2

    from fer_core.bench import detect as bench
    w, h, size = 1280, 960, 90
    centres = [(300, 300), (640, 300), (980, 300)]
    cv2.imwrite(str(tmp_path / "selfie-drawn.png"), synthetic_group(w, h, centres, size))
    cv2.imwrite(str(tmp_path / "portrait.png"), synthetic_group(640, 480, [(320, 240)], 160))
    (tmp_path / "faces.csv").write_text("file,faces\nselfie-drawn.png,3\nportrait.png,1\n")
    marked = centres[:2] + [(640, 750)]      # the third mark is where no face is drawn
    (tmp_path / "boxes.csv").write_text(
        "file,cx,cy,size\n" + "".join(f"selfie-drawn.png,{x},{y},{size}\n" for x, y in marked))
    args = type("A", (), {"detector": "blazeface", "faces": str(tmp_path), "truth": None,
                          "repeat": 1, "learn": True})()
    row = bench.run(args)["detectors"]["blazeface"]
    assert row["portraits_exactly_one"] == "1/1"
    assert row["selfie_boxes"] == 3
    assert (row["selfie_true_faces"], row["selfie_invented_boxes"]) == (2, 1)
    assert row["learn"]["fewest_errors"] >= 2   # a missed and an invented face at any threshold

    (tmp_path / "bad.csv").write_text("file,cx,cy,size\nselfie-drawn.png,1,two,3\n")
    args.truth = str(tmp_path / "bad.csv")
    with pytest.raises(FerError, match=r"bad.csv:2: expected columns file,cx,cy,size"):
        bench.run(args)
