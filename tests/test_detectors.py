"""Face detectors: the registry, every detector on images the tests draw, bad input, NMS,
eye alignment, the per-frame step's identities, and ``bench detect``.

Images are drawn here (``synthetic.synthetic_frame``: a shaded cartoon face that the Haar cascade
and both BlazeFace models detect, BlazeFace with its eye landmarks on the drawn eyes). Real
photos (``../shared/data/faces``) are read by one test that skips without them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import detectors, video, vision
from fer_core.cli import main
from fer_core.detectors import Detections, nms
from fer_core.errors import FerError
from fer_core.labels import FER7
from fer_core.predict import Predictor
from fer_core.tracking import FaceStep
from fer_core.synthetic import synthetic_clip, synthetic_frame
from fer_core.vision import DetectorConfig, FaceDetector
from tests.factories import tiny_model

NAMES = list(detectors.DETECTORS)
FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
THIN = [(1, 1), (1, 641), (641, 1), (700, 1), (1, 700), (3, 2000), (2000, 3), (1, 20000),
        (20000, 1), (30, 3100)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(tiny_model(), DetectorConfig.preset("photo"), labels=FER7)


# --------------------------------------------------------------------------- registry

def test_registry_names_and_bad_names():
    assert {"haar", "blazeface", "blazeface-short"} <= set(NAMES)
    assert vision.DEFAULT_DETECTOR == "blazeface"
    with pytest.raises(FerError, match=r"unknown face detector 'yolo'; expected one of \['haar'"):
        detectors.create("yolo")
    with pytest.raises(FerError, match="detector.kind: unknown face detector"):
        FaceDetector(DetectorConfig(kind="yolo"))
    with pytest.raises(FerError, match="unknown detector preset 'tiny'"):
        DetectorConfig.preset("tiny")
    assert detectors.create("HAAR").name == "haar"   # names are case-insensitive


def test_missing_packages_name_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(detectors, "WEIGHTS_DIR", tmp_path)  # an install that lost its weights
    with pytest.raises(FerError, match=r"the 'blazeface' detector's weights are missing from this "
                                       r"install \(reinstall fer-studio\)"):
        FaceDetector(DetectorConfig(kind="blazeface"))
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    with pytest.raises(FerError, match=r"'ai-edge-litert' package \(LiteRT\): pip install "
                                       r"ai-edge-litert"):
        detectors.create("blazeface-short")


def test_the_blazeface_weights_are_the_documented_files():
    """The package data matches the checksums its README gives (origin and licence there)."""
    import hashlib
    readme = (detectors.WEIGHTS_DIR / "README.md").read_text()
    files = sorted(detectors.WEIGHTS_DIR.glob("*.tflite"))
    assert [f.name for f in files] == ["face_detection_full_range.tflite",
                                       "face_detection_short_range.tflite"]
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        assert f"| `{f.name}` |" in readme and f"`{digest}`" in readme, f.name
    assert (detectors.WEIGHTS_DIR / "LICENSE-Apache-2.0.txt").is_file()


def test_blazeface_runs_without_tensorflow():
    import subprocess
    code = ("import sys; from fer_core.vision import FaceDetector, DetectorConfig; "
            "from fer_core.synthetic import synthetic_frame; d = FaceDetector(DetectorConfig(kind='blazeface')).detect("
            "synthetic_frame()); assert len(d) == 1; print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False"


# --------------------------------------------------------------------------- every detector

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size,centre", [(120, (200, 260)), (200, (400, 230))])
def test_every_detector_finds_the_drawn_face_and_nothing_on_a_wall(name, size, centre):
    det = FaceDetector(DetectorConfig.preset("photo", name))
    d = det.detect(synthetic_frame(640, 480, face_size=size, centre=centre))
    assert isinstance(d, Detections) and len(d) == 1
    x, y, w, h = d.boxes[0]
    assert abs(x + w / 2 - centre[0]) < 0.2 * size and abs(y + h / 2 - centre[1]) < 0.25 * size
    assert 0.6 * size < w < 1.5 * size and 0 < d.scores[0] <= 1
    wall = synthetic_frame(640, 480, face_size=8, centre=(-100, -100))
    assert len(det.detect(wall)) == 0
    if name.startswith("blazeface"):  # 5 landmarks; the eyes on the drawn eyes
        assert d.landmarks.shape == (1, 5, 2)
        for dx, (ex, ey) in zip((-1, 1), d.eyes[0]):
            assert abs(ex - (centre[0] + dx * 0.16 * size)) < 0.1 * size
            assert abs(ey - (centre[1] - 0.08 * size)) < 0.1 * size
    else:
        assert d.landmarks is None


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_images_give_no_face_and_no_error(name, predictor):
    det = FaceDetector(DetectorConfig.preset("video", name))
    for h, w in THIN:
        for img in (np.zeros((h, w), np.uint8), np.full((h, w, 3), 200, np.uint8)):
            found = det.detect(img)
            assert len(found) == 0, (h, w)
            assert len(det.detect(img, near=[[0, 0, 10, 10]])) == 0
    p = Predictor(predictor.fer_model, DetectorConfig.preset("photo", name))
    for h, w in THIN:
        assert p.predict_image(np.zeros((h, w, 3), np.uint8)) == []
    huge = np.broadcast_to(np.zeros(1, np.uint8), (20000, 20000))  # no memory: a view
    with pytest.raises(FerError, match="image too large: 20000x20000"):
        p.predict_image(huge)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    run.mkdir()
    tiny_model().save(run / "model.keras")
    return run


def test_predict_cli_detector_choice_and_bad_input(run_dir, tmp_path, capsys):
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), synthetic_frame(640, 480, face_size=160))
    thin = tmp_path / "thin.png"
    cv2.imwrite(str(thin), np.full((1, 700, 3), 90, np.uint8))
    boxes = {}
    for name in NAMES:
        assert main(["predict", str(img), str(thin), "--model", str(run_dir), "--json",
                     "--detector", name]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out[0]["faces"]) == 1 and out[1]["faces"] == []
        boxes[name] = out[0]["faces"][0]["box"]
    for name in NAMES:  # every detector frames the face like the training crops (Haar's)
        assert vision.iou(boxes[name], boxes["haar"]) > 0.6, (name, boxes)
    assert main(["predict", str(img), "--model", str(run_dir), "--detector", "yolo"]) == 2
    err = capsys.readouterr().err
    assert "unknown face detector 'yolo'" in err and "blazeface" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- NMS

def test_nms_keeps_one_box_per_face():
    d = Detections.from_boxes([[100, 100, 80, 80], [104, 98, 84, 84], [120, 125, 30, 30],
                               [400, 100, 80, 80]], [0.7, 0.9, 0.95, 0.8])
    kept = nms(d, 0.3)
    # the shifted copy goes (IoU), the small box inside the face goes (containment)
    assert sorted(kept.int_boxes[:, 0].tolist()) == [104, 400] or \
        sorted(kept.int_boxes[:, 0].tolist()) == [120, 400]
    assert len(kept) == 2


@pytest.mark.parametrize("name", NAMES)
def test_overlapping_tracker_searches_count_a_face_once(name):
    det = FaceDetector(DetectorConfig.preset("video", name))
    frame = synthetic_frame(640, 480, face_size=160)
    whole = det.detect(frame)
    b = whole.boxes[0]
    near = [b, b + np.array([12, -8, 0, 0], np.float32), b * np.array([1, 1, 1.1, 1.1])]
    found = det.detect(frame, near=near)
    assert len(found) == 1 and vision.iou(found.boxes[0], b) > 0.6


# --------------------------------------------------------------------------- alignment

def _rotate(img, angle, centre):
    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("angle", [-25, 20])
def test_alignment_levels_the_eyes_of_a_tilted_face(angle):
    det = FaceDetector(DetectorConfig.preset("photo", "blazeface"))
    upright = synthetic_frame(640, 480, face_size=200)
    ref_d = det.detect(upright)
    ref = vision.crop_faces(upright, ref_d.boxes, eyes=ref_d.eyes)[0].astype(float)
    tilted = _rotate(upright, angle, (320, 240))
    d = det.detect(tilted)
    assert len(d) == 1
    assert abs(abs(vision.eye_angle(d.eyes[0])) - abs(angle)) < 6
    aligned = vision.crop_faces(tilted, d.boxes, eyes=d.eyes)[0].astype(float)
    plain = vision.crop_faces(tilted, d.boxes)[0].astype(float)
    # the aligned crop looks like the upright face; the plain one does not
    assert np.abs(aligned - ref).mean() < 0.9 * np.abs(plain - ref).mean()
    # level eyes are left alone: the crop equals the unaligned one exactly
    np.testing.assert_array_equal(vision.crop_faces(upright, ref_d.boxes, eyes=ref_d.eyes),
                                  vision.crop_faces(upright, ref_d.boxes))


def test_predictor_aligns_only_when_asked(predictor):
    tilted = _rotate(synthetic_frame(640, 480, face_size=200), 25, (320, 240))
    on = Predictor(predictor.fer_model, DetectorConfig.preset("photo"), align=True)
    off = Predictor(predictor.fer_model, DetectorConfig.preset("photo"), align=False)
    d = on.detect(tilted)
    assert not np.array_equal(on.crops(tilted, d), off.crops(tilted, d))
    assert on.info()["align"] is True and off.info()["align"] is False


# --------------------------------------------------------------------------- identities

def test_a_face_that_leaves_for_half_a_second_keeps_its_id(predictor, tmp_path):
    # face 0 is hidden from 0.8 s to 1.3 s; face 1 shows on a single frame only (a false box)
    def visible(k, t):
        return not 0.8 <= t < 1.3 if k == 0 else abs(t - 1.0) < 0.01
    clip = synthetic_clip(tmp_path / "gone.mp4", seconds=2.0, faces=2, face_size=110,
                                visible=visible)
    vp = Predictor(predictor.fer_model, video.detector_config())
    s = video.analyze(clip, tmp_path / "out", predictor=vp, every=1)
    with open(tmp_path / "out" / "frames.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [f["id"] for f in s["faces"]] == [1]  # the one-frame face is not a person
    assert {r["face"] for r in table} == {"1"}
    times = [float(r["time_s"]) for r in table]
    assert min(times) < 0.1 and max(times) > 1.9          # before and after the gap
    assert not any(0.85 <= t < 1.25 for t in times)       # nothing while hidden
    assert s["faces"][0]["last_s"] > 1.9


def test_a_face_gone_longer_than_max_missing_gets_a_new_id(predictor):
    step = FaceStep(Predictor(predictor.fer_model, DetectorConfig.preset("video")),
                    max_missing=3, full_every=1)
    face = synthetic_frame(640, 480, face_size=140)
    empty = synthetic_frame(640, 480, face_size=8, centre=(-100, -100))
    ids = []
    for i, frame in enumerate([face] * 3 + [empty] * 2 + [face] * 2 + [empty] * 5 + [face] * 3):
        ids.append([f.id for f in step(frame, i)])
    assert ids[:3] == [[], [1], [1]]          # shown once confirmed
    assert ids[3:5] == [[], []]
    assert ids[5:7] == [[1], [1]]             # back within max_missing: same id
    assert ids[12:] == [[], [2], [2]]         # gone too long: a new, confirmed-later id


# --------------------------------------------------------------------------- real photos

@pytest.mark.skipif(not (FACES / "faces.csv").is_file(),
                    reason="../shared/data/faces is absent (real photos are not shipped)")
def test_blazeface_counts_the_real_portraits_right():
    det = FaceDetector(DetectorConfig.preset("photo", "blazeface"))
    with open(FACES / "faces.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    exact = sum(len(det.detect(vision.decode_image(FACES / r["file"]))) == 1
                for r in rows if r["faces"] == "1")
    assert exact >= 59
    assert len(det.detect(vision.decode_image(FACES / "couple.jpg"))) == 2
    # the selfie's 7 faces, two of them cut by the photo's edge (the tiling pass finds those);
    # bench detect --truth checks that each box is a true face
    selfie = det.detect(vision.decode_image(FACES / "selfie-many-people.jpg"))
    assert 6 <= len(selfie) <= 7
    single = FaceDetector(DetectorConfig.preset("photo", "blazeface", tile=0.0))
    assert len(single.detect(vision.decode_image(FACES / "selfie-many-people.jpg"))) < len(selfie)


def test_bench_detect_reports_every_detector(tmp_path):
    from fer_core.bench import detect as bench
    args = type("A", (), {"detector": None, "faces": str(tmp_path / "none"), "repeat": 3,
                          "learn": True})()
    r = bench.run(args)
    assert r["photos"].startswith("skipped")
    assert set(r["detectors"]) == set(NAMES)
    for name, row in r["detectors"].items():
        found, total = (int(v) for v in row["frames_found"].split("/"))
        assert total == 30 and found >= 20, (name, row)
        assert row["ms_640x480_realtime"] > 0
        if name != "haar":
            assert "learned_threshold" in row["learn"]


# --------------------------------------------------------------------------- API and video CLI

def test_api_settings_name_the_detector_and_thin_images_give_no_face():
    from fer_core.api.service import ModelService
    from fer_core.api.settings import Settings
    s = Settings.from_env({"FER_DETECTOR": "haar", "FER_DETECTOR_PRESET": "realtime"})
    assert DetectorConfig.of(s) == DetectorConfig.preset("realtime", "haar")
    assert DetectorConfig.of(Settings.from_env({})) == DetectorConfig.preset("fast", "blazeface")
    assert DetectorConfig.of(Settings.from_env({"FER_DETECTOR_PRESET": "realtime"})).min_size == 80
    with pytest.raises(FerError, match="FER_DETECTOR: unknown face detector 'dlib'"):
        Settings.from_env({"FER_DETECTOR": "dlib"})
    with pytest.raises(FerError, match="FER_DETECTOR_PRESET: unknown detector preset"):
        Settings.from_env({"FER_DETECTOR_PRESET": "slow"})
    for name in NAMES:
        service = ModelService(Settings.from_env({"FER_DETECTOR": name}, load_model=False))
        for h, w in ((1, 700), (641, 1), (3, 2000), (1, 1)):
            ok, png = cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))
            faces, boxes = service.prepare(png.tobytes(), detect=True)
            assert len(faces) == 0 and boxes == []
        ok, png = cv2.imencode(".png", synthetic_frame(640, 480, face_size=160))
        faces, boxes = service.prepare(png.tobytes(), detect=True)
        assert faces.shape == (1, 48, 48) and len(boxes) == 1


def test_video_cli_takes_the_detector(run_dir, tmp_path, capsys):
    clip = synthetic_clip(tmp_path / "c.mp4", seconds=1.0, faces=1, face_size=120)
    assert main(["video", str(clip), "--out", str(tmp_path / "o"), "--model", str(run_dir),
                 "--detector", "haar", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["processing"]["detector"] == "haar" and len(s["faces"]) == 1
    assert main(["video", str(clip), "--out", str(tmp_path / "o2"), "--detector", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown face detector 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists()


def test_settings_know_every_registered_detector_and_preset():
    """FER_DETECTOR / FER_DETECTOR_PRESET are checked at start against names kept in
    fer_core.settings (which imports neither module): they must match the registry."""
    from fer_core import settings
    assert set(settings.DETECTOR_NAMES) == set(detectors.DETECTORS)
    assert set(settings.DETECTOR_PRESETS) == set(vision.PRESETS) | {"accurate"}
