"""The package as users install it: a wheel and ``pip install .`` into a virtualenv without
TensorFlow, used from outside the repo (slow: marked, but part of ``make test``).

One virtualenv holds the runtime dependencies of pyproject.toml (the plain install: no
TensorFlow, no Keras). It is cached as ``.venv-runtime-<hash>`` in the repo root (git-ignored),
keyed by the hash of those pins and the Python version, so only the first run downloads
them; every run then installs this checkout's package into it afresh (``--no-deps
--force-reinstall``): first the wheel built by ``python -m build``, then ``pip install .``.
Each test runs the installed ``fer-studio`` and the Python API in a temp folder, with the
repo off ``sys.path``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import cv2
import pytest

from tests.factories import end_process, free_port
from tests.factories import face_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPS = PYPROJECT["project"]["dependencies"]
BUILD_DEPS = ["wheel==0.48.0", "setuptools==65.5.0"]  # to build `pip install .` offline
KEY = hashlib.sha256(json.dumps([DEPS, BUILD_DEPS, sys.version_info[:2]]).encode()).hexdigest()
VENV = ROOT / f".venv-runtime-{KEY[:12]}"
PY = VENV / "bin" / "python"
HEAVY = ("tensorflow", "keras", "sklearn", "streamlit", "tf2onnx", "onnxruntime")


def _run(cmd, cwd, timeout=900, check=True, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(cwd),
           "FER_CACHE_DIR": str(Path(cwd) / "cache"), "FER_RUNS_DIR": str(Path(cwd) / "runs"),
           "FER_FEEDBACK_DB": str(Path(cwd) / "feedback.sqlite3"), "LANG": "C.UTF-8"}
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}:\n{p.stdout[-2000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The cached runtime virtualenv (created once per dependency hash)."""
    ready = VENV / ".deps-installed"
    if not ready.exists():
        for old in ROOT.glob(".venv-runtime-*"):
            shutil.rmtree(old, ignore_errors=True)
        base = getattr(sys, "_base_executable", None) or "python3"
        tmp = tmp_path_factory.mktemp("mkvenv")
        _run([base, "-m", "venv", VENV], tmp)
        _run([PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-compile",
              *BUILD_DEPS, *DEPS], tmp, timeout=1800)
        ready.write_text(KEY)
    return VENV


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("inputs")
    photo = d / "face.png"
    cv2.imwrite(str(photo), face_image())
    from fer_core.synthetic import synthetic_clip
    clip = synthetic_clip(d / "clip.mp4", seconds=1.0, fps=10, faces=1)
    return {"photo": photo, "clip": clip}


API_SCRIPT = """
import json, sys
import numpy as np
from PIL import Image
import fer_core
model = fer_core.load_model()
faces = model.predict(sys.argv[1])
pil = model.predict(Image.open(sys.argv[1]))
arr = model.predict(np.asarray(Image.open(sys.argv[1]).convert("L")))
video = model.video(sys.argv[2], every=2)
try:
    model.evaluate("demo")
except fer_core.FerError as e:
    evaluate_error = str(e)
print(json.dumps({
    "package": fer_core.__file__, "backend": model.backend,
    "faces": [f.to_dict() for f in faces], "pil": len(pil), "array": len(arr),
    "video_rows": len(video.frames), "video_faces": len(video.summary["faces"]),
    "evaluate_error": evaluate_error,
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r)),
}))
""" % (HEAVY,)


def _check_runtime(venv: Path, inputs: dict, cwd: Path) -> None:
    """The Python API, `fer-studio predict` and `fer-studio video` in ``cwd`` (outside the
    repo), on the installed package, without TensorFlow."""
    p = _run([venv / "bin" / "python", "-c", API_SCRIPT, inputs["photo"], inputs["clip"]], cwd)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(venv)), got["package"]  # the installed copy
    assert got["backend"] == "tflite" and got["heavy"] == []
    assert len(got["faces"]) == 1 and got["pil"] == 1 and got["array"] == 1
    assert got["faces"][0]["emotion"] in ("angry", "disgust", "fear", "happy", "sad",
                                          "surprise", "neutral")
    assert got["video_rows"] > 0 and got["video_faces"] == 1
    assert "fer-studio[train]" in got["evaluate_error"]

    p = _run([venv / "bin" / "fer-studio", "predict", inputs["photo"], "--json"], cwd)
    out = json.loads(p.stdout)
    assert len(out["faces"]) == 1 and out["model_id"].startswith("fer2013-default")
    p = _run([venv / "bin" / "fer-studio", "video", inputs["clip"], "--out", cwd / "v",
              "--json"], cwd)
    assert json.loads(p.stdout)["video"]["frames"] == 10
    assert (cwd / "v" / "frames.csv").is_file()


def test_wheel_installs_and_runs_outside_the_repo(venv, inputs, tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, ROOT],
         tmp_path)
    wheel = next(dist.glob("fer_studio-*.whl"))
    import zipfile
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fer_core/shipped/fer2013-default/model.tflite" in names
    assert "fer_core/shipped/fer2013-default/model.keras" in names
    assert "fer_core/_app/streamlit_app.py" in names and "fer_core/_app/ui/__init__.py" in names
    assert not any(n.startswith(("ui/", "pages/", "data/", "models/", "tests/")) for n in names)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
          "--no-deps", "--force-reinstall", wheel], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _check_runtime(venv, inputs, work)


def test_plain_install_has_no_tensorflow_and_serves(venv, inputs, tmp_path):
    _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
          "--no-deps", "--force-reinstall", "--no-build-isolation", ROOT], tmp_path)
    p = _run([venv / "bin" / "python", "-c",
              "import importlib.util as u; print([m for m in ('tensorflow', 'keras') "
              "if u.find_spec(m)])"], tmp_path)
    assert p.stdout.strip() == "[]"
    _check_runtime(venv, inputs, tmp_path)

    # a command that needs TensorFlow says so, naming the extra; exit 2, no traceback
    p = _run([venv / "bin" / "fer-studio", "train", "demo"], tmp_path, check=False)
    assert p.returncode == 2 and "pip install 'fer-studio[train]'" in p.stderr
    assert "Traceback" not in p.stderr
    p = _run([venv / "bin" / "fer-studio", "app"], tmp_path, check=False)
    assert p.returncode == 2 and "fer-studio[app]" in p.stderr

    # one REST request on the runtime install
    import httpx
    port = free_port()
    server = subprocess.Popen(
        [venv / "bin" / "fer-studio", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
                           "FER_FEEDBACK_DB": str(tmp_path / "fb.sqlite3")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "server did not answer /v1/health in 120 s"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict",
                       files={"file": ("face.png", inputs["photo"].read_bytes(), "image/png")},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["faces"]) == 1
    finally:
        end_process(server, timeout=20)
