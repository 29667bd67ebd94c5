"""``python -m fer_core finetune [--model BASE] [--feedback-db DB] [--data REPLAY] [--json]``.

Fine-tunes a model on the corrections in the feedback store, mixed with a replay sample of its
training data, as a job in a child process (:mod:`fer_core.finetune`); prints its progress
and, at the end, the side-by-side comparison with the base model (``comparison.json`` in the
new run). Ctrl-C stops the job cleanly; ``--resume RUN`` continues a stopped one.
"""

from __future__ import annotations

import sys
import time

from fer_core.job_events import Log, Metric
from fer_core.resolve import add_model_argument, resolve_model


def add_parser(sub) -> None:
    from fer_core import finetune as ft
    p = sub.add_parser("finetune", help="fine-tune a model on the feedback store's corrections "
                                        "(a job) and compare it with the model it started from")
    add_model_argument(p, "the model to start from")
    p.add_argument("--feedback-db", default=None,
                   help="SQLite file or postgresql+psycopg:// URL (default FER_FEEDBACK_DB or "
                        "data/feedback.sqlite3)")
    p.add_argument("--data", default="",
                   help="replay data (default: the data the model was trained on)")
    p.add_argument("--replay", type=float, default=None,
                   help=f"replay faces per feedback face (default FER_FINETUNE_REPLAY or "
                        f"{ft.DEFAULT_REPLAY:g})")
    p.add_argument("--holdout", type=float, default=ft.DEFAULT_HOLDOUT,
                   help=f"share of the feedback held out, never trained on (default "
                        f"{ft.DEFAULT_HOLDOUT})")
    p.add_argument("--mode", choices=ft.MODES, default=ft.DEFAULT_MODE,
                   help="head: retrain the classifier layer on the model's features (default; "
                        "fast, keeps the rest); full: train every layer from the model's weights")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"default {ft.DEFAULT_EPOCHS['head']} (head) or "
                        f"{ft.DEFAULT_EPOCHS['full']} (full)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"default {ft.DEFAULT_LR['head']:g} (head) or "
                        f"{ft.DEFAULT_LR['full']:g} (full)")
    p.add_argument("--seed", type=int, default=0, help="hold-out and replay draw (default 0)")
    p.add_argument("--name", default=None, help="run id (default: <time>-finetune)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue a stopped or crashed fine-tuning run")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _settings(args):
    from fer_core.api.settings import Settings
    s = Settings.from_env()
    db = args.feedback_db or s.feedback_db
    return s, db


def run(args) -> int:
    from fer_core import compare, runs
    from fer_core import finetune as ft
    from fer_core.cli import emit
    from fer_core.errors import FerError
    from fer_core.jobs import JobHandle, JobRunner

    settings, db = _settings(args)
    runner = JobRunner(runs.runs_dir())
    if args.resume:
        from fer_core.promotion import resolve_run
        run_dir = resolve_run(args.resume)
        old = JobHandle(run_dir)
        if old.kind != "finetune":
            raise FerError("not a fine-tuning run", where=f"--resume {args.resume}")
        spec = ft.resume_spec(old.spec)
    else:
        base = str(resolve_model(args.model, settings, where="--model"))
        replay = settings.finetune_replay if args.replay is None else args.replay
        spec = ft.finetune_spec(base, db, data=args.data, replay=replay, holdout=args.holdout,
                                mode=args.mode, epochs=args.epochs, lr=args.lr, seed=args.seed,
                                command=" ".join(["python -m fer_core", *sys.argv[1:]]))
        # check what can be checked before a process starts: feedback and its labels
        from fer_core.model import FerModel
        faces, labels, _ = ft.load_feedback(db)
        if not len(labels):
            raise FerError("there is no feedback to fine-tune on; send corrections to POST "
                           "/v1/feedback first", where="feedback")
        ft.feedback_labels(labels, FerModel.load(base).labels)
        ft.base_recipe(base)
        ft.replay_source(base, args.data)
        run_id = runs.validate_run_id(args.name) if args.name else runs.new_run_id("finetune")
        run_dir = runs.runs_dir() / run_id
        if run_dir.exists():
            raise FerError("a run with this id exists; choose another --name", where=run_id)
    handle = runner.start("finetune", spec, run_dir)
    result = follow(handle, quiet=args.json)
    state = handle.state()
    if state["status"] != "finished":
        raise FerError(f"the fine-tuning job {state['status']}: {state.get('error') or ''}"
                       f" (resume with --resume {run_dir.name})", where=str(run_dir))
    comparison = compare.read(run_dir)
    payload = {"run": str(run_dir), **(result or {}), "comparison": comparison}
    lines = [f"fine-tuned {run_dir.name} in {result.get('total_time_s', 0):.0f} s "
             f"({result.get('n_feedback_train')} feedback + {result.get('n_replay')} replay "
             f"faces; {result.get('n_holdout')} held out)"]
    if comparison:
        lines += compare.summary_lines(comparison)
    lines.append(f"promote it: python -m fer_core promote {run_dir.name}")
    emit(args, payload, "\n".join(lines))
    return 0


def follow(handle, quiet: bool = False) -> dict | None:
    """Print the job's epochs until it ends; Ctrl-C asks it to stop (twice: leave it)."""
    offset, asked = 0, False
    while True:
        try:
            events, offset = handle.events(offset)
            for e in events:
                if quiet:
                    continue
                if isinstance(e, Metric):
                    print(f"epoch {e.epoch}/{e.epochs}  loss {e.loss:.4f}  "
                          f"val accuracy {e.val_accuracy:.4f}", file=sys.stderr)
                elif isinstance(e, Log) and e.topic == "finetune":
                    print(f"{e.stage}...", file=sys.stderr)
                elif isinstance(e, Log) and e.stage == "unreadable":
                    print(f"skipped: {e.message}", file=sys.stderr)
            if not handle.running:
                events, offset = handle.events(offset)
                return handle.state().get("result")
            time.sleep(0.3)
        except KeyboardInterrupt:
            if asked:
                raise
            asked = True
            handle.stop()
            print("\nstopping the job after this batch (again to leave it running)...",
                  file=sys.stderr)
