"""API settings: a plain dataclass read from the environment (no pydantic-settings).

``FER_MODEL``          model run dir or .keras file (default: the shipped ``fer_core.DEFAULT_MODEL``)
``FER_FEEDBACK_DB``    feedback store: a SQLite file path (default ``<repo>/data/feedback.sqlite3``)
                       or a SQLAlchemy URL, ``postgresql+psycopg://user:password@host:port/db``
                       (several API instances share one PostgreSQL database)
``FER_API_KEY``        when set, ``X-API-Key`` must carry it for feedback and export
``FER_MAX_UPLOAD_MB``  request body limit in MB (default 10)
``FER_MAX_PIXELS``     decoded image limit in pixels (default 40 million: decompression bombs);
                       also how many decoded pixels the whole server holds at once (images wait
                       for their turn), which bounds decoding memory per server
``FER_MAX_REQUEST_PIXELS`` decoded pixels per request, summed over a batch (default 160 million);
                       the images past it are answered 413 ``too_many_pixels`` one by one
``FER_BATCH_WAIT_MS``  how long the micro-batcher waits for more faces (default 2 ms)
``FER_MAX_BATCH``      largest model call of the micro-batcher (default 64)
``FER_CROP_CACHE``     how many recent predictions keep their face crop for feedback (default 10000)
``FER_DETECTOR``       face detector: ``blazeface`` (default), ``blazeface-short`` or ``haar``
                       (see README "Face detectors"); for compatibility a preset name here
                       (``fast``/``accurate``/``realtime``) is read as ``FER_DETECTOR_PRESET``
``FER_DETECTOR_PRESET`` the detector's preset: ``fast`` (default: faces >= 40 px; Haar on a
                       <= 320 px copy, scale step 1.2), ``accurate`` (= ``photo``, the app's
                       photo settings) or ``realtime`` (the webcam preset)
``FER_TTA``            ``1``/``true``: average each face with its mirror image (flip test-time
                       augmentation: -0.2 to +1.4 points of PublicTest accuracy for the committed
                       models, -0.2 for the shipped one; twice the classification time);
                       ``0``/``false`` (default): single pass
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from fer_core import DATA_DIR, DEFAULT_MODEL
from fer_core.errors import FerError


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _flag(env: dict, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise FerError(f"expected 1/true/yes/on or 0/false/no/off, got {env[name]!r}", where=name)


def _num(env: dict, name: str, default, kind=float, minimum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise FerError(f"expected a {kind.__name__}, got {raw!r}", where=name) from None
    if not math.isfinite(value):
        raise FerError(f"expected a finite number, got {raw!r}", where=name)
    if minimum is not None and value < minimum:
        raise FerError(f"must be >= {minimum}, got {raw!r}", where=name)
    return value


def _feedback_db(raw: str | None) -> Path | str:
    """A path (SQLite) or a database URL, checked now; errors never repeat the value."""
    if not raw or not raw.strip():
        return DATA_DIR / "feedback.sqlite3"
    raw = raw.strip()
    if "://" not in raw:
        return Path(raw).expanduser()
    from fer_core.api.feedback_store import store_url
    store_url(raw)
    return raw


def _preset(env: dict) -> str:
    old = (env.get("FER_DETECTOR") or "").strip().lower()
    if old in ("fast", "accurate", "realtime", "photo", "video"):  # the old meaning
        return old
    return (env.get("FER_DETECTOR_PRESET") or "fast").strip().lower()


def _detector_name(env: dict) -> str | None:
    name = (env.get("FER_DETECTOR") or "").strip().lower()
    if name in ("fast", "accurate", "realtime", "photo", "video"):
        return None
    return name or None


@dataclass(frozen=True)
class Settings:
    model: str | None = None                  # None = fer_core.DEFAULT_MODEL
    # a path (SQLite) or a database URL; kept out of repr() as a URL may hold a password
    feedback_db: Path | str = field(default_factory=lambda: DATA_DIR / "feedback.sqlite3",
                                    repr=False)
    api_key: str | None = None
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_request_pixels: int = 160_000_000
    batch_wait_ms: float = 2.0
    max_batch: int = 64
    crop_cache: int = 10_000
    detector: str = "fast"          # the preset (FER_DETECTOR_PRESET)
    detector_name: str | None = None  # the detector (FER_DETECTOR); None: the default
    tta: bool = False                         # flip test-time augmentation (FER_TTA)
    load_model: bool = True                   # False: start without a model (tests, docs)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def model_path(self) -> Path:
        return Path(self.model).expanduser() if self.model else DEFAULT_MODEL

    def detector_config(self):
        """The :class:`fer_core.vision.DetectorConfig` of ``detector_preset`` for
        ``detector_name``."""
        from fer_core.detectors import check_name
        from fer_core.vision import PRESETS, DetectorConfig
        name = {"accurate": "photo"}.get(self.detector, self.detector)
        if name not in PRESETS:
            raise FerError(f"unknown detector preset {self.detector!r}; expected one of "
                           f"{sorted(set(PRESETS) | {'accurate'})}", where="FER_DETECTOR_PRESET")
        kind = check_name(self.detector_name, where="FER_DETECTOR") if self.detector_name else None
        return DetectorConfig.preset(name, kind)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        env = dict(os.environ if environ is None else environ)
        s = cls(
            model=env.get("FER_MODEL") or None,
            feedback_db=_feedback_db(env.get("FER_FEEDBACK_DB")),
            api_key=env.get("FER_API_KEY") or None,
            max_upload_mb=_num(env, "FER_MAX_UPLOAD_MB", 10.0, float, 0.001),
            max_pixels=_num(env, "FER_MAX_PIXELS", 40_000_000, int, 48 * 48),
            max_request_pixels=_num(env, "FER_MAX_REQUEST_PIXELS", 160_000_000, int, 48 * 48),
            batch_wait_ms=_num(env, "FER_BATCH_WAIT_MS", 2.0, float, 0.0),
            max_batch=_num(env, "FER_MAX_BATCH", 64, int, 1),
            crop_cache=_num(env, "FER_CROP_CACHE", 10_000, int, 1),
            detector=_preset(env),
            detector_name=_detector_name(env),
            tta=_flag(env, "FER_TTA", False),
        )
        s.detector_config()  # unknown preset -> FerError now
        if overrides:
            s = replace(s, **overrides)
            s.detector_config()
        return s
