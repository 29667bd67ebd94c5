"""CLI and server start-up with bad input: exit 2 and one clear message, never a traceback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.factories import ROOT, free_port

# TensorFlow's C++ start-up lines (absl), written before Python runs any code of ours
TF_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "fer_core", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env or ENV)


def _rgb32_model(path):
    """A real Keras model whose input is (32, 32, 3), not the 48x48 grey faces FER needs."""
    import keras
    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x)).save(path)
    return path


def _assert_one_message(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not TF_NATIVE_LOG.match(ln)]
    assert len(lines) == 1, lines[:20]
    for n in needles:
        assert n in lines[0], lines[0]


def test_evaluate_with_a_model_of_the_wrong_input_shape(tmp_path):
    model = _rgb32_model(tmp_path / "rgb32.keras")
    r = _cli("evaluate", "--model", model, "--data", "demo")
    _assert_one_message(r, "rgb32", "(32, 32, 3)", "48")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_serve_with_a_non_finite_upload_limit(value):
    r = _cli("serve", "--port", free_port(), env={**ENV, "FER_MAX_UPLOAD_MB": value})
    _assert_one_message(r, "FER_MAX_UPLOAD_MB", value)


def test_serve_on_a_busy_port_exits_2_before_loading_the_model():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _cli("serve", "--port", port, "--log-level", "info")
    _assert_one_message(r, str(port), "in use")
    # uvicorn runs the lifespan (which loads the model) before it binds: it never got there
    assert "application startup" not in r.stderr.lower()


def test_serve_with_a_bad_model_says_so_at_start(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "serve", "--port", str(port),
                             "--model", "not-a-model", "--feedback-db",
                             str(tmp_path / "fb.db"), "--log-level", "warning"],
                            cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health",
                                            timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert health["status"] == "degraded"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "not-a-model" in err and "not found" in err, err
    assert "Traceback" not in err, err
