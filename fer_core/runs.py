"""Run directories: ``<runs_dir>/<run-id>/`` holding one training run.

A run directory contains ``model.keras`` (best model by val accuracy, no optimizer state),
``last.keras`` (latest epoch with optimizer state, for resuming; may be deleted to save space),
``config.json`` (the :class:`~fer_core.training.TrainConfig`), ``history.jsonl`` (one row per
epoch), ``metrics.json`` (summary, written and read only through :func:`write_metrics` and
:func:`read_metrics`, with a ``schema_version``), ``labels.json`` (label names = model output
order), ``state.json`` (resume state) and ``model_card.md``. A run trained as a job also holds
the job's files (``job.json``, ``job_state.json``, ``events.jsonl``, ``job.log``; see
:mod:`fer_core.jobs`).

Run ids are readable, ``YYYYmmdd-HHMMSS-<arch>``, and validated against :data:`RUN_ID_RE` (no
slashes, no ``..``), so a user-supplied id can never point outside :func:`runs_dir`. Every
write is atomic (temp file in the same folder + ``os.replace``).

One writer at a time per run directory: every writer (training, new or resumed, from the CLI or
an app job; fine-tuning; weight averaging; ``calibrate``; ``export`` into the run; rename and
delete) holds :func:`run_lock`, an exclusive ``flock``
on ``RUN_DIR/.run.lock``, with the holder (pid, host, what, since when) in
``RUN_DIR/.run-holder.json``. A second writer gets a :class:`FerError` (409) naming the holder.
The kernel drops the lock when its process ends in any way (``kill -9`` included), so the next
writer takes it over and overwrites the stale holder file. An app job that writes a run
(:data:`fer_core.jobs.RUN_WRITERS`) has the lock taken by its starter before any job file is
written, and handed to the child process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fer_core import atomic
from fer_core.atomic import json_default, read_json
from fer_core.errors import FerError
from fer_core.model_files import MODEL_FILE, load_keras, read_labels
# run ids are names for places on disk: the one resolver owns them (re-exported here)
from fer_core.resolve import RUN_ID_RE, resolve_model, run_path, validate_run_id  # noqa: F401
from fer_core.settings import get_settings

METRICS_FILE = "metrics.json"
METRICS_SCHEMA = 1  # the version of metrics.json this code writes and reads
LAST_FILE = "last.keras"


def runs_dir() -> Path:
    """Where runs live: ``FER_RUNS_DIR``, else ``<repo>/models`` (checkout) or the user data
    folder (installed); see :mod:`fer_core.settings`."""
    return get_settings().runs_dir


def new_run_id(arch: str, when: float | None = None) -> str:
    """A fresh readable id ``YYYYmmdd-HHMMSS-<arch>`` (suffix -2, -3 ... if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    safe_arch = re.sub(r"[^A-Za-z0-9_]", "_", str(arch))[:40] or "model"
    base = validate_run_id(f"{stamp}-{safe_arch}")
    run_id, n = base, 1
    while (runs_dir() / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


# ----------------------------------------------------------------------------- writer lock

RUN_LOCK, RUN_HOLDER = ".run.lock", ".run-holder.json"
_HELD: dict[tuple[str, int], list] = {}  # (run dir, thread) -> [fd, depth]: re-entrant per thread
_HELD_LOCK = threading.Lock()


def _holder_text(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / RUN_HOLDER).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h["since"])))
        return f"pid {int(h['pid'])} on {h['host']} ({h['what']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (one reading it, or a writer that has not named itself yet)"


def take_run_lock(run_dir) -> int:
    """The run directory's writer lock as an open descriptor holding the ``flock`` (the folder
    is created if missing), for a process that hands it to a child (:mod:`fer_core.jobs`);
    FerError (409) naming the holder when another writer has it. Nothing else is written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FerError(f"the run is being written by {_holder_text(run_dir)}; wait until "
                       "it ends or stop it first", where=str(run_dir), status=409) from None
    return fd


def write_holder(run_dir, what: str, pid: int | None = None) -> None:
    """Name the lock's holder (``pid``, default this process) in ``RUN_DIR/.run-holder.json``."""
    atomic_write_json(Path(run_dir) / RUN_HOLDER, {"pid": pid or os.getpid(),
                                                   "host": socket.gethostname(),
                                                   "what": what, "since": time.time()})


@contextlib.contextmanager
def run_lock(run_dir, what: str, *, inherited_fd: int | None = None):
    """Hold the run directory's writer lock for the ``with`` block (created if missing).

    FerError (409) naming the holder when another process (or thread) writes the run. Re-entrant
    within one thread, so a command may take it early and the training it calls again.
    ``inherited_fd``: the lock taken by the parent process (:func:`take_run_lock`) and passed
    down; this process holds it from here on."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    key = (str(run_dir.resolve()), threading.get_ident())
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is None:
        fd = take_run_lock(run_dir) if inherited_fd is None else inherited_fd
        write_holder(run_dir, what)
        with _HELD_LOCK:
            _HELD[key] = held = [fd, 1]
    try:
        yield run_dir
    finally:
        with _HELD_LOCK:
            held[1] -= 1
            last = held[1] == 0
            if last:
                del _HELD[key]
        if last:
            (run_dir / RUN_HOLDER).unlink(missing_ok=True)
            if created and [p.name for p in run_dir.iterdir()] == [RUN_LOCK]:
                (run_dir / RUN_LOCK).unlink()  # a refused start leaves nothing behind
                run_dir.rmdir()
            os.close(held[0])  # releases the flock


@contextlib.contextmanager
def run_read_lock(run_dir, what: str):
    """A reader's share of the run directory's lock for the ``with`` block: readers do not
    exclude each other, writers (:func:`run_lock`) wait for none of them but are refused while
    one reads, and a reader is refused (FerError 409 naming the holder, ``what`` saying what
    waits) while a writer holds the run, so what it reads comes from one state of the run.
    Within a thread that holds the writer lock it is a no-op. A folder where the lock file
    cannot be opened (read-only, e.g. an installed package) is read without it."""
    run_dir = Path(run_dir)
    with _HELD_LOCK:
        own = (str(run_dir.resolve()), threading.get_ident()) in _HELD
    fd = None
    if not own:
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                fd = os.open(run_dir / RUN_LOCK, flags, 0o644)
                break
            except OSError:
                continue
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FerError(f"the run is being written by {_holder_text(run_dir)}; {what} "
                               "it when that ends", where=str(run_dir), status=409) from None
        yield run_dir
    finally:
        if fd is not None:
            os.close(fd)


def model_read_lock(model_path, what: str):
    """:func:`run_read_lock` of the run directory a model lives in; nothing for a loose .keras
    file (as :func:`model_lock`)."""
    from fer_core.model_files import model_file
    f = model_file(model_path)
    if f.name == MODEL_FILE and f.parent.is_dir():
        return run_read_lock(f.parent, what)
    return contextlib.nullcontext()


def model_lock(model_path, what: str):
    """The writer lock of the run directory a model lives in (:func:`run_lock`), for a writer
    that adds files beside a model (``calibrate``, ``export``); a loose .keras file is no run,
    so nothing is locked for it."""
    from fer_core.model_files import model_file
    f = model_file(model_path)
    return run_lock(f.parent, what) if f.name == MODEL_FILE else contextlib.nullcontext()


# ----------------------------------------------------------------------------- atomic writes

def atomic_write_text(path, text: str) -> None:
    atomic.write_text(path, text)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def append_jsonl(path, row: dict) -> None:
    """Append one JSON line (rewrites the file atomically so a crash never leaves half a row)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + json.dumps(row, default=json_default) + "\n")


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from an old writer; skip it
    return rows


def save_model_atomic(model, path, include_optimizer: bool = True) -> Path:
    """Save ``model`` as a .keras file atomically. Without ``include_optimizer`` an uncompiled
    copy with the same weights is saved (about 3x smaller with Adam)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path, suffix=".keras") as tmp:
        to_save = model
        if not include_optimizer and getattr(model, "optimizer", None) is not None:
            # (keras.models.clone_model re-compiles the copy with the same optimizer)
            to_save = model.__class__.from_config(model.get_config())
            to_save.set_weights(model.get_weights())
        to_save.save(tmp)
    return path


# ----------------------------------------------------------------------------- loading

def has_model(path) -> bool:
    """True when ``path`` is a .keras file or a run directory that holds its model.keras."""
    p = Path(path)
    return p.is_file() if p.suffix == ".keras" else (p / MODEL_FILE).is_file()


def load_model(path, compile: bool = False):
    """The keras.Model of a run dir, .keras file or run id (:func:`fer_core.resolve.
    resolve_model`; read by :func:`fer_core.model_files.load_keras`)."""
    return load_keras(resolve_model(path), compile=compile)


def write_metrics(run_dir, metrics: dict) -> dict:
    """Write a run's ``metrics.json`` (atomically, stamped with :data:`METRICS_SCHEMA`);
    returns what was written."""
    metrics = {"schema_version": METRICS_SCHEMA,
               **{k: v for k, v in metrics.items() if k != "schema_version"}}
    atomic_write_json(Path(run_dir) / METRICS_FILE, metrics)
    return metrics


def read_metrics(run_dir) -> dict:
    """A run's ``metrics.json`` ({} when there is none). A file of another schema version,
    or one that is not a JSON object, raises :class:`FerError` naming it."""
    path = Path(run_dir) / METRICS_FILE
    metrics = read_json(path, {})
    if not isinstance(metrics, dict):
        raise FerError("expected a JSON object", where=str(path))
    version = metrics.get("schema_version", METRICS_SCHEMA)
    if version != METRICS_SCHEMA:
        raise FerError(f"metrics schema version {version!r}; this version of FER Studio reads "
                       f"version {METRICS_SCHEMA}", where=str(path))
    return metrics


@dataclass
class Run:
    """A run directory read from disk."""

    path: Path
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    card: str = ""

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def has_model(self) -> bool:
        return self.model_path.exists()

    def load_model(self):
        return load_model(self.path)


def load_run(run) -> Run:
    """Read a run (id or path). A missing directory raises :class:`FerError`."""
    p = run_path(run)
    if not p.is_dir():
        raise FerError("no such run directory", where=str(p), status=404)
    card = p / "model_card.md"
    return Run(path=p, config=read_json(p / "config.json", {}),
               history=read_jsonl(p / "history.jsonl"),
               metrics=read_metrics(p),
               labels=list(read_labels(p)[0] or ()),
               card=card.read_text(encoding="utf-8") if card.exists() else "")


def list_runs(root=None) -> list[Run]:
    """Runs in ``root`` (default :func:`runs_dir`), newest first; folders that are not runs
    (no config.json) are ignored."""
    root = Path(root) if root else runs_dir()
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and RUN_ID_RE.match(p.name) and (p / "config.json").exists():
            try:
                out.append(load_run(p))
            except FerError:
                continue
    out.sort(key=lambda r: (r.path / "config.json").stat().st_mtime, reverse=True)
    return out


def delete_run(run) -> None:
    p = run_path(run)
    if not (p / "config.json").exists():
        raise FerError("not a run directory (no config.json); refusing to delete",
                       where=str(p), status=404)
    with run_lock(p, "delete"):
        shutil.rmtree(p)


def rename_run(run, new_id: str) -> Path:
    p = run_path(run)
    validate_run_id(new_id)
    if not p.is_dir():
        raise FerError("no such run directory", where=str(p), status=404)
    target = p.parent / new_id
    if target.exists():
        raise FerError(f"a run named {new_id!r} already exists", where="run_id", status=409)
    with run_lock(p, "rename"):
        os.replace(p, target)
    return target


# ----------------------------------------------------------------------------- model card

def hardware() -> dict:
    """CPU model, core count, TF/Keras versions, GPUs (for the model card)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        import keras
        import tensorflow as tf
        info.update(tensorflow=tf.__version__, keras=keras.__version__,
                    gpus=len(tf.config.list_physical_devices("GPU")))
    except ImportError:  # pragma: no cover
        pass
    return info


def machines_of(metrics: dict) -> list[dict]:
    """The machines a run trained on, in the order first used: a run resumed elsewhere spans
    several."""
    return list(metrics.get("machines") or [])


def with_machine(machines: list[dict], hw: dict) -> list[dict]:
    """``machines`` plus ``hw`` unless the same CPU, core count and TF/Keras are listed."""
    def key(m):
        return tuple(m.get(k) for k in ("cpu", "cores", "gpus", "tensorflow", "keras"))
    return machines if any(key(m) == key(hw) for m in machines) else [*machines, hw]


FER2013_LIMITS = (
    "- FER2013 faces were collected by web image search: 48x48 grey crops of mostly adult, "
    "light-skinned, frontal faces; children, older people, darker skin tones, profiles, "
    "glasses and occlusions are under-represented, so expect lower accuracy there.",
    "- Labels are single crowd judgements of posed and spontaneous expressions; human "
    "agreement on FER2013 is about 65 %, and disgust (about 1.5 % of faces) and fear are "
    "the least reliable classes.",
    "- The set holds blank or non-face images and exact duplicates across Training and "
    "PublicTest (see the Dataset Explorer's flagged images), which slightly inflate "
    "validation accuracy.",
    "- An expression is not an emotion: the model labels facial configurations, not what a "
    "person feels. Do not use it for decisions about people (hiring, policing, health).",
)


def commands_of(metrics: dict) -> list[str]:
    """The commands recorded in a run's metrics."""
    return [c for c in metrics.get("commands") or [] if isinstance(c, str)]


def model_commands(path) -> list[str]:
    """The commands that trained the model at ``path`` (a run dir, or a run's model.keras /
    last.keras), from its metrics.json; [] when it is not a training run."""
    p = Path(path)
    return commands_of(read_metrics(p if p.is_dir() else p.parent))


def _recipe_lines(config: dict, metrics: dict) -> list[str]:
    """Model-card lines for the augmentation, the starting weights and any teachers."""
    aug = [name for name in ("flip",) if config.get(name)] + [
        f"{name} {config[name]}" for name in ("shift", "rotation", "zoom", "contrast",
                                              "erasing") if config.get(name)] + [
        f"{name} alpha {config[name]}" for name in ("mixup", "cutmix") if config.get(name)]
    lines = [f"- Augmentation: {', '.join(aug) if aug else 'none'}"]
    if config.get("init_from"):
        lines.append(f"- Started from the weights of `{config['init_from']}`")
    if config.get("teachers"):
        w = config.get("distill")
        lines.append(f"- Distilled from {', '.join(f'`{t}`' for t in config['teachers'])}: "
                     f"targets {1 - w:.2g} x label + {w:.2g} x the teachers' flip-averaged "
                     "prediction")
    for src in metrics.get("sources") or []:
        if src.get("commands"):
            lines.append(f"  - `{src['model']}` was trained by:")
            lines += [f"    - `{c}`" for c in src["commands"]]
    return lines


def _swa_lines(metrics: dict) -> list[str]:
    """Model-card lines for the weight average (fer_core.swa) and any tried and not kept."""
    record = metrics.get("swa")
    if not record:
        return []
    first, last = record["epochs"]
    what = ("model.keras is this average" if record["used"] else
            "not used: model.keras scores better")
    return [f"- Weight averaging (SWA) of epochs {first}-{last} ({record['n_snapshots']} "
            f"snapshots, BatchNorm recomputed on the training faces): val accuracy "
            f"{record['val_accuracy']:.4f} vs {record['replaced_val_accuracy']:.4f}; {what}",
            *[f"  - also averaged epochs {r['epochs'][0]}-{r['epochs'][1]}: val accuracy "
              f"{r['val_accuracy']:.4f}, not used" for r in metrics.get("swa_tried", [])]]


def _hardware_lines(machines: list[dict]) -> list[str]:
    lines = [f"- Trained on {len(machines)} machines in turn (the run was resumed "
             f"elsewhere):"] if len(machines) > 1 else []
    pad = "  " if len(machines) > 1 else ""
    for hw in machines:
        lines += [f"{pad}- CPU: {hw.get('cpu')} ({hw.get('cores')} cores), "
                  f"GPUs: {hw.get('gpus', 0)}",
                  f"{pad}  TensorFlow {hw.get('tensorflow')}, Keras {hw.get('keras')}, "
                  f"Python {hw.get('python')}"]
    return lines


def _calibration_lines(run_dir: Path) -> list[str]:
    """The card's Calibration section from the run's calibration.json (none when absent)."""
    try:
        rec = read_json(run_dir / "calibration.json", None)
    except FerError:
        return []
    if not isinstance(rec, dict) or not isinstance(rec.get("no_tta"), dict):
        return []
    lines = ["", "## Calibration",
             f"- Temperature scaling fitted on split '{rec.get('split')}' ({rec.get('n')} faces) "
             "and stored in `calibration.json`; every path (app, CLI, API, webcam, video) "
             "applies it."]
    for key, name in (("no_tta", "single pass"), ("tta", "flip TTA")):
        c = rec.get(key)
        if isinstance(c, dict):
            lines.append(f"- {name}: T = {c['temperature']:.3f}, expected calibration error "
                         f"{c['ece_before']:.3f} -> {c['ece_after']:.3f}, accuracy "
                         f"{c['accuracy']:.4f} (unchanged)")
    boot = rec.get("tta_bootstrap")
    if isinstance(boot, dict):
        lines.append(f"- Flip TTA minus single pass: {100 * boot['delta']:+.2f} points, "
                     f"{round(100 * boot['level'])} % paired-bootstrap interval "
                     f"[{100 * boot['lo']:+.2f}, {100 * boot['hi']:+.2f}]; TTA "
                     f"{'on' if rec.get('tta_default') else 'off'} by default")
    return lines


def write_model_card(run_dir, config: dict, metrics: dict, data: dict) -> str:
    """Write model_card.md from a run's config, metrics and data summary; returns the text."""
    run_dir = Path(run_dir)
    hw = metrics.get("hardware") or hardware()
    best = metrics.get("best_val_accuracy")
    lines = [
        f"# Model card: {run_dir.name}",
        "",
        "## Data",
        f"- Source: {data.get('source', '?')}" + (" (synthetic)" if data.get("synthetic") else ""),
        f"- Label set: {config.get('label_set')} ({', '.join(metrics.get('labels', []))})",
        f"- Train faces: {data.get('n_train', '?')}, validation faces: {data.get('n_val', '?')}",
        "",
        "## Model",
        f"- Architecture: `{config.get('arch')}` {json.dumps(config.get('arch_params') or {})}",
        f"- Parameters: {metrics.get('params', '?'):,}" if isinstance(metrics.get("params"), int)
        else f"- Parameters: {metrics.get('params', '?')}",
        f"- FLOPs per image (forward): {metrics.get('flops', '?'):,}"
        if isinstance(metrics.get("flops"), int) else "- FLOPs per image: ?",
        "- Input: raw uint8 48x48x1 grey face (rescaled inside the model)",
        "",
        "## Training",
        f"- Epochs run: {metrics.get('epochs_done', '?')} of {config.get('epochs')}"
        f" (status: {metrics.get('status', '?')})",
        f"- Batch size {config.get('batch_size')}, optimizer {config.get('optimizer')}, "
        f"lr {config.get('lr')} ({config.get('schedule')}), weight decay "
        f"{config.get('weight_decay')}, label smoothing {config.get('label_smoothing')}",
        *_recipe_lines(config, metrics),
        f"- Best val accuracy: {best:.4f} at epoch {metrics.get('best_epoch')}"
        if isinstance(best, (int, float)) else "- Best val accuracy: n/a",
        *_swa_lines(metrics),
        f"- Training time: {metrics.get('train_time_sec', 0) / 60:.1f} min",
    ]
    commands = metrics.get("commands") or []
    if len(commands) == 1:
        lines.append(f"- Command: `{commands[0]}`")
    elif commands:
        lines.append("- Commands, in order (the first run, then each resume):")
        lines += [f"  - `{c}`" for c in commands]
    lines += [f"- Note: {note}" for note in metrics.get("notes") or []]
    report = metrics.get("val_report")
    if report:
        lines += ["", "## Validation results (best model)",
                  f"- Accuracy {report['accuracy']:.4f}, top-2 {report['top2_accuracy']:.4f}, "
                  f"macro-F1 {report['macro_f1']:.4f} on {report['n']} faces", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
                  f"{c['support']} |" for name, c in report["per_class"].items()]
    lines += _calibration_lines(run_dir)
    if "fer2013" in str(data.get("source", "")).lower() and not data.get("synthetic"):
        lines += ["", "## Known limits and biases (FER2013)", *FER2013_LIMITS]
    lines += [
        "",
        "## Hardware",
        *_hardware_lines(machines_of(metrics) or [hw]),
        "",
    ]
    text = "\n".join(lines)
    atomic_write_text(run_dir / "model_card.md", text)
    return text
