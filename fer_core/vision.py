"""Images in, faces out: decoding, face detection and THE preprocessing path (grey, crop, 48x48).

Every entry point (photos, webcam, CLI, API, evaluation of user images) goes through
:func:`decode_image` -> :class:`FaceDetector` -> :func:`crop_faces`, so a face reaches the model
exactly as the training faces did: grey uint8, 48x48, resized with ``INTER_AREA``; scaling to
[0, 1] happens inside the model.

Channel convention: arrays are **BGR** (OpenCV order) unless ``color="rgb"`` is passed; 4-channel
arrays are BGRA (or RGBA with ``color="rgb"``); 2-D arrays are grey. Decoded files come back as
BGR (H, W, 3) for colour images and (H, W) for grey ones, always uint8.

Thread safety: a Haar ``CascadeClassifier`` (and a YuNet detector) is not safe to share between
threads, so :class:`FaceDetector` keeps one per thread (``threading.local``); one
``FaceDetector`` can be shared by all sessions.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from fer_core.errors import FerError

FACE_SIZE = 48
MAX_PIXELS = 40_000_000
# A Haar box is a little tighter than the FER2013 crop of the same face; this margin per side
# reproduces the training framing.
DEFAULT_MARGIN = 0.02
HAAR_FILE = "haarcascade_frontalface_default.xml"

__all__ = ["FACE_SIZE", "MAX_PIXELS", "DEFAULT_MARGIN", "as_face_batch", "decode_image", "to_grey", "to_bgr",
           "DetectorConfig", "FaceDetector", "detect_faces", "crop_face", "crop_faces",
           "iou"]


# --------------------------------------------------------------------------- decoding

def decode_image(data, max_pixels: float = MAX_PIXELS, *, color: str = "bgr",
                 name: str | None = None) -> np.ndarray:
    """An image as a uint8 array: BGR (H, W, 3) or grey (H, W).

    ``data`` may be a path (str/Path), bytes, a binary file-like object (e.g. a Streamlit
    upload), or an array (BGR/grey/BGRA; RGB/RGBA with ``color="rgb"``). Files are checked
    against ``max_pixels`` from their header *before* being decoded (decompression bombs).
    Anything unreadable raises :class:`FerError` naming the image.
    """
    if color not in ("bgr", "rgb"):
        raise FerError(f"color must be 'bgr' or 'rgb', got {color!r}", where="color")
    if isinstance(data, np.ndarray):
        return _from_array(data, color, name or "image array", max_pixels)
    if isinstance(data, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(data)))
        where = name or str(path)
        if not path.exists():
            raise FerError("no such image file", where=where)
        if path.is_dir():
            raise FerError("is a folder, expected an image file", where=where)
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise FerError(f"cannot read image file ({e.strerror or e})", where=where) from None
        return _from_bytes(blob, where, max_pixels)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(data), name or "image", max_pixels)
    if hasattr(data, "read"):
        where = name or str(getattr(data, "name", "") or "uploaded image")
        if hasattr(data, "seek"):
            try:
                data.seek(0)
            except (OSError, ValueError):
                pass
        blob = data.read()
        if not isinstance(blob, (bytes, bytearray)):
            raise FerError("file object did not return bytes", where=where)
        return _from_bytes(bytes(blob), where, max_pixels)
    raise FerError(f"expected an image path, bytes or array, got {type(data).__name__}",
                   where=name or "image")


def _from_bytes(blob: bytes, where: str, max_pixels: float) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not blob:
        raise FerError("empty file, expected an image (JPEG, PNG, WebP, BMP, ...)", where=where)
    try:
        img = Image.open(io.BytesIO(blob))  # reads the header only
    except UnidentifiedImageError:
        raise FerError("not an image (expected JPEG, PNG, WebP, BMP, GIF or TIFF)",
                       where=where) from None
    except Image.DecompressionBombError:
        raise FerError(f"image too large (limit {int(max_pixels):,} pixels)", where=where) from None
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file
        raise FerError(f"unreadable image ({e})", where=where) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise FerError("image has no pixels", where=where)
    if w * h > max_pixels:
        raise FerError(f"image too large: {w}x{h} = {w * h:,} pixels, limit "
                       f"{int(max_pixels):,}", where=where)
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        if img.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
            return _grey_to_uint8(_pixels(img))
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            return _over_white_bgr(_pixels(img if img.mode == "RGBA" else img.convert("RGBA")))
        rgb = _pixels(img if img.mode == "RGB" else img.convert("RGB"))
    except Image.DecompressionBombError:
        raise FerError(f"image too large (limit {int(max_pixels):,} pixels)", where=where) from None
    except FerError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data
        raise FerError(f"corrupt or truncated image ({e})", where=where) from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


# Conversions below work on bands of rows so that their temporaries stay a few MB whatever
# the image size: a decoded image costs its pixels once or twice, never as float64.
_BAND = 1 << 20   # pixels per band


def _pixels(img) -> np.ndarray:
    """The image's pixels as a (read-only) array; the Pillow image is closed right after, so
    its own buffer is freed before any conversion allocates."""
    arr = np.asarray(img)
    img.close()
    return arr


def _bands(h: int, w: int):
    step = max(1, _BAND // max(w, 1))
    for y in range(0, h, step):
        yield slice(y, min(h, y + step))


def _grey_to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 grey from a 1-bit, 8-bit, 16-bit, 32-bit integer or float grey image.

    8-bit data is copied; 16-bit data whose values exceed 255 keeps its high byte; other
    integer and float data with values above 255 is scaled to 0-255 (by 255/65535, or by
    255/max above 65535).
    """
    if arr.dtype == np.uint8:
        return np.array(arr)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8) * np.uint8(255)
    out = np.empty(arr.shape, dtype=np.uint8)
    hi = float(arr.max()) if arr.size else 0.0
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        if hi <= 255:
            np.copyto(out, arr, casting="unsafe")
        else:
            np.right_shift(arr, 8, out=out, casting="unsafe")
        return out
    if arr.dtype.kind == "f" and not np.isfinite(hi):
        hi = 65535.0
    scale = 1.0 if hi <= 255 else 255.0 / (65535.0 if hi <= 65535 else hi)
    for rows in _bands(*arr.shape[:2]):
        band = arr[rows].astype(np.float32)
        if scale != 1.0:
            band *= np.float32(scale)
        np.clip(band, 0, 255, out=band)
        np.copyto(out[rows], np.nan_to_num(band, copy=False), casting="unsafe")
    return out


def _over_white_bgr(rgba: np.ndarray) -> np.ndarray:
    """BGR uint8 of an RGBA uint8 image composited over white."""
    h, w = rgba.shape[:2]
    out = np.empty((h, w, 3), dtype=np.uint8)
    for rows in _bands(h, w):
        band = rgba[rows].astype(np.uint16)
        a = band[..., 3:4]
        mixed = (band[..., 2::-1] * a + 255 * (255 - a) + 127) // 255
        np.copyto(out[rows], mixed, casting="unsafe")
    return out


def _from_array(arr: np.ndarray, color: str, where: str, max_pixels: float) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise FerError(f"array of shape {arr.shape} is not an image; expected (H, W), "
                       "(H, W, 1), (H, W, 3) or (H, W, 4)", where=where)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FerError("image has no pixels", where=where)
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise FerError(f"image too large: {arr.shape[1]}x{arr.shape[0]} pixels, limit "
                       f"{int(max_pixels):,}", where=where)
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise FerError("image array contains NaN or infinity", where=where)
            scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
        elif arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer):
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            raise FerError(f"unsupported image dtype {arr.dtype}", where=where)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            code = cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR
            return cv2.cvtColor(arr, code)
        if color == "rgb":
            return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(arr)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey uint8 (H, W) from a decoded BGR/BGRA/grey image."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) copy-free when possible."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


# --------------------------------------------------------------------------- detection

@dataclass(frozen=True)
class DetectorConfig:
    """Face detector settings.

    ``min_size`` is the smallest face side in pixels of the *original* image; frames whose longer
    side exceeds ``max_side`` are downscaled for detection (boxes are mapped back), which is the
    main speed lever. ``kind="yunet"`` uses OpenCV's DNN detector with the user's ONNX model file
    ``yunet_model`` (face_detection_yunet_*.onnx from the OpenCV model zoo).
    """

    kind: str = "haar"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 30
    max_side: int = 640
    yunet_model: str | None = None
    score_threshold: float = 0.8

    @classmethod
    def preset(cls, name: str, **changes) -> "DetectorConfig":
        """The settings of one use, shared by every entry point of that use:

        - ``photo``: photos and ``predict`` (the defaults);
        - ``realtime``: the Webcam page, ``bench predict`` and ``FER_DETECTOR=realtime``:
          detect on a <= 256 px copy, faces >= 80 px (an arm's length away), scale step 1.15;
        - ``fast``: the API's default: a <= 320 px copy, faces >= 40 px, scale step 1.2;
        - ``video``: video files (``fer_core.video``: CLI, Video page, video API, ``bench
          video``): a <= 480 px copy, faces >= 40 px, scale step 1.2.
        """
        if name not in PRESETS:
            raise FerError(f"unknown detector preset {name!r}; expected one of "
                           f"{sorted(PRESETS)}", where="detector")
        return replace(cls(**PRESETS[name]), **changes)

    @classmethod
    def realtime(cls, **changes) -> "DetectorConfig":
        """The ``realtime`` :meth:`preset`."""
        return cls.preset("realtime", **changes)

    def validate(self) -> "DetectorConfig":
        if self.kind not in ("haar", "yunet"):
            raise FerError(f"unknown detector {self.kind!r}; expected 'haar' or 'yunet'",
                           where="detector.kind")
        if not 1.01 <= float(self.scale_factor) <= 2.0:
            raise FerError(f"scale_factor must be in [1.01, 2], got {self.scale_factor}",
                           where="detector.scale_factor")
        if not 0 <= int(self.min_neighbors) <= 50:
            raise FerError(f"min_neighbors must be in [0, 50], got {self.min_neighbors}",
                           where="detector.min_neighbors")
        if not 8 <= int(self.min_size) <= 4096:
            raise FerError(f"min_size must be in [8, 4096] pixels, got {self.min_size}",
                           where="detector.min_size")
        if not 96 <= int(self.max_side) <= 8192:
            raise FerError(f"max_side must be in [96, 8192] pixels, got {self.max_side}",
                           where="detector.max_side")
        if not 0.0 < float(self.score_threshold) < 1.0:
            raise FerError(f"score_threshold must be in (0, 1), got {self.score_threshold}",
                           where="detector.score_threshold")
        if self.kind == "yunet":
            if not self.yunet_model:
                raise FerError("the YuNet detector needs its model file "
                               "(face_detection_yunet_2023mar.onnx from the OpenCV model zoo)",
                               where="detector.yunet_model")
            p = Path(os.path.expanduser(str(self.yunet_model)))
            if not p.is_file():
                raise FerError("YuNet model file not found", where=str(p))
        return self

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, dict] = {
    "photo": {},
    "realtime": {"max_side": 256, "min_size": 80, "scale_factor": 1.15},
    "fast": {"max_side": 320, "min_size": 40, "scale_factor": 1.2},
    "video": {"max_side": 480, "min_size": 40, "scale_factor": 1.2},
}


class FaceDetector:
    """Finds faces; ``detect(image) -> int array (N, 4)`` of ``[x, y, w, h]``, largest first.

    Thread-safe: each thread gets its own OpenCV detector object.
    """

    def __init__(self, config: DetectorConfig | None = None):
        self.config = (config or DetectorConfig()).validate()
        self._local = threading.local()
        self._get()  # fail now (bad cascade / model file), not on the first frame

    # one OpenCV object per thread
    def _get(self):
        det = getattr(self._local, "det", None)
        if det is None:
            if self.config.kind == "haar":
                det = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, HAAR_FILE))
                if det.empty():
                    raise FerError("OpenCV's Haar face cascade could not be loaded",
                                   where=HAAR_FILE)
            else:
                path = str(Path(os.path.expanduser(str(self.config.yunet_model))))
                try:
                    det = cv2.FaceDetectorYN.create(path, "", (320, 320),
                                                    float(self.config.score_threshold), 0.3, 50)
                except cv2.error as e:
                    raise FerError(f"not a usable YuNet ONNX model ({str(e).strip()[:200]})",
                                   where=path) from None
            self._local.det = det
        return det

    def detect(self, image: np.ndarray, near: np.ndarray | list | None = None) -> np.ndarray:
        """Face boxes in ``image`` (decoded BGR or grey array), int32 (N, 4) ``[x, y, w, h]``.

        With ``near`` (boxes from a previous frame) only the regions around those boxes are
        searched, at a few scales around the previous size: the cheap tracking step of the webcam.
        """
        if near is not None and len(near):
            return self._detect_near(image, np.asarray(near, dtype=np.int64).reshape(-1, 4))
        h, w = image.shape[:2]
        s = min(1.0, self.config.max_side / max(h, w))
        return self._detect_scaled(image, s, self.config.min_size * s, None)

    def _detect_scaled(self, image, s, min_px, max_px):
        cfg = self.config
        if min(image.shape[:2]) * min(s, 1.0) < 20:  # too thin for a face; cv2 would fail on it
            return np.zeros((0, 4), dtype=np.int32)
        if cfg.kind == "haar":
            image = to_grey(image)  # grey first: one channel to resize, same result for any input
        if s < 1.0:
            small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        else:
            s, small = 1.0, image
        if cfg.kind == "haar":
            grey = small
            m = max(int(round(min_px)), 20)
            kwargs = {"minSize": (m, m)}
            if max_px:
                kwargs["maxSize"] = (int(max_px), int(max_px))
            boxes = self._get().detectMultiScale(grey, scaleFactor=float(cfg.scale_factor),
                                                 minNeighbors=int(cfg.min_neighbors), **kwargs)
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        else:
            det = self._get()
            bgr = to_bgr(small)
            det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = det.detect(bgr)
            boxes = (np.zeros((0, 4)) if faces is None
                     else np.asarray(faces[:, :4], dtype=np.float64))
            if len(boxes):
                boxes = boxes[np.minimum(boxes[:, 2], boxes[:, 3]) >= min_px]
                # YuNet boxes are tall (forehead..chin); make them square like Haar/FER crops
                side = np.maximum(boxes[:, 2], boxes[:, 3])
                boxes = np.stack([boxes[:, 0] + boxes[:, 2] / 2 - side / 2,
                                  boxes[:, 1] + boxes[:, 3] / 2 - side / 2, side, side], 1)
        boxes = np.round(boxes / s).astype(np.int32)
        return _clip_sort(boxes, image.shape[1], image.shape[0])

    def _detect_near(self, image, near):
        h, w = image.shape[:2]
        found = []
        for x, y, bw, bh in near:
            side = max(int(bw), int(bh), 8)
            pad = side // 2
            x0, y0 = max(0, int(x) - pad), max(0, int(y) - pad)
            x1, y1 = min(w, int(x) + int(bw) + pad), min(h, int(y) + int(bh) + pad)
            if x1 - x0 < 16 or y1 - y0 < 16:
                continue
            roi = image[y0:y1, x0:x1]
            # the face becomes ~40 px (Haar's window is 24 px): few positions, few scales
            s = min(1.0, 40.0 / side)
            got = self._detect_scaled(roi, s, max(0.65 * side * s, 20), 1.5 * side * s + 2)
            if len(got):
                got[:, 0] += x0
                got[:, 1] += y0
                found.append(got)
        if not found:
            return np.zeros((0, 4), dtype=np.int32)
        boxes = np.concatenate(found)
        keep = []
        for b in boxes[np.argsort(-boxes[:, 2] * boxes[:, 3])]:
            if all(iou(b, k) < 0.4 for k in keep):
                keep.append(b)
        return _clip_sort(np.asarray(keep, dtype=np.int32), w, h)


def _clip_sort(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    if not len(boxes):
        return np.zeros((0, 4), dtype=np.int32)
    x0 = np.clip(boxes[:, 0], 0, w - 1)
    y0 = np.clip(boxes[:, 1], 0, h - 1)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 1, w)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 1, h)
    out = np.stack([x0, y0, x1 - x0, y1 - y0], 1).astype(np.int32)
    out = out[(out[:, 2] > 0) & (out[:, 3] > 0)]
    return out[np.argsort(-(out[:, 2] * out[:, 3]), kind="stable")]


_DEFAULT_DETECTORS: dict[DetectorConfig, FaceDetector] = {}
_DEFAULT_LOCK = threading.Lock()


def detect_faces(image, config: DetectorConfig | None = None) -> np.ndarray:
    """Convenience: decode ``image`` if needed and detect with a cached detector per config."""
    cfg = config or DetectorConfig()
    with _DEFAULT_LOCK:
        det = _DEFAULT_DETECTORS.get(cfg)
        if det is None:
            det = _DEFAULT_DETECTORS[cfg] = FaceDetector(cfg)
    img = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else None
    return det.detect(img if img is not None else decode_image(image))


def iou(a, b) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- preprocessing

def as_face_batch(faces, where: str = "faces") -> np.ndarray:
    """float32 (N, 48, 48, 1) model input from grey faces (48, 48), (N, 48, 48) or (N, 48, 48, 1).

    The one shape check for every path that feeds faces to a model (evaluation, Predictor);
    anything else is a :class:`FerError` naming the shape and ``where``.
    """
    x = np.asarray(faces)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise FerError(f"faces of shape {tuple(np.shape(faces))}; expected (N, {FACE_SIZE}, "
                       f"{FACE_SIZE}) grey crops", where=where)
    return x.astype(np.float32)[..., None]


def crop_face(image: np.ndarray, box, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The model's input for one face: grey uint8 48x48 (``INTER_AREA``).

    ``box`` is ``[x, y, w, h]``; it grows by ``margin`` x its size on each side; parts outside the
    image are filled by replicating the border, so the face is never stretched.
    """
    return crop_faces(image, [box], margin)[0]


def crop_faces(image: np.ndarray, boxes, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """:func:`crop_face` for many boxes: uint8 (N, 48, 48). The one preprocessing path."""
    grey = to_grey(image)
    h, w = grey.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(boxes), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    for i, (x, y, bw, bh) in enumerate(boxes):
        if bw <= 0 or bh <= 0:
            raise FerError(f"face box {[int(x), int(y), int(bw), int(bh)]} has no area",
                           where="box")
        x0 = int(round(x - margin * bw))
        y0 = int(round(y - margin * bh))
        x1 = int(round(x + bw + margin * bw))
        y1 = int(round(y + bh + margin * bh))
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            raise FerError(f"face box {[int(x), int(y), int(bw), int(bh)]} lies outside the "
                           f"{w}x{h} image", where="box")
        crop = grey[cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            crop = cv2.copyMakeBorder(crop, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1,
                                      cv2.BORDER_REPLICATE)
        out[i] = cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return out


def whole_image_face(image: np.ndarray) -> np.ndarray:
    """The whole image taken as one face crop: uint8 (1, 48, 48)."""
    grey = to_grey(image)
    return cv2.resize(grey, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)[None]
