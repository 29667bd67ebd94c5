"""The package as users install it: a wheel and ``pip install .`` into a virtualenv without
TensorFlow, used from outside the repo (slow: marked, but part of ``make test``).

One virtualenv holds the runtime dependencies of pyproject.toml (the plain install: no
TensorFlow, no Keras, no PyAV, no pandas; at most 400 MB). It is cached as ``.venv-runtime-<hash>`` in the repo root (git-ignored),
keyed by the hash of those pins and the Python version, so only the first run downloads
them; every run then installs this checkout's package into it afresh (``--no-deps
--force-reinstall``): first the wheel built by ``python -m build``, then ``pip install .``.
Each test runs the installed ``fer-studio`` and the Python API in a temp folder, with the
repo off ``sys.path``. The last test starts ``fer-studio app`` from the wheel installed into a
fresh virtualenv layered over this (full) one, which holds the ``[app]`` extra's packages
(a second, 2.7 GB virtualenv would cost minutes on its first run for no added check of
this project's code).
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

from tests.factories import end_process, free_port, wait_for_http
from tests.factories import face_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPS = PYPROJECT["project"]["dependencies"]
BUILD_DEPS = ["wheel==0.48.0", "setuptools==65.5.0"]  # to build `pip install .` offline
KEY = hashlib.sha256(json.dumps([DEPS, BUILD_DEPS, sys.version_info[:2]]).encode()).hexdigest()
VENV = ROOT / f".venv-runtime-{KEY[:12]}"
PY = VENV / "bin" / "python"
HEAVY = ("tensorflow", "keras", "sklearn", "streamlit", "tf2onnx", "onnxruntime", "av",
         "pandas")


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
video = model.video(sys.argv[2], every=2, out="annotated", annotate=True)
try:
    model.evaluate("demo")
except fer_core.FerError as e:
    evaluate_error = str(e)
try:
    video.frames
except fer_core.FerError as e:
    frames_error = str(e)
print(json.dumps({
    "package": fer_core.__file__, "backend": model.backend, "detector": model.detector,
    "faces": [f.to_dict() for f in faces], "pil": len(pil), "array": len(arr),
    "video_rows": len(video.rows), "video_faces": len(video.summary["faces"]),
    "video_row": video.rows[0], "annotated": video.summary["outputs"]["annotated"],
    "evaluate_error": evaluate_error, "frames_error": frames_error,
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r)),
}))
""" % (HEAVY,)


def _check_runtime(venv: Path, inputs: dict, cwd: Path) -> None:
    """The Python API, `fer-studio predict` and `fer-studio video` in ``cwd`` (outside the
    repo), on the installed package, without TensorFlow."""
    p = _run([venv / "bin" / "python", "-c", API_SCRIPT, inputs["photo"], inputs["clip"]], cwd)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(venv)), got["package"]  # the installed copy
    # the default detector (its weights are package data) runs on LiteRT here too
    assert got["backend"] == "tflite" and got["detector"] == "blazeface" and got["heavy"] == []
    assert len(got["faces"]) == 1 and got["pil"] == 1 and got["array"] == 1
    assert got["faces"][0]["emotion"] in ("angry", "disgust", "fear", "happy", "sad",
                                          "surprise", "neutral")
    assert got["video_rows"] > 0 and got["video_faces"] == 1
    row = got["video_row"]
    assert isinstance(row["frame"], int) and isinstance(row["time_s"], float)
    assert sum(row[k] for k in got["faces"][0]["scores"]) == pytest.approx(1, abs=1e-3)
    # read and written through OpenCV's FFmpeg: the annotated copy is VP8 WebM
    assert got["annotated"] == "annotated.webm"
    cap = cv2.VideoCapture(str(cwd / "annotated" / "annotated.webm"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 10
    assert "fer-studio[train]" in got["evaluate_error"]
    assert "fer-studio[pandas]" in got["frames_error"]

    p = _run([venv / "bin" / "fer-studio", "predict", inputs["photo"], "--json"], cwd)
    out = json.loads(p.stdout)
    assert len(out["faces"]) == 1 and out["model_id"].startswith("fer2013-default")
    p = _run([venv / "bin" / "fer-studio", "video", inputs["clip"], "--out", cwd / "v",
              "--json"], cwd)
    assert json.loads(p.stdout)["video"]["frames"] == 10
    assert (cwd / "v" / "frames.csv").is_file()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout's files (tracked, and new ones git does not ignore), so building
    writes its build/ and egg-info there rather than into the checkout (tests run in
    parallel). Outside a git checkout: the checkout itself."""
    p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT, capture_output=True)
    if p.returncode != 0:
        return ROOT
    src = tmp_path_factory.mktemp("source")
    for name in p.stdout.decode().split("\0"):
        f = ROOT / name
        if name and f.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    """The wheel of this checkout, built by ``python -m build``."""
    tmp = tmp_path_factory.mktemp("build")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist",
          source], tmp)
    return next((tmp / "dist").glob("fer_studio-*.whl"))


def test_wheel_installs_and_runs_outside_the_repo(venv, wheel, inputs, tmp_path):
    import zipfile
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fer_core/shipped/fer2013-default/model.tflite" in names
    assert "fer_core/shipped/fer2013-default/model.keras" in names
    assert {"fer_core/weights/face_detection_full_range.tflite",
            "fer_core/weights/face_detection_short_range.tflite",
            "fer_core/weights/LICENSE-Apache-2.0.txt"} <= names
    assert "fer_core/_app/streamlit_app.py" in names and "fer_core/_app/ui/__init__.py" in names
    assert not any(n.startswith(("ui/", "pages/", "data/", "models/", "tests/")) for n in names)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
          "--no-deps", "--force-reinstall", wheel], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _check_runtime(venv, inputs, work)


def test_plain_install_has_no_tensorflow_and_serves(venv, source, inputs, tmp_path):
    _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
          "--no-deps", "--force-reinstall", "--no-build-isolation", source], tmp_path)
    p = _run([venv / "bin" / "python", "-c",
              "import importlib.util as u; print([m for m in ('tensorflow', 'keras') "
              "if u.find_spec(m)])"], tmp_path)
    assert p.stdout.strip() == "[]"
    # what the runtime installs (the distributions' own files, without the virtualenv's pip,
    # setuptools and wheel, and without bytecode written at run time): at most 400 MB
    from fer_core.bench.runtime import site_packages
    size = site_packages(str(venv / "bin" / "python"), top=100)
    names = {n.lower() for n in size["packages_mb"]}
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "av", "pandas", "streamlit"}
    assert sum(size["packages_mb"].values()) - size["venv_tools_mb"] <= 400, size
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
        health = wait_for_http(f"http://127.0.0.1:{port}/v1/health", server,
                               log=lambda: server.communicate()[1] if server.poll() is not None
                               else "")
        assert health["detector"].startswith("blazeface"), health
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict",
                       files={"file": ("face.png", inputs["photo"].read_bytes(), "image/png")},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["faces"]) == 1
        # a video job (a child process) reads through OpenCV and writes the WebM
        r = httpx.post(f"http://127.0.0.1:{port}/v1/videos", data={"annotate": "true"},
                       files={"file": ("clip.mp4", inputs["clip"].read_bytes(), "video/mp4")},
                       timeout=60)
        assert r.status_code == 202, r.text
        url = f"http://127.0.0.1:{port}/v1/videos/{r.json()['id']}"
        deadline = time.monotonic() + 180
        while (job := httpx.get(url, timeout=10).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["status"] == "finished", job
        assert job["summary"]["video"]["frames"] == 10 and len(job["summary"]["faces"]) == 1
        r = httpx.get(f"{url}/annotated", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == "video/webm"
    finally:
        end_process(server, timeout=20)


APP_SCRIPT = """
import json, pathlib, sys
import fer_core, streamlit
from fer_core.commands.app import app_dir
from streamlit.testing.v1 import AppTest
d = app_dir()
at = AppTest.from_file(str(d / "streamlit_app.py"), default_timeout=120).run()
print(json.dumps({
    "fer_core": fer_core.__file__, "streamlit": streamlit.__file__, "app": str(d),
    "exception": [str(e.value) for e in at.exception],
    "title": at.title[0].value if at.title else None,
    "links": sorted(pl.proto.page for pl in at.get("page_link")),
    "pages": sorted(p.stem for p in (d / "pages").glob("*.py") if p.stem != "home"),
}))
"""


def test_app_starts_from_the_installed_wheel(venv, wheel, tmp_path):
    """``fer-studio app`` on an install of the wheel: the packaged app (fer_core/_app), not
    the checkout's. The [app] extra's packages (TensorFlow, Streamlit, ...) are the full
    virtualenv's, layered under a fresh virtualenv (a .pth line) instead of a second 2.7 GB
    install: the wheel itself is installed into the fresh virtualenv, and the full
    virtualenv was installed by pip from the same pins as the extras (test_runtime checks
    that they agree)."""
    import sysconfig
    app_venv = tmp_path / "venv-app"
    _run([getattr(sys, "_base_executable", None) or "python3", "-m", "venv", "--without-pip",
          app_venv], tmp_path)
    py = app_venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path).stdout.strip())
    full = sysconfig.get_paths()["purelib"]  # this (full) virtualenv's packages, after its own
    (site / "zz_full_venv.pth").write_text(f"import site; site.addsitedir({full!r})\n")
    _run([venv / "bin" / "python", "-m", "pip", "--python", py, "install", "-q",
          "--disable-pip-version-check", "--no-deps", wheel], tmp_path)
    installed = site / "fer_core" / "_app"

    # the router and the Home page, run by Streamlit's AppTest from the installed files
    p = _run([py, "-c", APP_SCRIPT], tmp_path, timeout=300)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["fer_core"].startswith(str(site)) and got["app"] == str(installed)
    assert got["streamlit"].startswith(full)
    assert got["exception"] == [] and got["title"].endswith("FER Studio")
    assert "video" in got["pages"] and got["links"] == got["pages"]

    # the real server: `fer-studio app` answers Streamlit's health check and its page, and a
    # SIGTERM to the command ends it (the command becomes the server)
    import httpx
    port = free_port()
    server = subprocess.Popen(
        [app_venv / "bin" / "fer-studio", "app", "--port", str(port), "--host", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": f"{app_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
             "FER_CACHE_DIR": str(tmp_path / "cache"), "FER_RUNS_DIR": str(tmp_path / "runs")})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the app did not answer its health check"
            time.sleep(0.2)
        assert r.text == "ok"
        assert "<title>Streamlit</title>" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert Path(f"/proc/{server.pid}/cwd").resolve() == installed
    finally:
        end_process(server, timeout=20)
    assert server.returncode is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
