"""The model side of the API: the shared Predictor, face preparation, the micro-batcher and the
recent-prediction crop cache used by feedback."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_core.api.batching import MicroBatcher
from fer_core.api.errors import ApiError
from fer_core.api.imaging import check_image
from fer_core.errors import FerError
from fer_core.resolve import resolve_model
from fer_core.settings import Settings
from fer_core.labels import FER7, canonical

log = logging.getLogger("fer_core.api")

# The server runs every model call on LiteRT (a FerModel runs every batch size on its one
# backend). A model LiteRT cannot run falls back to "auto", which serves it on Keras; the
# server never loads TensorFlow otherwise (when large micro-batches went to the traced Keras
# function, it did so minutes into a soak: +300 MB of RSS that never went back, issue 25).
SERVER_BACKEND = "tflite"

# Images decoded, searched for faces and cropped at once (ModelService.prepare_in_thread), per
# usable CPU core: two keep every core busy (one image decodes while another is searched).
PREPARE_PER_CORE = 2


def drop_frames(e: BaseException) -> None:
    """Clear the finished frames of ``e``'s traceback and of the exceptions it was raised in.

    A failed decode's frames hold its half-filled image buffer (tens of MB); the exception
    objects sit in reference cycles (thread-pool futures), so without this the buffers live
    until the garbage collector happens to run, which an idle server never does."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__context__


class CropCache:
    """The face crops of the ``capacity`` most recent predictions, for feedback by prediction
    id: prediction id -> (48x48 crop, predicted label, model id).

    The crops live in one ring of ``capacity`` slots, allocated and touched when the server
    starts (48x48 bytes each: 23 MB for the default 10,000), and the oldest prediction's slot
    is reused. Keeping each crop as its own small array, as before, filled glibc's heap over the
    first minutes of traffic with thousands of 2.3 KB blocks interleaved with the requests'
    temporaries: memory that grew for as long as the cache filled (8 minutes of the soak) and
    fragmented the heap. Now the cache's memory is all there from the start and never moves.
    """

    def __init__(self, capacity: int, shape: tuple[int, int] = (48, 48)):
        self.capacity = max(1, int(capacity))
        self._crops = np.empty((self.capacity, *shape), dtype=np.uint8)
        self._crops.fill(0)  # resident now, not page by page as it fills
        self._slot_of: dict[str, int] = {}
        self._meta: list[tuple[str, str, str] | None] = [None] * self.capacity  # pid, label, id
        self._next = 0
        self._lock = threading.Lock()

    def put(self, crop: np.ndarray, predicted: str, model_id: str) -> str:
        pid = uuid.uuid4().hex
        with self._lock:
            i = self._next
            self._next = (i + 1) % self.capacity
            old = self._meta[i]
            if old is not None:
                del self._slot_of[old[0]]
            self._crops[i] = crop
            self._meta[i] = (pid, predicted, model_id)
            self._slot_of[pid] = i
        return pid

    def get(self, pid: str):
        """(crop copy, predicted label, model id), or None when unknown or evicted."""
        with self._lock:
            i = self._slot_of.get(pid)
            if i is None:
                return None
            _, predicted, model_id = self._meta[i]
            return self._crops[i].copy(), predicted, model_id

    def __len__(self) -> int:
        return len(self._slot_of)


_ABS_PATH = re.compile(r"(?<![^\s'\"(=])(?:[A-Za-z]:)?[/\\][^\s:'\"]+")


@dataclass(eq=False)
class Slot:
    """One loaded model with its own micro-batcher. Requests pin the slot they start on
    (:meth:`ModelService.pin`), so a swap never changes the model under a request; a replaced
    slot's batcher stops once its last request is done."""

    predictor: object | None
    batcher: MicroBatcher
    model_id: str | None
    sha256: str | None
    source: str                    # "configured" (FER_MODEL) or "promoted" (the store)
    users: int = 0
    retired: bool = False


class ModelService:
    """Owns the active model (a :class:`Slot`, swapped atomically when the store's active-model
    pointer moves) and everything the routers need. ``pin()`` gives a request its own view."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.error: str | None = None
        self.swap_error: str | None = None
        self.detector = None
        self.crops = CropCache(settings.crop_cache)
        from fer_core.vision import usable_cores
        self.prepare_limit = PREPARE_PER_CORE * usable_cores()
        self._prepare_slots = asyncio.Semaphore(self.prepare_limit)  # shared by pinned views
        self.configured_path: Path | None = None   # the resolved FER_MODEL (or shipped model)
        self._slot: Slot | None = None
        self._configured: Slot | None = None
        self._pinned: Slot | None = None
        self.pointer_version = 0
        self.swaps = 0
        self.on_batch = None           # callback(n_faces) for metrics
        self._swap_lock = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Load the configured model (``FER_MODEL``, else the shipped one:
        :func:`fer_core.resolve.resolve_model`); on failure remember why (health says so,
        predict answers 503)."""
        predictor, sha = None, None
        if not self.settings.load_model:
            self.error = "model loading disabled"
        else:
            try:
                self.configured_path = resolve_model(None, self.settings)
                predictor = self._load_predictor(self.configured_path)
                from fer_core.model_files import file_sha256
                sha = file_sha256(predictor.model_path)
            except FerError as e:
                predictor, self.error = None, str(e)
            except Exception as e:  # noqa: BLE001 - a broken model must not crash the server
                predictor, self.error = None, f"{self.configured_path}: cannot load model " \
                                              f"({type(e).__name__}: {e})"
        slot = self._new_slot(predictor, None if predictor is None else str(predictor.model_id),
                              sha, "configured")
        self._configured = self._slot = slot

    def _load_predictor(self, path):
        from fer_core.predict import Predictor
        from fer_core.vision import DetectorConfig
        config = DetectorConfig.of(self.settings)
        try:  # LiteRT for every batch size: see SERVER_BACKEND
            predictor = Predictor(model=str(path), detector_config=config, tta=self.settings.tta,
                                  backend=SERVER_BACKEND)
        except FerError as e:
            if "TFLite" not in str(e):
                raise
            log.warning("%s; serving it on Keras", e)
            predictor = Predictor(model=str(path), detector_config=config, tta=self.settings.tta)
        predictor.predict_faces(np.zeros((1, 48, 48), dtype=np.uint8))  # warm-up
        return predictor

    def _new_slot(self, predictor, model_id, sha, source) -> Slot:
        def predict_faces(faces, _p=predictor):
            if self.on_batch is not None:
                self.on_batch(len(faces))
            return np.asarray(_p.predict_faces(faces), dtype=np.float32)
        batcher = MicroBatcher(predict_faces, self.settings.batch_wait_ms,
                               self.settings.max_batch)
        return Slot(predictor, batcher, model_id, sha, source)

    async def start(self) -> None:
        await self._configured.batcher.start()

    async def stop(self) -> None:
        for slot in {id(s): s for s in (self._slot, self._configured) if s}.values():
            await slot.batcher.stop()

    # ---- following the store's active-model pointer ----------------------------------------
    async def follow(self, store, pointer: dict) -> bool:
        """Serve the model ``pointer`` (:meth:`FeedbackStore.active`) names: load it (from the
        store, in a worker thread) and swap; True when the model changed. A model that cannot
        be loaded leaves the current one serving (``swap_error`` says why).

        Pointers only move forward: one older than the pointer this instance already follows
        (a poll that read the store before an API promotion took the lock) changes nothing.
        Loading takes seconds, so once a model is loaded the pointer is read again: when it
        moved meanwhile (a rollback during the load), the loaded model is dropped and the
        newer pointer is followed instead; a model the store no longer names is never swapped
        in."""
        from starlette.concurrency import run_in_threadpool
        async with self._swap_lock:
            while True:
                version = pointer.get("version", 0)
                if version < self.pointer_version:
                    return False
                want = pointer.get("model_id")
                current = self._slot
                if (want is None and current is self._configured) or \
                        (want is not None and current.model_id == want):
                    self.pointer_version = version
                    return False
                if want is None:
                    new = self._configured
                    break
                try:
                    new = await run_in_threadpool(self._load_promoted, store, want)
                except Exception as e:  # noqa: BLE001 - keep serving the current model
                    self.swap_error = f"cannot load promoted model {want}: {e}"
                    return False
                try:
                    latest = await run_in_threadpool(store.active)
                except FerError:
                    latest = pointer  # the store is down now: the pointer read last stands
                if latest.get("version", 0) > version:
                    pointer = latest
                    if latest.get("model_id") != want:   # moved on during the load
                        await new.batcher.stop()          # never started: frees its thread
                        continue
                await new.batcher.start()
                break
            self.swap_error = None
            self._slot = new        # one assignment: new requests pin the new slot from here
            self.pointer_version = pointer.get("version", 0)
            self.swaps += 1
            if current is not self._configured:
                current.retired = True
                if current.users == 0:
                    await current.batcher.stop()
            return True

    def _load_promoted(self, store, model_id: str) -> Slot:
        from fer_core.model import _cache_dir
        from fer_core.promotion import materialise
        folder = materialise(store, model_id, _cache_dir() / "promoted")
        rec = store.model_record(model_id)
        predictor = self._load_predictor(folder)
        return self._new_slot(predictor, model_id, rec["sha256"], "promoted")

    def pin(self) -> "ModelService":
        """A view of this service bound to the current slot (for one request)."""
        view = copy.copy(self)
        view._pinned = slot = self._slot
        slot.users += 1
        return view

    async def release(self) -> None:
        slot = self._pinned
        if slot is None:
            return
        self._pinned = None
        slot.users -= 1
        if slot.retired and slot.users == 0:
            await slot.batcher.stop()

    # ---- the model of this view ------------------------------------------------------------
    @property
    def slot(self) -> Slot | None:
        return self._pinned or self._slot

    @property
    def predictor(self):
        s = self.slot
        return None if s is None else s.predictor

    @property
    def batcher(self) -> MicroBatcher | None:
        s = self.slot
        return None if s is None else s.batcher

    @property
    def source(self) -> str | None:
        s = self.slot
        return None if s is None else s.source

    @property
    def model_sha256(self) -> str | None:
        s = self.slot
        return None if s is None or s.predictor is None else s.sha256

    @property
    def public_error(self) -> str | None:
        """The load error as clients may see it: server paths reduced to their last part."""
        if self.error is None or self.loaded:
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
        s = self.slot
        return None if s is None or s.predictor is None else s.model_id

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
            from fer_core.vision import DetectorConfig, FaceDetector
            self.detector = FaceDetector(DetectorConfig.of(self.settings))
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
            message = str(e)
            drop_frames(e)  # the half-decoded image goes now, not at the next GC pass
            raise ApiError("bad_image", message, 400) from None
        h, w = image.shape[:2]
        try:
            if not detect:
                return vision.whole_image_face(image), [[0, 0, int(w), int(h)]]
            dets = self._detect(image)
            if not len(dets):
                return np.zeros((0, 48, 48), dtype=np.uint8), []
            faces = (self.predictor.crops(image, dets) if self.predictor is not None
                     else vision.crop_faces(image, dets.boxes))
            return faces, [[int(v) for v in b] for b in dets.int_boxes]
        except FerError:
            raise
        except Exception as e:  # noqa: BLE001 - an odd image must not become a 500
            log.warning("%s: %dx%d image could not be analysed", where, w, h, exc_info=e)
            raise ApiError("cannot_analyse", f"{where}: this {w}x{h} image could not be "
                           f"analysed ({type(e).__name__}); send a photo or a face crop of "
                           "ordinary proportions", 422) from None
        finally:
            del image  # the decoded pixels go now, not when the error is collected

    async def prepare_in_thread(self, data: bytes, detect: bool, where: str = "image"):
        """:meth:`prepare` in a worker thread, at most ``prepare_limit`` at once; the other
        requests wait here holding only their bytes.

        Without this bound every face-finding request ran at once, up to the 40 threads of the
        server's thread pool (8 clients sending batches of 8 photos), each holding a decoded
        image and its temporaries while it waited for a detector or the CPU: each new peak of
        concurrent requests raised glibc's heap high-water, and what they freed stayed in it as
        holes (issue 25's soak: 41 threads, heap 110 -> 140 MB with 40 MB of it free)."""
        from starlette.concurrency import run_in_threadpool
        async with self._prepare_slots:
            return await run_in_threadpool(self.prepare, data, detect, where)

    # ---- probabilities -> response faces ---------------------------------------------------
    def describe(self, faces: np.ndarray, boxes, probs: np.ndarray, top_k: int) -> list[dict]:
        """Response faces (FerModel.describe, rounded) with a prediction id for feedback."""
        from fer_core.api.metrics import count_faces
        count_faces(len(faces))
        model_id = self.model_id
        out = []
        for face, pred in zip(faces, self.predictor.describe(probs, boxes, top_k)):
            d = pred.to_dict()
            d.pop("confidence")
            d["top_k"] = [tuple(kv) for kv in d["top_k"]]
            d["prediction_id"] = self.crops.put(face, pred.emotion, model_id)
            out.append(d)
        return out
