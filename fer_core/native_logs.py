"""TensorFlow's known start-up lines, kept off the console; everything else still shows.

TensorFlow 2.21 writes a few lines straight to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL
says: absl's "All log messages before absl::InitializeLog() is called ..." and the oneDNN notice
while it is imported, and TFLite's "Created TensorFlow Lite XNNPACK delegate for CPU." when the
first interpreter is made. :func:`startup_lines_dropped` sends fd 2 to a temporary file during
such a block and then writes what it caught to the real stderr, minus those known lines.
``FER_NATIVE_LOGS=1`` turns the filtering off (to see every native log line).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib.abc
import os
import re
import sys
import tempfile
import threading

STARTUP_LINES = re.compile(
    rb"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|\] oneDNN custom operations are on\. "
    rb"|Created TensorFlow Lite XNNPACK delegate for CPU\.")

_lock = threading.RLock()
_seen: set[str] = set()


def filtering() -> bool:
    from fer_core.errors import FerError
    from fer_core.settings import get_settings
    try:
        return not get_settings().native_logs
    except FerError:  # a bad setting is refused by the entry point's own start-up check
        return True


@contextlib.contextmanager
def startup_lines_dropped():
    """Catch what is written to fd 2 inside the block (native code and Python alike) and write
    it to the real stderr afterwards, except TensorFlow's known start-up lines. Blocks run one
    at a time; another thread's stderr output meanwhile is delayed, not lost."""
    if not filtering():
        yield
        return
    with _lock:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = os.dup(2)
        crash_traces = faulthandler.is_enabled()
        if crash_traces:  # a crash inside the block still shows its traceback
            faulthandler.enable(file=saved)
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                if crash_traces:
                    faulthandler.enable(file=2)
                os.close(saved)
                caught.seek(0)
                kept = [line for line in caught.read().splitlines(keepends=True)
                        if not STARTUP_LINES.search(line)]
                if kept:
                    os.write(2, b"".join(kept))


@contextlib.contextmanager
def first_time(key: str):
    """:func:`startup_lines_dropped` the first time ``key`` is used in this process only."""
    with _lock:
        first = key not in _seen
        _seen.add(key)
    with startup_lines_dropped() if first else contextlib.nullcontext():
        yield


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Runs the first import of the named top-level packages inside startup_lines_dropped()."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        # find_spec alone (importlib.util.find_spec, e.g. has_tensorflow) imports nothing: the
        # name stays watched until a spec's module is really executed.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_quietly(module):
                self.names.discard(fullname)
                with startup_lines_dropped():
                    exec_module(module)

            spec.loader.exec_module = exec_quietly
        return spec


def quiet_tensorflow_startup() -> None:
    """For entry points, before anything imports TensorFlow: its C++ logs from warnings up
    (TF_CPP_MIN_LOG_LEVEL=2 unless set: fer_core.settings) and its first import without the
    start-up lines."""
    if (filtering() and "tensorflow" not in sys.modules
            and not any(isinstance(f, _QuietFirstImport) for f in sys.meta_path)):
        sys.meta_path.insert(0, _QuietFirstImport({"tensorflow"}))
