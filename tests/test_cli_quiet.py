"""`python -m fer_core ...` prints what was asked: no TensorFlow / absl / TFLite start-up lines
on stderr, while real errors and other stderr output still show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cv2
import pytest

from fer_core.native_logs import STARTUP_LINES
from tests.factories import ROOT, face_image


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache (dataset, TFLite conversions) for the module's CLI runs: the first run converts
    the shipped model and parses the demo set, quietly too; later runs reuse them."""
    return tmp_path_factory.mktemp("cli-cache")


def run(args, cache, **env):
    """The CLI in a fresh process, environment as in a user's shell (no TF log level set)."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ.update(FER_CACHE_DIR=str(cache), **env)
    return subprocess.run([sys.executable, "-m", "fer_core", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "face.png"
    cv2.imwrite(str(path), face_image())
    return path


def test_predict_json_prints_only_the_answer(photo, cache):
    proc = run(["predict", str(photo), "--json"], cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"unexpected stderr:\n{proc.stderr}"
    faces = json.loads(proc.stdout)["faces"]
    assert len(faces) == 1 and faces[0]["emotion"]


def test_evaluate_json_prints_only_the_answer(cache):
    proc = run(["evaluate", "--data", "demo", "--json"], cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"unexpected stderr:\n{proc.stderr}"
    assert json.loads(proc.stdout)["n"] > 0


def test_user_error_still_shows_after_tensorflow_loaded(tmp_path, cache):
    """A broken .keras file is found out after TensorFlow is loaded: the error is the one line."""
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip archive")
    proc = run(["evaluate", "--data", "demo", "--model", str(bad), "--json"], cache)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.keras" in lines[0], \
        proc.stderr


def test_native_logs_can_be_turned_back_on(photo, cache):
    proc = run(["predict", str(photo), "--json"], cache, FER_NATIVE_LOGS="1",
               TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode == 0, proc.stderr
    # The lines filtered by default come back (which ones TensorFlow prints depends on the CPU:
    # the oneDNN notice only where oneDNN is on by default, e.g. AVX-512 machines).
    assert STARTUP_LINES.search(proc.stderr.encode()), proc.stderr


def test_only_the_known_startup_lines_are_dropped():
    """Lines written to fd 2 inside the block come out afterwards, except the known ones; the
    block also restores fd 2 when its body raises."""
    code = textwrap.dedent("""
        import os, sys
        from fer_core.native_logs import startup_lines_dropped
        noise = (b"WARNING: All log messages before absl::InitializeLog() is called are "
                 b"written to STDERR\\n"
                 b"I0000 00:00:1.2 5 port.cc:153] oneDNN custom operations are on. You may...\\n"
                 b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
        with startup_lines_dropped():
            os.write(2, noise + b"native warning kept\\n")
            print("python line kept", file=sys.stderr)
        try:
            with startup_lines_dropped():
                raise ValueError("boom")
        except ValueError:
            print("after the error", file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["native warning kept", "python line kept",
                                        "after the error"]


def test_the_first_import_stays_quiet_after_a_find_spec(tmp_path):
    """`has_tensorflow()` asks importlib.util.find_spec first: that lookup imports nothing, so
    the real import afterwards must still be the quiet one (a package stands in for TensorFlow
    and writes a start-up line to fd 2 when imported)."""
    pkg = tmp_path / "noisy_native"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import os\nos.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from fer_core.native_logs import _QuietFirstImport
        sys.meta_path.insert(0, _QuietFirstImport({{"noisy_native"}}))
        assert importlib.util.find_spec("noisy_native") is not None
        import noisy_native
        print("imported", file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "FER_NATIVE_LOGS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["imported"]


def test_a_crash_inside_the_block_still_shows_its_traceback():
    code = textwrap.dedent("""
        import ctypes
        from fer_core.native_logs import startup_lines_dropped
        with startup_lines_dropped():
            ctypes.string_at(0)
    """)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    assert 'File "<string>", line 5' in proc.stderr
