"""``fer-studio app [--port P]``: start the Streamlit workbench.

In a checkout it is ``streamlit_app.py`` at the repo root (what ``make run`` starts); installed,
the wheel carries the app in ``fer_core/_app/`` (see setup.py). Needs ``fer-studio[app]``.
On POSIX the command becomes the Streamlit server (``exec``), so signals reach it directly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def app_dir() -> Path | None:
    """The folder holding ``streamlit_app.py``: the installed copy, else the checkout's root."""
    import fer_core
    for d in (fer_core.PACKAGE_DIR / "_app", fer_core.ROOT):
        if (d / "streamlit_app.py").is_file() and (d / "ui").is_dir():
            return d
    return None


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="start the Streamlit app (needs fer-studio[app])")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--host", default=None, help="address to listen on (default Streamlit's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core.errors import FerError

    if importlib.util.find_spec("streamlit") is None:
        raise FerError("the app needs Streamlit, which the runtime install leaves out; install "
                       "it with: pip install 'fer-studio[app]'", where="app")
    if not 0 < args.port < 65536:
        raise FerError(f"expected a port in 1..65535, got {args.port}", where="--port")
    d = app_dir()
    if d is None:
        raise FerError("the app's files (streamlit_app.py, ui/, pages/) are not installed",
                       where="app")
    cmd = [sys.executable, "-m", "streamlit", "run", str(d / "streamlit_app.py"),
           "--server.port", str(args.port), "--browser.gatherUsageStats", "false"]
    if args.host:
        cmd += ["--server.address", args.host]
    from fer_core.settings import child_env
    env = child_env(pythonpath=d)
    if os.name == "posix":
        # Streamlit replaces this process: a SIGTERM (docker stop, systemd) reaches the server
        # itself instead of leaving it running without its parent. The app's folder is its
        # working directory: Streamlit reads .streamlit/ there.
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(d)
        os.execve(sys.executable, cmd, env)
    try:
        return subprocess.call(cmd, cwd=d, env=env)
    except KeyboardInterrupt:
        return 130
