"""Job events: what long work reports while it runs (training, fine-tuning, weight averaging,
video analysis), typed, with the one ETA computation and the one duration formatter.

Five kinds, keyed by ``"type"`` when written as JSON (one object per line in a job's
``events.jsonl``, see :mod:`fer_core.jobs`):

* ``progress`` (:class:`Progress`): ``done`` of ``total`` units (``unit``: batch, frame), the
  ``rate`` in units (or images) per second and ``eta_sec``. Training adds epoch, epochs, loss,
  accuracy, lr; video analysis adds ``time_s`` (the position in the video).
* ``metric`` (:class:`Metric`): one epoch's metrics (loss, accuracy, val_loss, val_accuracy,
  lr, images_per_sec, time_sec, best_val_accuracy, best_epoch) and the ETA of the rest.
* ``log`` (:class:`Log`): a stage reached: ``topic`` (train, finetune, swa, job) and ``stage``
  (start, compare, average, ...), with what the stage says as further fields.
* ``done`` (:class:`Done`): the work's final record (``status`` and, for training, metrics.json).
* ``failed`` (:class:`Failed`): the ``error`` the job ended with.

Every kind keeps further fields it is given (``e.epoch``). Lines written before these kinds
existed (types start, batch, epoch, end, compare, swa) read as the kinds they became. A line
that is not an event reads as ``Log(topic="job", stage="unreadable", message=why)``: readers
skip it with its reason, and never crash on it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fer_core.atomic import json_default


def lenient(o):
    """JSON for events and job results: numpy values, paths and sets as JSON; anything else as
    text."""
    return json_default(o, fallback=str)


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict:
        return self.model_dump()

    def to_json(self) -> str:
        """One line of JSON (numpy values, paths and sets as JSON; anything else as text)."""
        return json.dumps(self.model_dump(), default=lenient)


class Progress(_Event):
    type: Literal["progress"] = "progress"
    done: int = 0
    total: int | None = None
    rate: float | None = None
    eta_sec: float | None = None
    unit: str = "item"

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


class Metric(_Event):
    type: Literal["metric"] = "metric"
    epoch: int
    epochs: int | None = None
    eta_sec: float | None = None


class Log(_Event):
    type: Literal["log"] = "log"
    stage: str
    topic: str = "job"
    message: str = ""


class Done(_Event):
    type: Literal["done"] = "done"
    status: str = "finished"


class Failed(_Event):
    type: Literal["failed"] = "failed"
    error: str


Event = Annotated[Union[Progress, Metric, Log, Done, Failed], Field(discriminator="type")]
_ADAPTER = TypeAdapter(Event)

# line types written before the typed kinds: type -> (kind, fields it gets, renamed fields)
_LEGACY = {"start": ("log", {"topic": "train", "stage": "start"}, {}),
           "batch": ("progress", {"unit": "batch"},
                     {"batch": "done", "batches": "total", "images_per_sec": "rate"}),
           "epoch": ("metric", {}, {}),
           "end": ("done", {}, {}),
           "compare": ("log", {"topic": "finetune"}, {}),
           "swa": ("log", {"topic": "swa"}, {})}


def parse(obj) -> _Event:
    """The typed event of a dict or one JSON line. FerError naming what was wrong: not JSON,
    not an object, an unknown ``type``, or a field of the wrong type."""
    from fer_core.errors import FerError

    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise FerError(f"not JSON ({e.msg} at column {e.colno})", where="event") from None
        except ValueError:  # bytes that are not UTF-8
            raise FerError("not JSON (not UTF-8 text)", where="event") from None
    if not isinstance(obj, dict):
        raise FerError(f"expected a JSON object, got {type(obj).__name__}", where="event")
    kind = obj.get("type")
    if kind in _LEGACY:
        kind, fields, renamed = _LEGACY[kind]
        obj = {**fields, **{renamed.get(k, k): v for k, v in obj.items()}, "type": kind}
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            raise FerError(f"unknown event type {str(kind)[:40]!r}; expected one of progress, "
                           "metric, log, done, failed", where="event") from None
        field = ".".join(str(p) for p in err["loc"][1:]) or "?"
        raise FerError(f"{kind} event: field {field!r}: {err['msg']}", where="event") from None


def parse_lines(data: bytes, offset: int = 0) -> list[_Event]:
    """The events of complete JSON lines; a bad line becomes a ``log`` event (stage
    "unreadable") naming its byte offset and why, so readers skip it and go on."""
    from fer_core.errors import FerError

    out, pos = [], offset
    for line in data.splitlines(keepends=True):
        if line.strip():
            try:
                out.append(parse(line))
            except FerError as e:
                out.append(Log(stage="unreadable", message=f"event at byte {pos}: {e}"))
        pos += len(line)
    return out


def eta(done: float, total: float | None, rate: float | None, then: float = 0.0) -> float | None:
    """Seconds left: ``total - done`` units at ``rate`` units per second, plus ``then`` seconds
    of work after them. None when the total or the rate is unknown."""
    if total is None or not rate or rate <= 0:
        return None
    return max(0.0, total - done) / rate + then


class Meter:
    """The rate and ETA of a sequence of progress observations ``(done, at)``: units done since
    the first observation over the time since it."""

    def __init__(self, total: float | None = None, clock=time.monotonic):
        self.total, self.clock = total, clock
        self.first: tuple[float, float] | None = None

    def update(self, done: float, at: float | None = None) -> tuple[float | None, float | None]:
        """(rate, eta_sec) after ``done`` units at time ``at`` (default now)."""
        at = self.clock() if at is None else at
        if self.first is None:
            self.first = (done, at)
        d0, t0 = self.first
        rate = (done - d0) / (at - t0) if at > t0 and done > d0 else None
        return rate, eta(done, self.total, rate)


def fmt_duration(sec: float | None, unknown: str = "–") -> str:
    """Seconds as ``m:ss`` (``1:05``), ``h:mm:ss`` from an hour (``1:02:03``), ``unknown``
    when None or not a number."""
    try:
        s = int(round(float(sec)))
    except (TypeError, ValueError, OverflowError):
        return unknown
    sign, s = ("-", -s) if s < 0 else ("", s)
    if s >= 3600:
        return f"{sign}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{sign}{s // 60}:{s % 60:02d}"
