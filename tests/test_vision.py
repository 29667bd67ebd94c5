"""fer_core.vision: decoding (and refusing) images, detecting faces, the 48x48 crop."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest

from fer_core.errors import FerError
from fer_core.vision import (DetectorConfig, as_face_batch, FaceDetector, crop_face, crop_faces, decode_image,
                             detect_faces, iou, to_grey)
from fer_core.synthetic import synthetic_face, synthetic_frame
from tests.factories import face_image, run_threads


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------- decoding

def test_decode_paths_bytes_and_file_objects_agree(tmp_path):
    img = synthetic_frame(320, 240, face_size=80)
    path = tmp_path / "frame.png"
    path.write_bytes(png_bytes(img))
    from_path = decode_image(path)
    from_str = decode_image(str(path))
    from_bytes = decode_image(path.read_bytes())
    from_file = decode_image(io.BytesIO(path.read_bytes()))
    for got in (from_path, from_str, from_bytes, from_file):
        assert got.dtype == np.uint8 and got.shape == (240, 320, 3)
        np.testing.assert_array_equal(got, img)  # PNG is lossless and channels stay BGR


def test_decode_arrays_channel_conventions():
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    assert decode_image(bgr)[0, 0].tolist() == [200, 0, 0]
    rgb = bgr[..., ::-1].copy()  # the same blue image in RGB order
    assert decode_image(rgb, color="rgb")[0, 0].tolist() == [200, 0, 0]
    rgba = np.dstack([rgb, np.full((10, 12), 255, np.uint8)])
    assert decode_image(rgba, color="rgb").shape == (10, 12, 3)
    assert decode_image(rgba, color="rgb")[0, 0].tolist() == [200, 0, 0]
    grey = np.full((10, 12), 77, np.uint8)
    assert decode_image(grey).shape == (10, 12)
    assert decode_image(grey[..., None]).shape == (10, 12)
    floats = np.full((4, 4), 0.5, np.float32)
    assert decode_image(floats)[0, 0] == 128


def test_decode_grey_and_transparent_png():
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    got = decode_image(png_bytes(grey))
    assert got.ndim == 2
    np.testing.assert_array_equal(got, grey)
    rgba = np.zeros((6, 6, 4), np.uint8)  # fully transparent -> composited on white
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    assert decode_image(buf.getvalue()).min() == 255


def _png_header_only(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR is patched to declare ``width`` x ``height`` (the first
    bytes of a decompression bomb)."""
    blob = bytearray(png_bytes(np.zeros((8, 8), np.uint8)))
    assert blob[12:16] == b"IHDR"
    blob[16:24] = struct.pack(">II", width, height)
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    return bytes(blob)


@pytest.mark.parametrize("blob, match", [
    (b"", "empty"),
    (np.random.default_rng(0).bytes(5000), "not an image"),
    (b"<html><body>hello</body></html>", "not an image"),
])
def test_decode_rejects_non_images(blob, match):
    with pytest.raises(FerError, match=match) as e:
        decode_image(blob, name="upload.jpg")
    assert "upload.jpg" in str(e.value)


def test_decode_rejects_truncated_files(tmp_path):
    img = synthetic_frame(320, 240, face_size=80)
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, img)
        bad = tmp_path / f"cut{ext}"
        bad.write_bytes(buf.tobytes()[: len(buf) // 2])
        with pytest.raises(FerError, match="corrupt or truncated") as e:
            decode_image(bad)
        assert str(bad) in str(e.value)


def test_decode_rejects_too_many_pixels_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10 G pixels declared, 100 bytes
    with pytest.raises(FerError, match="too large") as e:
        decode_image(bomb)
    assert "bomb.png" in str(e.value)
    small = png_bytes(np.zeros((100, 100), np.uint8))
    with pytest.raises(FerError, match="too large"):
        decode_image(small, max_pixels=5000)
    assert decode_image(small, max_pixels=10_000).shape == (100, 100)


def test_decode_bad_paths_and_types(tmp_path):
    with pytest.raises(FerError, match="no such image file"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(FerError, match="folder"):
        decode_image(tmp_path)
    with pytest.raises(FerError, match="expected an image"):
        decode_image(12345)
    with pytest.raises(FerError, match="not an image"):
        decode_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(FerError, match="no pixels"):
        decode_image(np.zeros((0, 4), np.uint8))


# --------------------------------------------------------------------------- detection

@pytest.mark.parametrize("size", [60, 100, 160, 240])
@pytest.mark.parametrize("smile", [True, False])
def test_haar_detects_the_synthetic_face(size, smile):
    img = synthetic_face(size, smile=smile)
    boxes = FaceDetector(DetectorConfig(kind="haar", min_size=30)).detect(img).int_boxes
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    cx, cy = img.shape[1] / 2, img.shape[0] / 2
    assert abs(x + w / 2 - cx) < 0.15 * size and abs(y + h / 2 - cy) < 0.15 * size
    assert 0.75 * size < w < 1.3 * size


def test_factory_face_image_is_detected_when_smiling():
    # tests.factories.face_image() is a flat cartoon; the cascade finds its smiling version
    boxes = FaceDetector(DetectorConfig(kind="haar", min_neighbors=3)).detect(
        face_image(200, smile=True))
    assert len(boxes) >= 1


def test_large_frames_are_downscaled_and_boxes_mapped_back():
    frame = synthetic_frame(1600, 1200, face_size=400, centre=(500, 700))
    boxes = FaceDetector(DetectorConfig(kind="haar", max_side=400, min_size=100)).detect(
        frame).int_boxes
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert abs(x + w / 2 - 500) < 60 and abs(y + h / 2 - 700) < 60 and 300 < w < 520


@pytest.mark.parametrize("kind", ["haar", "blazeface", "blazeface-short"])
def test_realtime_preset_and_tracking_near_previous_box(kind):
    det = FaceDetector(DetectorConfig.realtime(kind))
    frame = synthetic_frame(640, 480, face_size=160)
    boxes = det.detect(frame).boxes
    assert len(boxes) == 1
    moved = synthetic_frame(640, 480, face_size=160, centre=(340, 250))
    near = det.detect(moved, near=boxes)
    assert len(near) == 1 and iou(near.boxes[0], det.detect(moved).boxes[0]) > 0.6
    empty = synthetic_frame(640, 480, face_size=160, centre=(1400, 250))  # face left the frame
    assert len(det.detect(empty, near=boxes)) == 0


def test_no_face_gives_an_empty_array():
    for kind in ("haar", "blazeface"):
        found = FaceDetector(DetectorConfig(kind=kind)).detect(np.full((240, 320, 3), 128,
                                                                         np.uint8))
        assert len(found) == 0 and found.boxes.shape == (0, 4)


def test_detector_config_validation_names_the_field():
    with pytest.raises(FerError, match="scale_factor"):
        FaceDetector(DetectorConfig(scale_factor=1.0))
    with pytest.raises(FerError, match="detector.kind: unknown face detector 'mtcnn'"):
        FaceDetector(DetectorConfig(kind="mtcnn"))
    with pytest.raises(FerError, match="pad"):
        FaceDetector(DetectorConfig(pad=2.0))


@pytest.mark.parametrize("kind", ["haar", "blazeface"])
def test_detector_is_thread_safe(kind):
    det = FaceDetector(DetectorConfig.realtime(kind))
    frames = [synthetic_frame(640, 480, face_size=s, centre=(c, 240))
              for s, c in ((120, 200), (160, 320), (200, 420))]
    serial = [det.detect(f).int_boxes.tolist() for f in frames]
    results: dict = {}

    def work(k):
        results[k] = [det.detect(frames[(k + j) % 3]).int_boxes.tolist() for j in range(3)]

    run_threads(work, 6)
    for k, got in results.items():
        assert got == [serial[(k + j) % 3] for j in range(3)]


def test_fer2013_faces_placed_in_a_frame_are_mostly_detected(fer2013_path):
    from fer_core import data
    ds = data.load(fer2013_path)
    rng = np.random.default_rng(3)
    idx = rng.choice(len(ds), 30, replace=False)
    det = FaceDetector(DetectorConfig(kind="haar", max_side=320, min_size=80))
    hits = 0
    for i in idx:
        face = cv2.resize(ds.images[i], (150, 150), interpolation=cv2.INTER_CUBIC)
        frame = synthetic_frame(640, 480, face_size=40, centre=(-500, -500))  # background only
        frame[100:250, 300:450] = face[..., None]
        boxes = det.detect(frame).boxes
        hits += any(iou(b, (300, 100, 150, 150)) > 0.5 for b in boxes)
    assert hits >= 0.6 * len(idx), f"only {hits}/{len(idx)} FER2013 faces detected"


# --------------------------------------------------------------------------- crop

def test_crop_face_is_48x48_grey_and_matches_manual_preprocessing():
    frame = synthetic_frame(640, 480, face_size=160)
    box = [240, 160, 160, 160]
    crop = crop_face(frame, box, margin=0.0)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    manual = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[160:320, 240:400], (48, 48),
                        interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, manual)
    # grey input gives the same crop as colour input
    np.testing.assert_array_equal(crop_face(to_grey(frame), box, margin=0.0), crop)


def test_crop_pads_at_the_border_instead_of_stretching():
    img = np.zeros((100, 100), np.uint8)
    img[:, 50:] = 255
    crop = crop_face(img, [60, 0, 60, 60], margin=0.0)  # half outside on the right
    assert crop.shape == (48, 48)
    assert crop.min() == 255  # replicated border, no black stretched in
    crops = crop_faces(img, [[0, 0, 50, 50], [50, 50, 50, 50]], margin=0.0)
    assert crops.shape == (2, 48, 48) and crops[0].max() <= 10 and crops[1].min() >= 245
    with pytest.raises(FerError, match="outside"):
        crop_face(img, [500, 500, 20, 20])


def test_detect_faces_convenience_decodes_bytes():
    frame = synthetic_frame(640, 480, face_size=160)
    assert len(detect_faces(png_bytes(frame))) == 1


def test_as_face_batch_accepts_face_shapes_and_names_bad_ones():
    face = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    for given in (face, face[None], face[None, :, :, None]):
        x = as_face_batch(given)
        assert x.shape == (1, 48, 48, 1) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0, :, :, 0], face)
    with pytest.raises(FerError, match=r"\(2, 64, 64\).*expected \(N, 48, 48\)") as e:
        as_face_batch(np.zeros((2, 64, 64), np.uint8), where="images")
    assert e.value.where == "images"
