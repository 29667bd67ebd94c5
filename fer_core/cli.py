"""Command line: ``python -m fer_core COMMAND``, COMMAND one of ``info``, ``train``, ``swa``,
``evaluate``, ``calibrate``, ``predict``, ``video``, ``serve``, ``bench``, ``finetune``,
``promote``, ``rollback``, ``export``, ``app`` (installed, the console script ``fer-studio`` is the
same command line).

On the runtime-only install (no TensorFlow), the commands in :data:`NEEDS_TRAIN` stop with one
message naming the ``[train]`` extra.

Each command lives in ``fer_core/commands/<name>.py`` with ``add_parser(subparsers)`` (which sets
``func``) so that commands import their heavy dependencies (TensorFlow) only when they run.
A :class:`FerError` is printed on stderr with exit code 2; no user error shows a traceback. The
settings (:mod:`fer_core.settings`) are validated first, for every command, and handed to it as
``args.settings``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from fer_core.errors import FerError

COMMANDS = ("info", "train", "swa", "evaluate", "calibrate", "predict", "video", "serve",
            "bench", "finetune", "promote", "rollback", "export", "app")
# commands (and bench targets) that need TensorFlow: fer-studio[train]
NEEDS_TRAIN = {"train", "swa", "evaluate", "calibrate", "export", "finetune", "bench train",
               "bench evaluate", "bench finetune", "bench align"}


def plugins(package: str, names):
    """(name, module) for each ``package.name`` that exists (light modules: heavy imports
    happen inside their functions)."""
    for name in names:
        try:
            yield name, importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer_core",
                                     description="FER Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for _, module in plugins("fer_core.commands", COMMANDS):
        module.add_parser(sub)
    return parser


def emit(args, payload: dict, text: str | None = None) -> None:
    """Print ``payload`` as JSON with --json, else ``text`` (or pretty JSON)."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(payload, indent=None if getattr(args, "json", False) else 2))
    else:
        print(text)


def check_extra(args) -> None:
    """FerError naming the extra when the command needs TensorFlow and it is not installed."""
    name = args.command + (f" {args.target}" if getattr(args, "target", None) else "")
    if args.command in NEEDS_TRAIN or name in NEEDS_TRAIN:
        from fer_core.model import has_tensorflow, needs_train
        if not has_tensorflow():
            raise needs_train(f"`{name}`", where=name)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    try:
        from fer_core.settings import get_settings
        args.settings = get_settings()  # every FER_* value is checked before any command runs
        check_extra(args)
        return args.func(args) or 0
    except FerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0


def console() -> int:
    """The ``fer-studio`` console script: the same commands as ``python -m fer_core``."""
    from fer_core.native_logs import quiet_tensorflow_startup
    quiet_tensorflow_startup()
    return main(prog="fer-studio")
