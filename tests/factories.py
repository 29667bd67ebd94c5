"""Builders the tests share: data, images and clips, tiny models and run dirs, API clients, app,
browser and server helpers. Tests import these (or use the fixtures in conftest.py), never another
test module or conftest; a builder used by two test files lives here.

Keras is imported inside the model builders only, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fer_core.data.dataset import Dataset
from fer_core.labels import FER7

ROOT = Path(__file__).resolve().parent.parent
FER2013 = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


# ----------------------------------------------------------------------------- data

def pattern_faces(n_per_class: int = 40, n_classes: int = 7, seed: int = 0,
                  splits=("train", "val")) -> Dataset:
    """A learnable toy set: class c is a bright bar at a class-specific height, plus noise.

    Each split gets ``n_per_class`` faces per class.
    """
    rng = np.random.default_rng(seed)
    images, labels, split = [], [], []
    for s in splits:
        for c in range(n_classes):
            img = rng.normal(90, 25, size=(n_per_class, 48, 48))
            row = 4 + c * (40 // n_classes)
            img[:, row:row + 5, 6:42] += 120
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels += [c] * n_per_class
            split += [s] * n_per_class
    return Dataset(images=np.concatenate(images), labels=np.asarray(labels, dtype=np.int64),
                   split=np.asarray(split, dtype="U5"), label_names=FER7[:n_classes]
                   if n_classes != 7 else FER7, source="pattern_faces", label_set="fer7")


def write_fer_csv(ds, path: Path) -> Path:
    """A FER2013-format CSV (emotion,pixels,Usage) of a Dataset."""
    lines = ["emotion,pixels,Usage"]
    for img, lab, sp in zip(ds.images, ds.labels, ds.split):
        lines.append(f"{lab},{' '.join(map(str, img.ravel().tolist()))},{USAGE[str(sp)]}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- images, clips

def face_image(size: int = 200, smile: bool = True) -> np.ndarray:
    """A drawn cartoon face on a plain background, BGR uint8, for detector tests."""
    import cv2

    img = np.full((size * 2, size * 2, 3), 200, dtype=np.uint8)
    c = (size, size)
    cv2.ellipse(img, c, (int(size * 0.38), int(size * 0.5)), 0, 0, 360, (150, 170, 205), -1)
    for dx in (-1, 1):
        eye = (c[0] + dx * int(size * 0.15), c[1] - int(size * 0.1))
        cv2.ellipse(img, eye, (int(size * 0.07), int(size * 0.035)), 0, 0, 360, (60, 60, 60), -1)
        cv2.line(img, (eye[0] - int(size * .08), eye[1] - int(size * .09)),
                 (eye[0] + int(size * .08), eye[1] - int(size * .09)), (40, 40, 60), 4)
    cv2.line(img, (c[0], c[1] - int(size * .02)), (c[0], c[1] + int(size * .12)),
             (110, 120, 160), 3)
    start, end = (0, 180) if smile else (180, 360)
    cv2.ellipse(img, (c[0], c[1] + int(size * 0.22)), (int(size * 0.14), int(size * 0.06)), 0,
                start, end, (60, 60, 140), 4)
    return img


def png(img) -> bytes:
    """``img`` (grey or BGR uint8) encoded as PNG."""
    import cv2

    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def write_y4m(path: Path, n_frames: int = 30, width: int = 320, height: int = 240) -> Path:
    """A looping fake-camera video for Chromium (``--use-file-for-fake-video-capture``): a drawn
    face drifting slightly on a plain background."""
    import cv2

    face = face_image(size=110)                      # 220x220, face ~110 px wide
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(n_frames):
            frame = np.full((height, width, 3), 200, np.uint8)
            dx = int(10 * np.sin(2 * np.pi * i / n_frames))
            x0, y0 = (width - 220) // 2 + dx, (height - 220) // 2
            frame[y0:y0 + 220, x0:x0 + 220] = face
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


# ----------------------------------------------------------------------------- tiny models

def tiny_cnn(n_classes: int = 7, *, width: int = 4, strides: int = 1, softmax: bool = True,
             bias=None, seed: int = 0):
    """An untrained one-conv FER model: Rescaling -> Conv2D(width, 3) -> global average pooling
    -> Dense(n_classes). ``bias`` with a zero kernel makes its output constant; ``softmax``
    False gives logits."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(width, 3, strides=strides, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    kw = {} if bias is None else {"kernel_initializer": "zeros",
                                  "bias_initializer": keras.initializers.Constant(bias)}
    out = keras.layers.Dense(n_classes, activation="softmax" if softmax else None, **kw)(x)
    return keras.Model(inp, out)


def conv_pool_cnn(n_classes: int = 7, head: str = "flatten", nested: bool = False):
    """Two conv + pool blocks (conv1, pool1, conv2, pool2) and a ``head`` ("flatten" or "gap");
    ``nested`` puts one conv + pool inside a Sequential "backbone" (layers backbone/ic,
    backbone/ip). Global pooling cannot tell pattern-face bar heights apart, so a model meant
    to learn them flattens."""
    import keras
    from keras import layers

    inp = keras.Input((48, 48, 1))
    x = layers.Rescaling(1 / 255)(inp)
    if nested:
        backbone = keras.Sequential([keras.Input((48, 48, 1)),
                                     layers.Conv2D(4, 3, padding="same", activation="relu",
                                                   name="ic"),
                                     layers.MaxPooling2D(name="ip")], name="backbone")
        x = backbone(x)
    else:
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
        x = layers.MaxPooling2D(name="pool1")(x)
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
        x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten()(x) if head == "flatten" else layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


def save_model_dir(path: Path, model, labels=None) -> Path:
    """``model`` saved as ``path/model.keras`` with ``labels`` (a list of names or a
    ``{"labels": ..., "label_set": ...}`` dict) as ``labels.json``; no labels file for None."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / "model.keras")
    if labels is not None:
        (path / "labels.json").write_text(json.dumps(labels))
    return path


FER7_LABELS = {"labels": list(FER7), "label_set": "fer7"}


def tiny_model_dir(root: Path) -> Path:
    """A real (untrained) Keras model saved as a run dir: model.keras + labels.json."""
    return save_model_dir(root, tiny_cnn(), FER7_LABELS)


def make_tiny_run(root: Path, name: str = "tiny-run", epochs: int = 0, seed: int = 0) -> Path:
    """Save a tiny FER7 CNN as a run dir (model.keras, labels.json, config, history, metrics,
    model card). ``epochs`` > 0 fits it on :func:`pattern_faces` first."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(4, name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x), name=name)
    history = []
    if epochs:
        ds = pattern_faces(n_per_class=20, seed=seed)
        tr = ds.split == "train"
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(ds.images[tr][..., None].astype("float32"), ds.labels[tr],
                      validation_data=(ds.images[~tr][..., None].astype("float32"),
                                       ds.labels[~tr]),
                      epochs=epochs, batch_size=32, verbose=0)
        history = [{"epoch": e + 1, **{k: float(v[e]) for k, v in h.history.items()}}
                   for e in range(epochs)]
    run = save_model_dir(Path(root) / name, model, FER7_LABELS)
    (run / "config.json").write_text(json.dumps({"arch": "tiny", "epochs": epochs}))
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    val_acc = history[-1]["val_accuracy"] if history else 0.0
    (run / "metrics.json").write_text(json.dumps({"val_accuracy": val_acc}))
    (run / "model_card.md").write_text(f"# Model card: {name}\n\nTiny test CNN.\n\n"
                                       "## Known limits\n\nTrained on drawn bars only.\n")
    return run


# Augmentation off and a small VGG: the TrainConfig fields of a fast training test.
NO_AUG = dict(shift=0.0, rotation=0.0, zoom=0.0, contrast=0.0, erasing=0.0)
TINY_TRAIN = dict(arch="vgg", arch_params={"width": 8, "depth": 1, "bn_momentum": 0.8},
                  batch_size=16, lr=3e-3, warmup_epochs=0.0, **NO_AUG)


# ----------------------------------------------------------------------------- REST API

def make_client(tmp_path, model_dir=None, **kw):
    """A TestClient of the API app on ``model_dir`` (or a missing model), feedback DB in
    ``tmp_path``; use it as a context manager."""
    from fastapi.testclient import TestClient

    from fer_core.api.app import create_app
    from fer_core.api.settings import Settings

    settings = Settings(model=str(model_dir) if model_dir else str(tmp_path / "no-such-model"),
                        feedback_db=tmp_path / "fb.sqlite3", **kw)
    return TestClient(create_app(settings))


def assert_error(r, status, code):
    """``r`` is the API's JSON error: ``status``, ``{"error": code, "detail": ...}``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert body["detail"]
    return body


# ----------------------------------------------------------------------------- app and browser

def explorer_app():
    """AppTest of the router switched to the Dataset Explorer, run once."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/explorer.py").run()
    assert not at.exception, at.exception
    return at


def metric_value(at, label):
    """The value of the AppTest metric called ``label``."""
    return next(m.value for m in at.metric if m.label == label)


def pick_typed_path(at, path):
    """Choose "Type a path…" in the dataset picker and type ``path``."""
    at.selectbox(key="ds_pick").select("Type a path…").run()
    at.text_input(key="ds_path").input(str(path)).run()
    assert not at.exception, at.exception
    return at


def faces_seen(page) -> int:
    """The "faces seen: N" count the Webcam page shows (Playwright page)."""
    text = page.get_by_text(re.compile(r"faces seen: \d+")).first.inner_text(timeout=5000)
    return int(re.search(r"faces seen: (\d+)", text).group(1))


# ----------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc, timeout: float = 120, log=lambda: "", ready=lambda body: True):
    """Poll ``url`` (a JSON endpoint) until ``ready(body)``; returns the body. Fails when
    ``proc`` exits or ``timeout`` seconds pass, with the end of ``log()``."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited: {log()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
            if ready(body):
                return body
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, f"{url} not ready in {timeout:g} s: {log()[-3000:]}"
        time.sleep(0.3)


def end_process(proc, timeout: float = 30) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def choose_option(page, box, name: str, *, exact: bool = False, timeout: float = 60) -> None:
    """Open the Streamlit select box ``box`` and click its option ``name``. A click that lands
    while the script reruns can leave the list closed: open it again until ``timeout`` s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    option = page.get_by_role("option", name=name, exact=exact).first
    deadline = time.monotonic() + timeout
    while True:
        box.click()
        try:
            option.click(timeout=5_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
            page.keyboard.press("Escape")


def need_chromium():
    """Skip (fail under CI=true) when Debian's Chromium is missing."""
    if not Path(CHROMIUM).exists():
        msg = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def launch_chromium(playwright, extra_args=()):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS + list(extra_args))


class StreamlitServer:
    """`streamlit run streamlit_app.py` on a free port, for real-browser tests."""

    def __init__(self, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none"]
        self.log = open(ARTIFACTS_DIR() / f"streamlit-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early, see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("streamlit did not become healthy in 60 s")

    def __exit__(self, *exc):
        end_process(self.proc, timeout=15)
        self.log.close()


def ARTIFACTS_DIR() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def png_b64(face: np.ndarray) -> str:
    """A grey face as a base64 PNG (what a client posts)."""
    import base64

    import cv2
    return base64.b64encode(cv2.imencode(".png", np.asarray(face, dtype=np.uint8))[1]).decode()


def without_class(ds: Dataset, label: int, split: str = "train") -> Dataset:
    """``ds`` without the faces of ``label`` in ``split`` (a model trained on it never learns
    that class: the feedback loop's stand-in for a class the model gets wrong)."""
    keep = ~((ds.labels == label) & (ds.split == split))
    return ds.subset("all", index=np.flatnonzero(keep))


TINY_RECIPE = dict(arch="vgg", arch_params={"width": 8, "depth": 1, "bn_momentum": 0.8},
                   batch_size=16, lr=3e-3, warmup_epochs=0.0, shift=0.0, rotation=0.0, zoom=0.0,
                   contrast=0.0, erasing=0.0)


def tiny_trained_run(run_dir, dataset: Dataset, epochs: int = 3, **kw):
    """A real run directory (model.keras, config.json, labels, metrics) from a few epochs of a
    tiny VGG on ``dataset``."""
    from fer_core.training import TrainConfig, train
    train(dataset, TrainConfig(**{**TINY_RECIPE, "epochs": epochs, **kw}), run_dir)
    return run_dir


def post_feedback(client, faces, label: str, headers=None) -> list[dict]:
    """POST each face to /v1/feedback (``detect=false``) with ``label``; the responses."""
    out = []
    for face in faces:
        r = client.post("/v1/feedback", json={"label": label, "image_base64": png_b64(face),
                                              "detect": False}, headers=headers or {})
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def run_threads(target, n: int) -> None:
    """``target(k)`` in ``n`` threads at once (k = 0 .. n-1); returns when all have ended."""
    import threading
    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_coroutine(coro):
    """``coro``'s result, run in its own thread and event loop: an earlier test in this process
    (a browser test) may have left a loop running in the main thread, where asyncio.run()
    refuses to start."""
    import asyncio
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def tiny_keras_run(root, seed: int = 0):
    """An untrained tiny Keras classifier saved as a run dir (model.keras + labels.json)."""
    return save_model_dir(root, tiny_cnn(seed=seed), FER7_LABELS)


class ServeProcess:
    """``python -m fer_core serve`` on a free port (output in ``log_path``), with JSON helpers."""

    def __init__(self, model, db, log_dir, env: dict | None = None):
        self.port = free_port()
        self.log_path = Path(log_dir) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "serve", "--port", str(self.port), "--model",
             str(model), "--feedback-db", str(db), "--log-level", "warning"], cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FER_API_KEY": "", **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT)

    def call(self, method, path, body=None, conn=None, timeout=30):
        import http.client
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, data, {"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if "json" in r.getheader("content-type", "")
                              else raw.decode())
        finally:
            if conn is None:
                c.close()

    def wait_ready(self, timeout: float = 180):
        return wait_for_http(f"http://127.0.0.1:{self.port}/v1/health/ready", self.proc, timeout,
                             log=self.log_path.read_text)

    def stop(self):
        end_process(self.proc)
        self._log.close()


def tiny_model(n_classes: int = 7, softmax: bool = True, seed: int = 0):
    """The predictor tests' CNN: one strided conv (8 filters) and global pooling."""
    return tiny_cnn(n_classes, width=8, strides=2, softmax=softmax, seed=seed)


def save_run(root: Path, name: str, model, labels=None) -> Path:
    """A run directory ``root/name`` holding ``model`` (and ``labels.json`` when given)."""
    return save_model_dir(root / name, model, labels)
