"""One settings object for every ``FER_*`` environment variable (pydantic-settings).

:class:`Settings` reads the environment once, validates every value and refuses a bad one with
one :class:`~fer_core.errors.FerError` line per variable, naming it, what it got and what it
expects (secrets and database URLs are never repeated). Entry points validate at start:
``python -m fer_core`` (every command, ``serve`` included) and the Streamlit app exit or stop
with that message instead of failing later inside a request.

How the rest of the code gets it:

- :func:`get_settings` -- the process's settings, built from ``os.environ`` and validated on
  first use; rebuilt only when a ``FER_*`` variable changes (tests use ``monkeypatch.setenv``).
  Library modules call it for their defaults (``runs.runs_dir()``, the caches, the app).
- ``fer_core.api.app.create_app(settings)`` takes one explicitly (default: :func:`get_settings`).
- ``Settings.from_env(environ, **overrides)`` builds one from a mapping (tests, tools);
  ``settings.with_(**changes)`` returns a validated copy; ``settings.to_env()`` gives the
  ``FER_*`` variables that rebuild it in a child process (``serve --workers``, jobs).
- Environment plumbing that is not a ``FER_*`` setting also lives here: the defaults for the
  native stacks (:data:`ENV_DEFAULTS`, applied once when ``fer_core`` is imported),
  :func:`child_env` for subprocesses, :func:`tf_config` and :func:`take_env`.

Where the user folders are (:func:`layout`): in a source checkout (``pyproject.toml`` beside the
``fer_core`` package) today's layout -- runs in ``models/``, the feedback DB and the demo set in
``data/``, uploads in ``<tmp>/fer-studio-uploads``, the cache in ``~/.cache/fer-studio``; when
installed as a package, the platformdirs user folders of ``fer-studio``. Each has its own
variable (``FER_RUNS_DIR``, ``FER_FEEDBACK_DB``, ``FER_DEMO_DIR``, ``FER_UPLOAD_DIR``,
``FER_CACHE_DIR``).

Adding a setting is a one-place change: add one annotated field to :class:`Settings`::

    poll_seconds: Annotated[float, Env("how often X is polled, s", minimum=0.1)] = 5.0

The variable is ``FER_`` + the field name in capitals (``FER_POLL_SECONDS``). Its type picks the
parser (``int``/``float``: finite numbers, ``>= minimum``; ``bool``: 1/true/yes/on or
0/false/no/off; ``Path``: ``~`` expanded; ``str | None``: empty means unset); ``Env(...,
parse=func)`` gives a parser of its own (``func(raw) -> value``, raising ``ValueError`` with
"expected ..., got ..."). ``choices=(...)`` restricts a string. The README's settings table is
generated from these fields (``python -m fer_core.settings``), and tests/test_settings.py fails
when the two differ. A field without ``Env`` is not read from the environment (``load_model``).
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from fer_core.errors import FerError

APP_NAME = "fer-studio"
PREFIX = "FER_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

# Environment defaults for the native stacks, set once (fer_core/__init__.py) before anything
# can import TensorFlow or Keras. A value already in the environment wins.
ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}


def env_default(name: str, value: str) -> str:
    """Set a native (non-``FER_*``) environment default for this process and the processes it
    starts, unless already set (an operator's value wins); the value in effect."""
    return os.environ.setdefault(name, value)


def apply_env_defaults() -> None:
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


# --------------------------------------------------------------------------- user folders

def package_root() -> Path:
    """The folder holding the ``fer_core`` package (the repo root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def in_checkout(root: Path | None = None) -> bool:
    """True in a source checkout: ``pyproject.toml`` and the ``fer_core`` package side by side
    at the root (an installed package sits in site-packages, which has no pyproject.toml; an
    editable install counts as a checkout)."""
    root = package_root() if root is None else Path(root)
    return (root / "pyproject.toml").is_file() and (root / "fer_core" / "__init__.py").is_file()


@dataclass(frozen=True)
class Layout:
    """Default user folders (each one overridable by its ``FER_*`` variable)."""
    kind: str            # "checkout" | "installed"
    runs_dir: Path
    feedback_db: Path
    demo_dir: Path
    upload_dir: Path
    cache_dir: Path


def layout(root: Path | None = None, checkout: bool | None = None) -> Layout:
    root = package_root() if root is None else Path(root)
    if in_checkout(root) if checkout is None else checkout:
        return Layout("checkout", runs_dir=root / "models",
                      feedback_db=root / "data" / "feedback.sqlite3",
                      demo_dir=root / "data" / "demo",
                      upload_dir=Path(tempfile.gettempdir()) / "fer-studio-uploads",
                      cache_dir=Path.home() / ".cache" / APP_NAME)
    import platformdirs
    data = platformdirs.user_data_path(APP_NAME, appauthor=False)
    cache = platformdirs.user_cache_path(APP_NAME, appauthor=False)
    return Layout("installed", runs_dir=data / "runs", feedback_db=data / "feedback.sqlite3",
                  demo_dir=data / "demo", upload_dir=cache / "uploads", cache_dir=cache)


def _default(name: str) -> Callable[[], Path]:
    return lambda: getattr(layout(), name)


# --------------------------------------------------------------------------- field parsers

class Env:
    """Field metadata: the field is the environment variable ``FER_<NAME>``.

    ``doc`` and ``default_doc`` go to the README table; ``minimum`` and ``maximum`` bound numbers;
    ``choices`` restricts strings; ``parse`` replaces the type's parser; ``secret`` keeps
    the value out of messages and ``repr``."""

    def __init__(self, doc: str, *, default_doc: str | None = None, minimum: float | None = None,
                 maximum: float | None = None, choices: tuple[str, ...] | None = None,
                 parse: Callable | None = None, secret: bool = False):
        self.doc, self.default_doc = doc, default_doc
        self.minimum, self.maximum = minimum, maximum
        self.choices, self.parse, self.secret = choices, parse, secret


def parse_number(raw: Any, kind: type, minimum: float | None, maximum: float | None = None):
    """A finite ``kind`` (int or float) in ``minimum .. maximum``; nan, inf and words are
    refused."""
    whole = "a whole number" if kind is int else "a number"
    if isinstance(raw, bool):
        raise ValueError(f"expected {whole}, got {raw!r}")
    value = raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"expected {whole}, got {raw!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw!r}")
        if kind is int:
            if not value.is_integer():
                raise ValueError(f"expected {whole}, got {raw!r}")
            value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        top = f"{int(maximum):,}" if float(maximum).is_integer() else f"{maximum:g}"
        raise ValueError(f"must be <= {top}, got {raw!r}")
    return kind(value)


def parse_flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"expected 1/true/yes/on or 0/false/no/off, got {repr(raw)}")


def parse_path(raw: Any) -> Path:
    return Path(os.path.expanduser(str(raw).strip()))


def parse_paths(raw: Any) -> tuple[Path, ...]:
    """Folders separated by ``os.pathsep`` (or a list)."""
    items = raw.split(os.pathsep) if isinstance(raw, str) else list(raw or ())
    return tuple(Path(os.path.abspath(os.path.expanduser(str(p).strip())))
                 for p in items if str(p).strip())


def parse_ice_servers(raw: Any) -> list[dict]:
    """A JSON list of objects with ``urls`` (WebRTC ICE servers)."""
    servers = raw
    if isinstance(raw, str):
        try:
            servers = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos}); expected a list "
                             'like [{"urls": ["stun:stun.example.org:3478"]}]') from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s
                                                for s in servers):
        raise ValueError('expected a JSON list of objects with "urls"')
    return servers


def parse_feedback_db(raw: Any) -> Path | str:
    """A SQLite file path or a database URL, checked now; errors never repeat a URL (it may
    hold a password). A path that is a folder cannot be opened as a database."""
    if isinstance(raw, Path) or "://" not in str(raw):
        path = raw if isinstance(raw, Path) else parse_path(raw)
        path = path.expanduser()
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a folder; expected a database file path such as "
                             f"{str(path / 'feedback.sqlite3')!r} or a "
                             "postgresql+psycopg://user@host:port/db URL")
        return path
    raw = str(raw).strip()
    from fer_core.store_url import store_url
    store_url(raw)   # FerError naming FER_FEEDBACK_DB, without the URL
    return raw


# The face detectors registered in fer_core.detectors and the presets of fer_core.vision, by
# name (tests/test_detectors.py checks that they agree; settings import neither module).
DETECTOR_NAMES = ("haar", "blazeface", "blazeface-short")
DETECTOR_PRESETS = ("photo", "realtime", "fast", "video", "accurate")  # accurate = photo


def parse_detector(raw: Any) -> str | None:
    """A registered face detector's name, or None for the default."""
    name = str(raw).strip().lower()
    if not name:
        return None
    if name not in DETECTOR_NAMES:
        raise ValueError(f"unknown face detector {str(raw)!r}; expected one of "
                         f"{list(DETECTOR_NAMES)}")
    return name


def parse_detector_preset(raw: Any) -> str:
    name = str(raw).strip().lower()
    if name not in DETECTOR_PRESETS:
        raise ValueError(f"unknown detector preset {str(raw)!r}; expected one of "
                         f"{sorted(DETECTOR_PRESETS)}")
    return name


# --------------------------------------------------------------------------- the object

_ENVIRON: contextvars.ContextVar = contextvars.ContextVar("fer_environ", default=None)


class _EnvSource(EnvSettingsSource):
    """``FER_*`` variables of ``os.environ`` (or of the mapping given to ``from_env``), raw:
    every value goes through the field's own parser (no JSON decoding of lists)."""

    def _load_env_vars(self):
        env = _ENVIRON.get()
        return parse_env_vars(os.environ if env is None else env, self.case_sensitive,
                              self.env_ignore_empty, self.env_parse_none_str)

    def get_field_value(self, field, field_name):
        if _spec(field) is None:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def prepare_field_value(self, field_name, field, value, value_is_complex):
        return value


def _spec(field) -> Env | None:
    return next((m for m in field.metadata if isinstance(m, Env)), None)


class Settings(BaseSettings):
    """Every ``FER_*`` setting, validated. Build with ``Settings()`` (the environment plus
    keyword overrides), :meth:`from_env` or :func:`get_settings`."""

    model_config = SettingsConfigDict(frozen=True, env_prefix=PREFIX, env_ignore_empty=True,
                              extra="forbid", arbitrary_types_allowed=True)

    # ---- models and user folders
    model: Annotated[str | None, Env(
        "the default model (run id, run dir or `.keras`) for the app, CLI, API and jobs "
        "(resolved by `fer_core.resolve`)",
        default_doc="the shipped model")] = None
    runs_dir: Annotated[Path, Env(
        "where training runs are written and listed",
        default_doc="`models/` (checkout); the user data folder's `runs/` (installed)")] = \
        Field(default_factory=_default("runs_dir"))
    cache_dir: Annotated[Path, Env(
        "parsed-dataset and TFLite cache",
        default_doc="`~/.cache/fer-studio` (checkout); the user cache folder (installed)")] = \
        Field(default_factory=_default("cache_dir"))
    upload_dir: Annotated[Path, Env(
        "where the app keeps uploaded dataset files",
        default_doc="`<tmp>/fer-studio-uploads` (checkout); the user cache folder's "
                    "`uploads/` (installed)")] = Field(default_factory=_default("upload_dir"))
    demo_dir: Annotated[Path, Env(
        "where the synthetic demo set is generated and read",
        default_doc="`data/demo` (checkout); the user data folder's `demo/` (installed)")] = \
        Field(default_factory=_default("demo_dir"))
    tflite_threads: Annotated[int, Env("threads per inference interpreter", minimum=1)] = 2
    native_logs: Annotated[bool, Env(
        "`1`: keep TensorFlow's native start-up lines on stderr (CLI and app console)",
        default_doc="off (filtered)")] = False

    # ---- the app
    data: Annotated[str | None, Env(
        "the dataset the app opens on (also offered in the Dataset Explorer's picker)",
        default_doc="none (synthetic demo)")] = None
    data_roots: Annotated[tuple[Path, ...], Env(
        "more folders whose files may be typed as a dataset path in the app (separated by `:`, "
        "`;` on Windows)", default_doc="none (`data/`, uploads and `FER_DATA` only)",
        parse=parse_paths)] = ()
    ice_servers: Annotated[list, Env(
        "WebRTC ICE servers for the Webcam page (JSON list of objects with `urls`)",
        default_doc="none", parse=parse_ice_servers)] = Field(default_factory=list)

    # ---- the REST API
    feedback_db: Annotated[Path | str, Env(
        "feedback store of the API: a file path (SQLite, WAL mode: one machine, any number of "
        "processes) or a SQLAlchemy URL `postgresql+psycopg://user:password@host:5432/db` "
        "(PostgreSQL: several API instances on several hosts). The schema is created or "
        "upgraded at start-up; the password never shows in logs, `/v1/health` or errors",
        default_doc="`data/feedback.sqlite3` (checkout); the user data folder (installed)",
        parse=parse_feedback_db, secret=True)] = \
        Field(default_factory=_default("feedback_db"))
    api_key: Annotated[str | None, Env(
        "key required (`X-API-Key`) for feedback, export, promotion and rollback (CLI: "
        "`--api-key`; Models page: a key field)", default_doc="none",
        secret=True)] = None
    max_upload_mb: Annotated[float, Env("API request body limit, MB", minimum=0.001)] = 10.0
    max_pixels: Annotated[int, Env(
        "API: decoded pixels per image, and the decoded pixels the whole server holds at once",
        minimum=48 * 48)] = 40_000_000
    decode_budget_dir: Annotated[Path | None, Env(
        "API: a folder through which processes share the decoded-pixel budget "
        "(`FER_MAX_PIXELS`): `serve --workers N` makes one for its workers; set it to share "
        "one budget between several servers on one host",
        default_doc="none (one process: in memory; `serve --workers N`: a temporary "
                    "folder)")] = None
    max_request_pixels: Annotated[int, Env(
        "API: decoded pixels per request, summed over a batch (images past it get 413 "
        "`too_many_pixels`)", minimum=48 * 48)] = 160_000_000
    batch_wait_ms: Annotated[float, Env("API micro-batching window, ms", minimum=0.0)] = 2.0
    max_batch: Annotated[int, Env("API micro-batching: largest model call", minimum=1)] = 16
    crop_cache: Annotated[int, Env(
        "API: how many recent predictions keep their face crop for feedback (48×48 bytes "
        "each, allocated when the server starts)", minimum=1, maximum=1_000_000)] = 10_000
    detector: Annotated[str | None, Env(
        "face detector of the API, its video jobs and the app's pages: `blazeface`, "
        "`blazeface-short` or `haar` (see \"Face detectors\")",
        default_doc="`blazeface`",
        parse=parse_detector)] = None
    detector_preset: Annotated[str, Env(
        "API face-detector preset: `fast`, `accurate` (the photo preset), `realtime`",
        parse=parse_detector_preset)] = "fast"
    tta: Annotated[bool, Env(
        "API: average each face with its mirror image (flip TTA: -0.2 to +1.4 points of "
        "PublicTest accuracy for the committed models, -0.2 for the shipped one; twice the "
        "classification time)", default_doc="off")] = False
    video_dir: Annotated[Path, Env(
        "API: where video uploads and their results live",
        default_doc="`<tmp>/fer-api-videos`")] = \
        Field(default_factory=lambda: Path(tempfile.gettempdir()) / "fer-api-videos")
    video_max_mb: Annotated[float, Env(
        "API: largest video upload, MB (replaces `FER_MAX_UPLOAD_MB` on that route)",
        minimum=0.001)] = 200.0
    video_max_seconds: Annotated[float, Env("API: longest video accepted, s",
                                            minimum=0.1)] = 600.0
    video_max_jobs: Annotated[int, Env("API: video jobs running at once (more get 429)",
                                       minimum=1)] = 1
    video_ttl_hours: Annotated[float, Env(
        "API: finished video jobs and their files are deleted after this, h",
        minimum=0.0)] = 24.0
    model_poll_s: Annotated[float, Env(
        "API: how often each instance reads the store's active-model pointer, s: a promotion or "
        "rollback reaches every instance within this plus the model's load time; 0 = never",
        minimum=0.0)] = 2.0
    finetune_replay: Annotated[float, Env(
        "fine-tuning from feedback: replay faces of the original training data per feedback "
        "face (see `fer_core.finetune`)", minimum=0.0)] = 8.0

    data_max_mb: Annotated[float, Env(
        "largest uncompressed size of a dataset file, MB (CSV, or the CSV inside a `.gz`/`.zip`; "
        "a zip's declared size is checked before inflating); past it, and for any CSV line over "
        "64 KB (a FER row is ~9 KB), loading stops with a clear error in the app, the CLI and "
        "`fer_core.data.load`", minimum=0.001)] = 1024.0

    # ---- not from the environment
    load_model: bool = True   # False: the API starts without a model (tests, docs)

    # ---------------------------------------------------------------- construction
    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise SettingsError.from_validation(e) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return init_settings, _EnvSource(settings_cls)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        token = _ENVIRON.set(None if environ is None else dict(environ))
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    def with_(self, **changes) -> "Settings":
        """A validated copy with ``changes`` (field names)."""
        values = {n: getattr(self, n) for n in type(self).model_fields}
        return type(self).from_env({}, **{**values, **changes})

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, raw, info):
        field = cls.model_fields[info.field_name]
        spec = _spec(field)
        if spec is None:
            return raw
        if isinstance(raw, str) and not raw.strip():
            return field.get_default(call_default_factory=True)
        if raw is None:
            return None
        if spec.parse is not None:
            return spec.parse(raw)
        kind = _base_type(field.annotation)
        if kind is bool:
            return parse_flag(raw)
        if kind in (int, float):
            return parse_number(raw, kind, spec.minimum, spec.maximum)
        if kind is Path:
            return parse_path(raw)
        value = str(raw).strip()
        if spec.choices and value not in spec.choices:
            raise ValueError(f"expected one of {list(spec.choices)}, got {repr(raw)}")
        return value

    def __repr_args__(self):
        """``repr`` without secrets (an API key, a database URL: it may hold a password)."""
        fields = type(self).model_fields
        for name, value in super().__repr_args__():
            spec = _spec(fields[name]) if name in fields else None
            secret = spec is not None and spec.secret and isinstance(value, str) and value
            yield name, ("***" if secret else value)

    # ---------------------------------------------------------------- derived values
    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def video_max_bytes(self) -> int:
        return int(self.video_max_mb * 1024 * 1024)

    def to_env(self) -> dict[str, str]:
        """``FER_*`` variables that rebuild these settings in another process."""
        out = {}
        for name, field in type(self).model_fields.items():
            if _spec(field) is None:
                continue
            value = getattr(self, name)
            if value is None or value == () or value == []:
                continue
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, tuple):
                text = os.pathsep.join(str(p) for p in value)
            elif isinstance(value, list):
                text = json.dumps(value)
            else:
                text = str(value)
            out[env_name(name)] = text
        return out


def _base_type(annotation):
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def env_fields() -> dict[str, tuple[str, Env, Any]]:
    """field name -> (variable, :class:`Env` spec, FieldInfo) for every environment setting."""
    return {n: (env_name(n), _spec(f), f) for n, f in Settings.model_fields.items()
            if _spec(f) is not None}


class SettingsError(FerError):
    """Bad ``FER_*`` values: one line per variable (``FER_X: expected ..., got ...``)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        where, message = problems[0]
        super().__init__(message, where=where)
        self.args = ("\n".join(f"{w}: {m}" for w, m in problems),)

    def __str__(self) -> str:
        return self.args[0]

    @classmethod
    def from_validation(cls, e: ValidationError) -> "SettingsError":
        fields = Settings.model_fields
        problems = []
        for err in e.errors(include_url=False, include_input=False):
            name = str(err["loc"][0]) if err.get("loc") else "settings"
            spec = _spec(fields[name]) if name in fields else None
            where = env_name(name) if spec is not None else name
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, FerError):  # already names its variable
                message = str(cause).split(": ", 1)[-1] if cause.where else str(cause)
            elif isinstance(cause, Exception):
                message = str(cause)
            elif err.get("type") == "extra_forbidden":
                message = "not a setting"
            else:
                message = err.get("msg", "invalid value")
            problems.append((where, message))
        return cls(problems)


# --------------------------------------------------------------------------- the process's

_current: tuple[tuple, Settings] | None = None


def _env_key() -> tuple:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))


def get_settings() -> Settings:
    """The settings of this process, from ``os.environ`` (validated once per distinct set of
    ``FER_*`` values). Raises :class:`SettingsError` (a FerError) on a bad value."""
    global _current
    key = _env_key()
    cached = _current
    if cached is not None and cached[0] == key:
        return cached[1]
    settings = Settings()
    _current = (key, settings)
    return settings


def export_env(settings: Settings) -> None:
    """Put ``settings`` into this process's environment, so that processes started from it
    (uvicorn workers, jobs) rebuild the same settings."""
    os.environ.update(settings.to_env())


def export_metrics_dir(path: Path | str) -> None:
    """Have the processes started from this one (``serve --workers N``) keep their Prometheus
    series in ``path`` (prometheus-client's multi-process mode, chosen when the library is
    imported), so that any worker's ``/metrics`` adds up all of them."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


# --------------------------------------------------------------------------- env plumbing

def child_env(extra: dict[str, str] | None = None, pythonpath: Path | str | None = None) -> dict:
    """The environment for a child process: this one's (``FER_*`` settings and
    :data:`ENV_DEFAULTS` included) plus ``extra``; ``pythonpath`` goes first on PYTHONPATH."""
    env = {**ENV_DEFAULTS, **os.environ, **(extra or {})}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), os.environ.get("PYTHONPATH")) if p)
    return env


def take_env(name: str) -> str | None:
    """Remove ``name`` from this process's environment and return its value (a value meant
    for this process only, such as an inherited file descriptor)."""
    return os.environ.pop(name, None)


def tf_config() -> str | None:
    """``TF_CONFIG`` (TensorFlow's multi-worker cluster description), or None."""
    return os.environ.get("TF_CONFIG") or None


# --------------------------------------------------------------------------- README table

def markdown_table() -> str:
    """The README's settings table, generated from :class:`Settings`."""
    rows = ["| Variable | What it sets | Default |", "| --- | --- | --- |"]
    for name, (var, spec, field) in env_fields().items():
        if spec.default_doc is not None:
            default = spec.default_doc
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
        rows.append(f"| `{var}` | {spec.doc} | {default} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
