"""The model side of the API: the shared Predictor, face preparation, the micro-batcher and the
recent-prediction crop cache used by feedback."""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fer_core.api.batching import MicroBatcher
from fer_core.api.errors import ApiError
from fer_core.api.imaging import check_image
from fer_core.api.settings import Settings
from fer_core.errors import FerError
from fer_core.labels import FER7, canonical


class CropCache:
    """Bounded LRU: prediction id -> (48x48 crop, predicted label, model id)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._data: OrderedDict[str, tuple[np.ndarray, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, crop: np.ndarray, predicted: str, model_id: str) -> str:
        pid = uuid.uuid4().hex
        with self._lock:
            self._data[pid] = (crop, predicted, model_id)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
        return pid

    def get(self, pid: str):
        with self._lock:
            item = self._data.get(pid)
            if item is not None:
                self._data.move_to_end(pid)
            return item

    def __len__(self) -> int:
        return len(self._data)


_ABS_PATH = re.compile(r"(?<![^\s'\"(=])(?:[A-Za-z]:)?[/\\][^\s:'\"]+")


class ModelService:
    """Owns the Predictor (loaded in the app's lifespan) and everything the routers need."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.predictor = None
        self.error: str | None = None
        self.detector = None
        self.crops = CropCache(settings.crop_cache)
        self.batcher: MicroBatcher | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model; on failure remember why (health says so, predict answers 503)."""
        if not self.settings.load_model:
            self.error = "model loading disabled"
            return
        path = self.settings.model_path
        try:
            if not Path(path).exists():
                raise FerError("model not found; train one (python -m fer_core train) or set "
                               "FER_MODEL to a run directory or .keras file", where=str(path))
            from fer_core.predict import Predictor
            self.predictor = Predictor(model=str(path),
                                       detector_config=self.settings.detector_config(),
                                       tta=self.settings.tta)
            self.predictor.predict_faces(np.zeros((1, 48, 48), dtype=np.uint8))  # warm-up
        except FerError as e:
            self.predictor, self.error = None, str(e)
        except Exception as e:  # noqa: BLE001 - a broken model must not crash the server
            self.predictor, self.error = None, f"{path}: cannot load model ({type(e).__name__}: {e})"
        self.batcher = MicroBatcher(self._predict_faces, self.settings.batch_wait_ms,
                                    self.settings.max_batch)

    def _predict_faces(self, faces: np.ndarray) -> np.ndarray:
        return np.asarray(self.predictor.predict_faces(faces), dtype=np.float32)

    @property
    def public_error(self) -> str | None:
        """The load error as clients may see it: server paths reduced to their last part."""
        if self.error is None:
            return None
        return _ABS_PATH.sub(lambda m: Path(m.group(0)).name or "/", self.error)

    @property
    def loaded(self) -> bool:
        return self.predictor is not None

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels) if self.predictor is not None else list(FER7)

    @property
    def model_id(self) -> str | None:
        return str(self.predictor.model_id) if self.predictor is not None else None

    def require_model(self) -> None:
        if self.predictor is None:
            raise ApiError("model_not_loaded", f"no model loaded: {self.public_error}", 503)

    # ---- labels ----------------------------------------------------------------------------
    def check_label(self, label: str) -> str:
        """The label as named in the model's label set (synonyms accepted), or ApiError 422."""
        labels = self.labels
        try:
            c = canonical(label)
            for name in labels:
                if canonical(name) == c:
                    return name
        except FerError:
            pass
        raise ApiError("unknown_label", f"label: unknown label {label!r}; expected one of "
                       f"{labels}", 422)

    # ---- images -> faces (runs in a worker thread) -----------------------------------------
    def _detect(self, image: np.ndarray):
        if self.predictor is not None:  # the Predictor's detector (FER_DETECTOR[_PRESET])
            return self.predictor.detect(image)
        if self.detector is None:  # feedback by image works without a model too
            from fer_core.vision import FaceDetector
            self.detector = FaceDetector(self.settings.detector_config())
        return self.detector.detect(image)

    def prepare(self, data: bytes, detect: bool, where: str = "image"):
        """Decode ``data`` and cut faces: (uint8 (N,48,48), boxes [[x,y,w,h], ...]).

        The same preprocessing as :meth:`fer_core.predict.Predictor.predict_image`, split so that
        the model call can be batched across requests.
        """
        from fer_core import vision
        max_pixels = self.settings.max_pixels
        check_image(data, max_pixels, where)
        try:
            image = vision.decode_image(data, max_pixels=max_pixels, name=where)
        except FerError as e:
            raise ApiError("bad_image", str(e), 400) from None
        h, w = image.shape[:2]
        if not detect:
            return vision.whole_image_face(image), [[0, 0, int(w), int(h)]]
        dets = self._detect(image)
        if not len(dets):
            return np.zeros((0, 48, 48), dtype=np.uint8), []
        faces = (self.predictor.crops(image, dets) if self.predictor is not None
                 else vision.crop_faces(image, dets.boxes))
        return faces, [[int(v) for v in b] for b in dets.int_boxes]

    # ---- probabilities -> response faces ---------------------------------------------------
    def describe(self, faces: np.ndarray, boxes, probs: np.ndarray, top_k: int) -> list[dict]:
        """Response faces (FerModel.describe, rounded) with a prediction id for feedback."""
        model_id = self.model_id
        out = []
        for face, pred in zip(faces, self.predictor.describe(probs, boxes, top_k)):
            d = pred.to_dict()
            d.pop("confidence")
            d["top_k"] = [tuple(kv) for kv in d["top_k"]]
            d["prediction_id"] = self.crops.put(face, pred.emotion, model_id)
            out.append(d)
        return out
