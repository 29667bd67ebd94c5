"""The app's import order keeps TensorFlow and pylibsrtp (WebRTC) in one process.

Loading pylibsrtp after TensorFlow kills the process (SIGSEGV); the router imports pylibsrtp
first (see streamlit_app.py). This runs the real router and then the worst page order in a
child process: TensorFlow loaded by an earlier page, the Webcam page opened afterwards, and an
SRTP packet protected and unprotected while TensorFlow is loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.factories import ROOT

WORST_ORDER = textwrap.dedent("""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file({router!r}, default_timeout=300)
    at.run()                                   # Home, through the router
    assert not at.exception, at.exception
    import tensorflow                          # what Train / Evaluate / Photo load
    at.switch_page("pages/webcam.py").run()    # imports streamlit_webrtc -> aiortc -> pylibsrtp
    assert [t.value for t in at.title] == ["🎥 Webcam"], at.title
    import pylibsrtp

    key = bytes(range(30))
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    rtp = bytes([0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42]) + b"frame payload"
    srtp = tx.protect(rtp)
    assert srtp != rtp and rx.unprotect(srtp) == rtp
    print("survived", tensorflow.__version__)
""")


def test_tensorflow_then_webcam_page_survives_in_one_process(tmp_path):
    code = WORST_ORDER.format(router=str(ROOT / "streamlit_app.py"))
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "FER_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=540)
    fault = proc.stderr.find("Fatal Python error")
    assert proc.returncode == 0, (f"exit code {proc.returncode}:\n"
                                  f"{proc.stderr[fault:fault + 1500] if fault >= 0 else proc.stderr[-1500:]}")
    assert "survived" in proc.stdout
