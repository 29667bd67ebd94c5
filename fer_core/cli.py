"""Command line: ``python -m fer_core COMMAND``, COMMAND one of ``info``, ``train``, ``swa``,
``evaluate``, ``calibrate``, ``predict``, ``video``, ``serve``, ``bench``, ``finetune``,
``promote``, ``rollback``.

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
            "bench", "finetune", "promote", "rollback")


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from fer_core.settings import get_settings
        args.settings = get_settings()  # every FER_* value is checked before any command runs
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
