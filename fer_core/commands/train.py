"""``python -m fer_core train DATA --arch NAME --epochs N --out RUN_DIR [--resume RUN_DIR]``.

Trains on the train split, chooses the best epoch on the val split, writes a run directory
(see :mod:`fer_core.runs`). Ctrl-C or SIGTERM stops within one batch and keeps the best model;
``--resume RUN_DIR`` continues from the run's last checkpoint (``--epochs`` may extend it).
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
import time

from fer_core.job_events import Done, Log, Metric, Progress, fmt_duration


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a run directory")
    p.add_argument("data", help='dataset: "demo", a CSV/.csv.gz/.zip or an image folder')
    p.add_argument("--arch", default=None, help="architecture (vgg, resnet, mini_xception, "
                   "mememoji); default vgg")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture parameter, value as JSON (e.g. width=48, blocks=[2,2,2])")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default=None)
    p.add_argument("--schedule", choices=("cosine", "plateau", "constant"), default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--class-weight", choices=("none", "balanced"), default=None)
    p.add_argument("--label-set", choices=("fer7", "merged6", "ferplus8"), default=None)
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    p.add_argument("--shift", type=float, default=None, help="max shift (fraction)")
    p.add_argument("--rotation", type=float, default=None, help="max rotation (degrees)")
    p.add_argument("--zoom", type=float, default=None, help="max zoom (fraction)")
    p.add_argument("--contrast", type=float, default=None, help="contrast factor")
    p.add_argument("--erasing", type=float, default=None, help="random-erasing probability")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping (0 = off)")
    p.add_argument("--swa-epochs", type=int, default=None, metavar="N",
                   help="average the weights of the last N epochs at the end (0 = off)")
    p.add_argument("--mixup", type=float, default=None, metavar="ALPHA",
                   help="MixUp of faces and targets within each batch (0 = off)")
    p.add_argument("--cutmix", type=float, default=None, metavar="ALPHA",
                   help="CutMix of faces and targets within each batch (0 = off)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from the weights of this run dir or .keras file (same "
                        "--arch/--param)")
    p.add_argument("--teacher", action="append", default=None, metavar="MODEL",
                   help="distil from this run dir or .keras file (repeat for an ensemble)")
    p.add_argument("--distill", type=float, default=None, metavar="W",
                   help="weight of the teachers' flip-averaged predictions in the targets "
                        "(0..1)")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard logs in RUN_DIR/tb")
    p.add_argument("--deterministic", action="store_true", help="enable TF op determinism")
    p.add_argument("--out", default=None, help="run directory (default models/<time>-<arch>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue this run from its last checkpoint")
    p.add_argument("--no-cache", action="store_true", help="parse the data again")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


_FIELDS = {"arch": "arch", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
           "optimizer": "optimizer", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
           "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
           "class_weight": "class_weight", "label_set": "label_set", "shift": "shift",
           "rotation": "rotation", "zoom": "zoom", "contrast": "contrast",
           "erasing": "erasing", "seed": "seed", "patience": "patience",
           "swa_epochs": "swa_epochs", "mixup": "mixup", "cutmix": "cutmix",
           "init_from": "init_from", "teacher": "teachers", "distill": "distill"}


def _config(args):
    from fer_core import runs
    from fer_core.errors import FerError
    from fer_core.training import TrainConfig

    base = {}
    if args.resume:
        cfg_path = runs.run_path(args.resume) / "config.json"
        if not cfg_path.exists():
            raise FerError("cannot resume: no config.json", where=str(cfg_path))
        base = json.loads(cfg_path.read_text())
    overrides = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a) is not None}
    if args.resume:
        ignored = sorted(set(overrides) - {"epochs", "patience", "swa_epochs"})
        if ignored:
            raise FerError("with --resume only --epochs/--patience/--swa-epochs may change; "
                           f"got {ignored}",
                           where="--resume")
    base.update(overrides)
    if args.no_flip:
        base["flip"] = False
    if args.tensorboard:
        base["tensorboard"] = True
    if args.deterministic:
        base["deterministic"] = True
    params = dict(base.get("arch_params") or {})
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FerError(f"expected KEY=VALUE, got {item!r}", where="--param")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    if params:
        if args.resume and params != (base.get("arch_params") or {}):
            raise FerError("architecture parameters cannot change on --resume", where="--param")
        base["arch_params"] = params
    return TrainConfig.from_dict(base)


class _Console:
    """A one-line progress bar on a terminal, one line per epoch otherwise (logs)."""

    def __init__(self, stream, quiet: bool):
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty()
        self.last = time.monotonic()

    def __call__(self, e) -> None:
        if self.quiet:
            return
        if isinstance(e, Log) and e.stage == "start":
            self._line(f"training {e.arch} ({e.params:,} params) on {e.n_train} faces, "
                       f"val {e.n_val}, epochs {e.initial_epoch + 1}..{e.epochs}, "
                       f"{e.batches} batches/epoch -> {e.run_dir}")
        elif isinstance(e, Progress) and not self.tty and time.monotonic() - self.last > 60:
            self.last = time.monotonic()   # logs: one line a minute
            ips = f"{e.rate:.0f}" if e.rate else "?"
            self._line(f"  epoch {e.epoch}/{e.epochs} batch {e.done}/{e.total} "
                       f"loss {e.loss:.4f} acc {e.accuracy:.4f} {ips} img/s "
                       f"ETA {fmt_duration(e.eta_sec, '?')}")
        elif isinstance(e, Progress) and self.tty and time.monotonic() - self.last > 0.2:
            self.last = time.monotonic()
            n, k = e.total, e.done
            bar = "#" * int(30 * k / n) + "-" * (30 - int(30 * k / n))
            ips = f"{e.rate:.0f} img/s" if e.rate else ""
            eta = f"ETA {fmt_duration(e.eta_sec)}" if e.eta_sec else ""
            self.stream.write(f"\repoch {e.epoch}/{e.epochs} [{bar}] {k}/{n} "
                              f"loss {e.loss:.4f} acc {e.accuracy:.4f} {ips} {eta}   ")
            self.stream.flush()
        elif isinstance(e, Metric):
            if self.tty:
                self.stream.write("\r" + " " * 110 + "\r")
            self._line(f"epoch {e.epoch}/{e.epochs} loss {e.loss:.4f} "
                       f"acc {e.accuracy:.4f} val_loss {e.val_loss:.4f} "
                       f"val_acc {e.val_accuracy:.4f} lr {e.lr:.2e} "
                       f"{e.images_per_sec:.0f} img/s {e.time_sec:.0f}s "
                       f"best {e.best_val_accuracy:.4f}@{e.best_epoch} "
                       f"ETA {fmt_duration(e.eta_sec, '?')}")
        elif isinstance(e, Log) and e.topic == "swa":
            self._line(swa_line(e))
        elif isinstance(e, Done):
            if self.tty:
                self.stream.write("\n")
            best = e.best_val_accuracy
            self._line(f"{e.status}: best val accuracy "
                       f"{'n/a' if best is None else f'{best:.4f}'} at epoch {e.best_epoch}, "
                       f"{e.train_time_sec / 60:.1f} min -> {e.run_dir}")

    def _line(self, text):
        self.stream.write(time.strftime("%H:%M:%S ") + text + "\n")
        self.stream.flush()


def swa_line(e: Log) -> str:
    """One log line for a weight-averaging event (see fer_core.swa.average_into_run)."""
    if e.stage == "average":
        return f"averaging the weights of epochs {e.epochs[0]}..{e.epochs[-1]}"
    if e.stage == "batchnorm":
        return f"recomputing BatchNorm statistics on {e.n_train} training faces"
    verdict = ("kept as model.keras" if e.used else
               "model.keras kept (it scores better)")
    return (f"weight average: val accuracy {e.val_accuracy:.4f} vs "
            f"{e.replaced_val_accuracy:.4f} before -> {verdict}")


def run(args) -> int:
    from fer_core import data, runs

    config = _config(args)
    config.validate()
    if args.resume:
        run_dir = runs.run_path(args.resume)
    elif args.out:
        run_dir = runs.run_path(args.out) if "/" in args.out else runs.runs_dir() / \
            runs.validate_run_id(args.out)
    else:
        run_dir = runs.runs_dir() / runs.new_run_id(config.arch)
    if not args.resume:  # a new run: train() takes the run's writer lock
        return _train(args, config, data.load(args.data, cache=not args.no_cache), run_dir)
    with runs.run_lock(run_dir, "train --resume"):  # a busy run is refused before the data loads
        return _train(args, config, data.load(args.data, cache=not args.no_cache), run_dir)


def _train(args, config, dataset, run_dir) -> int:
    from fer_core.cli import emit
    from fer_core.training import train

    stop = threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            print("\nstopping after this batch (again to abort)...", file=sys.stderr)
            stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    command = "python -m fer_core train " + " ".join(
        shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["train"] else ""
    try:
        result = train(dataset, config, run_dir, callbacks=[_Console(sys.stderr, args.quiet)],
                       stop_event=stop, resume=bool(args.resume), command=command)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    summary = {k: result[k] for k in ("status", "arch", "epochs", "epochs_done",
                                      "best_val_accuracy", "best_epoch", "train_time_sec",
                                      "params", "flops", "run_dir", "labels")}
    emit(args, summary, f"run: {summary['run_dir']}")
    return 0
