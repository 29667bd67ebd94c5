"""``python -m fer_core swa DATA RUN_DIR [--from-epoch A] [--to-epoch B] [--json]``.

Averages the weight snapshots a run kept (``train --swa-epochs N``), recomputes BatchNorm on the
training split and replaces ``model.keras`` if the average scores better on the val split.
"""

from __future__ import annotations

import shlex
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("swa", help="average a run's last-epoch weights (stochastic weight "
                                   "averaging) and keep the average if it is better on val")
    p.add_argument("data", help='the dataset the run was trained on ("demo", a CSV, a folder)')
    p.add_argument("run", metavar="RUN_DIR", help="run directory with swa/ weight snapshots")
    p.add_argument("--from-epoch", type=int, default=None, help="first epoch to average")
    p.add_argument("--to-epoch", type=int, default=None, help="last epoch to average")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core import data
    from fer_core.cli import emit
    from fer_core.commands.train import swa_line
    from fer_core.training import apply_swa, run_config

    def log(e):
        if not args.json:
            print(swa_line(e), file=sys.stderr)

    run_config(args.run)  # a wrong run directory is reported before the data is loaded
    command = "python -m fer_core " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ["swa"] else ""
    record = apply_swa(data.load(args.data), args.run, args.from_epoch, args.to_epoch,
                       command=command, emit=log)
    before, after = record["replaced_val_accuracy"], record["val_accuracy"]
    emit(args, record, f"model.keras replaced: val accuracy {before:.4f} -> {after:.4f}"
         if record["used"] else
         f"model.keras kept ({before:.4f}); the average scores {after:.4f}")
    return 0
