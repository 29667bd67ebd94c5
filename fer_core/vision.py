"""Images in, faces out: decoding, face detection and THE preprocessing path (grey, crop, 48x48).

Every entry point (photos, webcam, CLI, API, evaluation of user images) goes through
:func:`decode_image` -> :class:`FaceDetector` -> :func:`crop_faces`, so a face reaches the model
exactly as the training faces did: grey uint8, 48x48, resized with ``INTER_AREA``; scaling to
[0, 1] happens inside the model.

Channel convention: arrays are **BGR** (OpenCV order) unless ``color="rgb"`` is passed; 4-channel
arrays are BGRA (or RGBA with ``color="rgb"``); 2-D arrays are grey. Decoded files come back as
BGR (H, W, 3) for colour images and (H, W) for grey ones, always uint8.

Detection: :class:`FaceDetector` wraps one registered detector (:mod:`fer_core.detectors`:
Haar, BlazeFace) with a preset and returns :class:`fer_core.detectors.Detections` (boxes, scores,
5-point landmarks where the detector gives them). Alignment: with eye landmarks,
:func:`crop_faces` rotates each face so the eyes are level before the 48x48 crop.

Thread safety: detector objects (a Haar ``CascadeClassifier``, a LiteRT interpreter) are not
safe to share between threads, so :class:`FaceDetector` lends each call one from a pool of at
most one per CPU core (a call waits while all are busy); one ``FaceDetector`` can be shared by
all sessions and threads.
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from fer_core.errors import FerError

FACE_SIZE = 48
MAX_PIXELS = 40_000_000
# A Haar box is a little tighter than the FER2013 crop of the same face; this margin per side
# reproduces the training framing.
DEFAULT_MARGIN = 0.02

__all__ = ["FACE_SIZE", "MAX_PIXELS", "DEFAULT_MARGIN", "DEFAULT_DETECTOR", "PRESETS",
           "as_face_batch", "decode_image", "to_grey", "to_bgr", "DetectorConfig", "FaceDetector",
           "detect_faces", "degenerate", "crop_face", "crop_faces", "iou"]


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

DEFAULT_DETECTOR = "blazeface"


def default_detector() -> str:
    """:data:`DEFAULT_DETECTOR`, on every install: its weights are package data and it runs on
    LiteRT, a dependency of the plain (TensorFlow-free) install."""
    return DEFAULT_DETECTOR


# Images thinner than this, or longer than ``MAX_ASPECT`` times their width, hold no face a
# detector can see: they get no detection at all (never an OpenCV error).
MIN_IMAGE_SIDE = 16
MAX_ASPECT = 100.0

# The score under which a box is dropped, per detector, learned on ../shared/data/faces and the
# bench's clips by ``python -m fer_core bench detect --learn`` (the middle of the widest range
# of thresholds with the fewest misses + false boxes; see README "Face detectors"). Haar's
# neighbour count (``min_neighbors``) is its threshold, so its score threshold is 0.
SCORE_THRESHOLDS = {"haar": 0.0, "blazeface": 0.5, "blazeface-short": 0.35}
# Detector box -> the FER2013 framing of the training crops (which Haar + DEFAULT_MARGIN match):
# a square of side ``scale * max(w, h)`` whose centre moves by ``shift * side`` downwards.
# Medians of Haar vs BlazeFace boxes on the 58 portraits of ../shared/data/faces where both
# found one face (interquartile range of the scale 1.02-1.13 full range, 1.07-1.18 short).
FRAMING = {"haar": (1.0, 0.0), "blazeface": (1.08, -0.066), "blazeface-short": (1.12, -0.107)}

PRESETS: dict[str, dict[str, dict]] = {
    # preset -> detector -> settings; every entry point of a use shares its preset
    "photo": {"haar": {}, "blazeface": {"pad": 0.2, "tile": 0.6},
              "blazeface-short": {"pad": 0.2}},
    "realtime": {"haar": {"max_side": 256, "min_size": 80, "scale_factor": 1.15},
                 "blazeface": {"min_size": 80}, "blazeface-short": {"min_size": 80}},
    "fast": {"haar": {"max_side": 320, "min_size": 40, "scale_factor": 1.2},
             "blazeface": {"min_size": 40}, "blazeface-short": {"min_size": 40}},
    "video": {"haar": {"max_side": 480, "min_size": 40, "scale_factor": 1.2},
              "blazeface": {"min_size": 40}, "blazeface-short": {"min_size": 40}},
}


# (field, lowest, highest, type, unit) of the DetectorConfig fields that take a closed range
_RANGES = (("scale_factor", 1.01, 2.0, float, ""), ("min_neighbors", 0, 50, int, ""),
           ("min_size", 8, 4096, int, " pixels"), ("max_side", 96, 8192, int, " pixels"),
           ("pad", 0.0, 1.0, float, ""))


@dataclass(frozen=True)
class DetectorConfig:
    """Face detector settings.

    ``kind`` names a registered detector (:mod:`fer_core.detectors`: ``haar``, ``blazeface``,
    ``blazeface-short``). ``min_size`` is the smallest face side in pixels of the *original*
    image. Haar: frames whose longer side exceeds ``max_side`` are downscaled for detection (the
    main speed lever), ``scale_factor`` and ``min_neighbors`` are the cascade's. CNN detectors
    letterbox the frame into their own input; ``pad`` (a fraction of the longer side) adds a
    border first so a face cut by the frame edge is seen whole. ``tile`` (CNN detectors; 0 =
    off) adds a second pass on overlapping square tiles of ``tile`` x the longer side, each at
    the detector's full input resolution, for faces too small for the one whole-image pass
    (see ``FaceDetector._detect_tiles``); both passes are merged by the same non-maximum
    suppression. ``score_threshold`` None takes the detector's learned threshold
    (``SCORE_THRESHOLDS``).
    """

    kind: str = field(default_factory=default_detector)
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 30
    max_side: int = 640
    score_threshold: float | None = None
    pad: float = 0.0
    tile: float = 0.0

    @classmethod
    def preset(cls, name: str, detector: str | None = None, **changes) -> "DetectorConfig":
        """The settings of one use for one detector (default ``DEFAULT_DETECTOR``):

        - ``photo``: photos and ``predict`` (Haar: the defaults; CNN: a 20 % border;
          ``blazeface`` also the tiling pass, 2x2 tiles of 0.6 on a square photo, so five
          model runs, for small faces in group photos and faces cut by the edge);
        - ``realtime``: the Webcam page, ``bench predict`` and ``FER_DETECTOR_PRESET=realtime``:
          faces >= 80 px (an arm's length away); Haar on a <= 256 px copy, scale step 1.15;
        - ``fast``: the API's default: faces >= 40 px; Haar on a <= 320 px copy, step 1.2;
        - ``video``: video files (CLI, Video page, video API, ``bench video``): faces >= 40 px;
          Haar on a <= 480 px copy, step 1.2.
        """
        from fer_core.detectors import check_name
        if name not in PRESETS:
            raise FerError(f"unknown detector preset {name!r}; expected one of "
                           f"{sorted(PRESETS)}", where="detector preset")
        kind = check_name(detector or changes.pop("kind", None) or default_detector())
        changes.pop("kind", None)
        return replace(cls(kind=kind, **PRESETS[name].get(kind, {})), **changes)

    @classmethod
    def of(cls, settings) -> "DetectorConfig":
        """The API's detector: ``FER_DETECTOR_PRESET`` (``accurate`` = ``photo``) of
        ``FER_DETECTOR`` (None: :func:`default_detector`) from a
        :class:`fer_core.settings.Settings`."""
        preset = settings.detector_preset
        return cls.preset({"accurate": "photo"}.get(preset, preset), settings.detector)

    @classmethod
    def realtime(cls, detector: str | None = None, **changes) -> "DetectorConfig":
        """The ``realtime`` :meth:`preset`."""
        return cls.preset("realtime", detector, **changes)

    @property
    def threshold(self) -> float:
        return (SCORE_THRESHOLDS.get(self.kind, 0.5) if self.score_threshold is None
                else float(self.score_threshold))

    def validate(self) -> "DetectorConfig":
        from fer_core.detectors import check_name
        check_name(self.kind, where="detector.kind")
        for name, lo, hi, cast, unit in _RANGES:
            value = getattr(self, name)
            if not lo <= cast(value) <= hi:
                raise FerError(f"{name} must be in [{lo:g}, {hi:g}]{unit}, got {value}",
                               where=f"detector.{name}")
        if self.score_threshold is not None and not 0.0 <= float(self.score_threshold) < 1.0:
            raise FerError(f"score_threshold must be in [0, 1), got {self.score_threshold}",
                           where="detector.score_threshold")
        if not (float(self.tile) == 0.0 or 0.2 <= float(self.tile) < 1.0):
            raise FerError(f"tile must be 0 (one pass) or in [0.2, 1), got {self.tile}",
                           where="detector.tile")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def degenerate(h: int, w: int) -> bool:
    """True for images no face fits in: thinner than MIN_IMAGE_SIDE, or more than MAX_ASPECT
    times longer than wide (1x1, 641x1, 2000x3, 20000x1, 1x20000...)."""
    lo, hi = min(h, w), max(h, w)
    return lo < MIN_IMAGE_SIDE or hi > MAX_ASPECT * lo


# The tiling pass (``DetectorConfig.tile``, the ``photo`` preset of ``blazeface``): neighbouring
# tiles overlap by TILE_OVERLAP x a tile; a tile side on the image's edge is mirrored outwards by
# TILE_MIRROR x a tile (a face cut by the photo's edge is completed by its mirror image), and a
# box is kept when its centre lies inside the image or within MIRROR_CENTRE x its side outside
# (a face cut near its middle), not further (a mirrored copy of a face near the edge). Chosen on
# ../shared/data/faces (README "Face detectors"): tiles of 0.6 with these values gave 61/61
# portraits and 7 selfie faces for thresholds 0.45-0.55.
TILE_OVERLAP = 0.3
TILE_MIRROR = 0.25
MIRROR_CENTRE = 0.1


def _tile_starts(n: int, t: int, overlap: float = 0.5) -> list[int]:
    """Start offsets of tiles of side ``t`` covering ``n`` pixels, evenly spread, neighbours
    overlapping by at least ``overlap * t``."""
    if n <= t:
        return [0]
    k = int(np.ceil((n - t) / (t * (1 - overlap)) - 1e-9)) + 1
    return [int(round(i * (n - t) / (k - 1))) for i in range(k)]


def _resize_to(image: np.ndarray, s: float) -> np.ndarray:
    """``image`` scaled by ``s`` (never to an empty size)."""
    h, w = image.shape[:2]
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class FaceDetector:
    """The one face detector entry: ``detect(image) -> Detections`` (largest first).

    Wraps a registered detector (:mod:`fer_core.detectors`) with the preset's settings: the
    score threshold, a minimum face size, the FER2013 framing of the boxes, non-maximum
    suppression (across scales, padding and the tracker's local searches) and clipping to the
    image. Degenerate images (see :func:`degenerate`) give no detection.

    Thread-safe: each :meth:`detect` call borrows a detector object from a pool and gives it
    back; the pool makes one only when all are busy, and at most ``max_detectors`` (default: one
    per usable CPU core, where detection runs no faster with more); a call finding them all busy
    waits for one. A detector object is not small (a BlazeFace interpreter holds about 10 MB),
    and one per thread, as before, made the API build one for every worker thread of its pool
    (up to 40) and free it when the thread retired after 10 s idle: dozens a minute under
    steady traffic, whose freed memory stayed in glibc's heap as holes (issue 25's soak).
    """

    def __init__(self, config: DetectorConfig | None = None, max_detectors: int | None = None):
        self.config = (config or DetectorConfig()).validate()
        self.max_detectors = max(1, int(max_detectors or usable_cores()))
        self._free: list = []
        self._made = 0                  # detector objects made (free or lent)
        self._cond = threading.Condition()
        det = self._make()  # fail now (missing package, bad weights), not on the first frame
        self._made = 1
        self._landmarks = bool(det.landmarks)
        self._free.append(det)

    @property
    def has_landmarks(self) -> bool:
        return self._landmarks

    @property
    def detectors_made(self) -> int:
        """How many detector objects this FaceDetector holds (free or lent out now)."""
        return self._made

    def _make(self):
        from fer_core.detectors import HaarDetector, create
        cfg = self.config
        return (HaarDetector(cfg.scale_factor, cfg.min_neighbors) if cfg.kind == "haar"
                else create(cfg.kind))

    @contextmanager
    def _borrowed(self):
        """A detector object for this thread until the block ends: a free one (the one given
        back last), else a new one while fewer than ``max_detectors`` exist, else the first one
        given back."""
        with self._cond:
            while not self._free and self._made >= self.max_detectors:
                self._cond.wait()
            det = self._free.pop() if self._free else None
            if det is None:
                self._made += 1
        if det is None:
            try:
                det = self._make()
            except BaseException:
                with self._cond:
                    self._made -= 1
                    self._cond.notify()
                raise
        try:
            yield det
        finally:
            with self._cond:
                self._free.append(det)
                self._cond.notify()

    def detect(self, image: np.ndarray, near=None):
        """Faces in ``image`` (decoded BGR or grey array) as :class:`Detections`.

        With ``near`` (boxes from a previous frame) only the regions around those boxes are
        searched, at sizes around the previous one: the cheap tracking step.
        """
        from fer_core.detectors import Detections
        h, w = image.shape[:2]
        if degenerate(h, w):
            return Detections.empty(self.has_landmarks)
        with self._borrowed() as det:
            if near is not None and len(near):
                d = self._detect_near(det, image,
                                      np.asarray(near, dtype=np.float64).reshape(-1, 4))
            else:
                d = self._detect_whole(det, image)
        return self._finish(d, w, h)

    def _run(self, det, image, min_px, max_px=None):
        if self.config.kind == "haar":
            return det.detect(image, min_px, max_px)
        return det.detect(image, min_px, max_px, threshold=max(self.config.threshold, 0.05))

    def _detect_whole(self, det, image):
        from fer_core.detectors import Detections
        cfg = self.config
        h, w = image.shape[:2]
        if cfg.kind == "haar":
            grey = to_grey(image)
            s = min(1.0, cfg.max_side / max(h, w))
            small = _resize_to(grey, s) if s < 1.0 else grey
            return self._run(det, small, cfg.min_size * s).scaled(1.0 / s)
        p = int(round(cfg.pad * max(h, w)))
        padded = (cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0) if p
                  else image)
        whole = self._run(det, padded, cfg.min_size).scaled(1.0, -p, -p)
        if cfg.tile:
            whole = Detections.concat([whole, self._detect_tiles(det, image)])
        return whole

    def _detect_tiles(self, det, image):
        """The tiling pass of a CNN detector (``tile`` > 0): square tiles of ``tile`` x the
        longer side of ``image``, neighbours overlapping by at least ``TILE_OVERLAP`` x a tile,
        each seen at the detector's full input resolution, so faces too small for the one
        whole-image pass (BlazeFace sees any image at 192x192) are found. A tile keeps the
        faces that fit in half a tile and do not touch a cut side (a side inside the image): a
        face cut by one tile lies whole in its neighbour, and larger faces are the whole
        pass's. Sides on the image's edge are mirrored outwards by ``TILE_MIRROR`` x the tile,
        so a face cut by the photo's edge (half a face) is completed by its mirror image; a box
        whose centre lies outside the image by more than ``MIRROR_CENTRE`` x its side (a
        mirrored copy of a whole face) is dropped."""
        from fer_core.detectors import Detections
        h, w = image.shape[:2]
        t = max(1, int(round(self.config.tile * max(h, w))))
        m = int(round(TILE_MIRROR * t))
        found = []
        for y0 in _tile_starts(h, t, TILE_OVERLAP):
            for x0 in _tile_starts(w, t, TILE_OVERLAP):
                x1, y1 = min(w, x0 + t), min(h, y0 + t)
                pads = (m if y0 == 0 else 0, m if y1 == h else 0,
                        m if x0 == 0 else 0, m if x1 == w else 0)   # top, bottom, left, right
                tile = image[y0:y1, x0:x1]
                if m and any(pads):
                    tile = cv2.copyMakeBorder(tile, *pads, cv2.BORDER_REFLECT)
                d = self._run(det, tile, self.config.min_size, t / 2)
                if not len(d):
                    continue
                d = d.scaled(1.0, x0 - pads[2], y0 - pads[0])  # image pixels
                b = d.boxes
                cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
                tol = MIRROR_CENTRE * np.minimum(b[:, 2], b[:, 3])
                ok = (cx >= -tol) & (cx < w + tol) & (cy >= -tol) & (cy < h + tol)
                edge = 0.02 * t
                if x0 > 0:
                    ok &= b[:, 0] > x0 + edge
                if y0 > 0:
                    ok &= b[:, 1] > y0 + edge
                if x1 < w:
                    ok &= b[:, 0] + b[:, 2] < x1 - edge
                if y1 < h:
                    ok &= b[:, 1] + b[:, 3] < y1 - edge
                found.append(d.select(ok))
        return Detections.concat(found)

    def _detect_near(self, det, image, near):
        from fer_core.detectors import Detections
        h, w = image.shape[:2]
        found = []
        haar = self.config.kind == "haar"
        src = to_grey(image) if haar else image
        for x, y, bw, bh in near:
            side = max(bw, bh, 8.0)
            pad = side / 2
            x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
            x1, y1 = min(w, int(x + bw + pad)), min(h, int(y + bh + pad))
            if degenerate(y1 - y0, x1 - x0):
                continue
            roi = src[y0:y1, x0:x1]
            if haar:  # the face becomes ~40 px (Haar's window is 24 px): few scales
                s = min(1.0, 40.0 / side)
                small = _resize_to(roi, s) if s < 1.0 else roi
                got = self._run(det, small, max(0.65 * side * s, 20), 1.5 * side * s + 2)
                got = got.scaled(1.0 / s, x0, y0)
            else:
                got = self._run(det, roi, 0.5 * side, 2.0 * side).scaled(1.0, x0, y0)
            found.append(got)
        return Detections.concat(found)

    def _finish(self, d, w, h):
        from fer_core.detectors import Detections, nms
        cfg = self.config
        if not len(d):
            return Detections.empty(self.has_landmarks)
        d = d.select(d.scores >= cfg.threshold)
        # to the training crops' framing: square, scaled, shifted
        scale, shift = FRAMING.get(cfg.kind, (1.0, 0.0))
        b = d.boxes.astype(np.float64)
        side = np.maximum(b[:, 2], b[:, 3]) * scale
        cx = b[:, 0] + b[:, 2] / 2
        cy = b[:, 1] + b[:, 3] / 2 + shift * side
        d = Detections(np.stack([cx - side / 2, cy - side / 2, side, side], 1).astype(np.float32),
                       d.scores, d.landmarks)
        d = nms(d, 0.3)
        # clip to the image; drop what lies outside or below the minimum size
        b = d.boxes
        x0 = np.clip(b[:, 0], 0, w)
        y0 = np.clip(b[:, 1], 0, h)
        x1 = np.clip(b[:, 0] + b[:, 2], 0, w)
        y1 = np.clip(b[:, 1] + b[:, 3], 0, h)
        clipped = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
        ok = (clipped[:, 2] >= 1) & (clipped[:, 3] >= 1) & (b[:, 2] >= 0.5 * cfg.min_size)
        d = Detections(np.round(clipped).astype(np.float32), d.scores, d.landmarks).select(ok)
        return d.largest_first()


_DEFAULT_DETECTORS: dict[DetectorConfig, FaceDetector] = {}
_DEFAULT_LOCK = threading.Lock()


def detect_faces(image, config: DetectorConfig | None = None):
    """Convenience: decode ``image`` if needed and detect with a cached detector per config;
    returns :class:`fer_core.detectors.Detections`."""
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


def crop_face(image: np.ndarray, box, margin: float = DEFAULT_MARGIN, eyes=None) -> np.ndarray:
    """The model's input for one face: grey uint8 48x48 (``INTER_AREA``).

    ``box`` is ``[x, y, w, h]``; it grows by ``margin`` x its size on each side; parts outside the
    image are filled by replicating the border, so the face is never stretched. ``eyes``
    ((2, 2) eye centres) rotates the crop about the box centre so the eyes are level.
    """
    return crop_faces(image, [box], margin, None if eyes is None else [eyes])[0]


# Tilts below this are left alone: a rotation resamples the face, and BlazeFace's eye points
# wobble by up to ~4 degrees on upright faces (measured on the drawn test faces).
MIN_ALIGN_DEGREES = 5.0
MAX_ALIGN_DEGREES = 60.0


def eye_angle(eyes) -> float:
    """Degrees the eye line rises from the image-left eye to the image-right eye (image y is
    down, so a positive angle means the right eye is lower)."""
    (lx, ly), (rx, ry) = np.asarray(eyes, dtype=np.float64).reshape(2, 2)
    return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


def crop_faces(image: np.ndarray, boxes, margin: float = DEFAULT_MARGIN, eyes=None) -> np.ndarray:
    """:func:`crop_face` for many boxes: uint8 (N, 48, 48). The one preprocessing path.

    ``eyes`` (N, 2, 2) aligns each face whose eye line tilts by MIN_ALIGN_DEGREES to
    MAX_ALIGN_DEGREES: the square crop is taken rotated about the box centre by that angle.
    """
    grey = to_grey(image)
    h, w = grey.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    eyes = None if eyes is None else np.asarray(eyes, dtype=np.float64).reshape(-1, 2, 2)
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
        angle = eye_angle(eyes[i]) if eyes is not None else 0.0
        if MIN_ALIGN_DEGREES <= abs(angle) <= MAX_ALIGN_DEGREES:
            out[i] = _rotated_crop(grey, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, angle)
            continue
        crop = grey[cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            crop = cv2.copyMakeBorder(crop, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1,
                                      cv2.BORDER_REPLICATE)
        out[i] = cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return out


def _rotated_crop(grey, cx, cy, cw, ch, angle) -> np.ndarray:
    """The (cw, ch) window centred on (cx, cy), rotated by ``angle`` degrees (eyes level), at
    native resolution (border replicated), then 48x48 with INTER_AREA like the upright path."""
    cw, ch = max(1, int(round(cw))), max(1, int(round(ch)))
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), 1.0)
    m[0, 2] += cw / 2 - cx
    m[1, 2] += ch / 2 - cy
    crop = cv2.warpAffine(grey, m, (cw, ch), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def whole_image_face(image: np.ndarray) -> np.ndarray:
    """The whole image taken as one face crop: uint8 (1, 48, 48)."""
    grey = to_grey(image)
    return cv2.resize(grey, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)[None]
