"""Small data the tests make themselves."""

from __future__ import annotations

import numpy as np

from fer_core.data.dataset import Dataset
from fer_core.labels import FER7


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


def tiny_keras_run(root, seed: int = 0):
    """An untrained tiny Keras classifier saved as a run dir (model.keras + labels.json)."""
    import json

    import keras
    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))
    root.mkdir(parents=True, exist_ok=True)
    model.save(root / "model.keras")
    (root / "labels.json").write_text(json.dumps({"labels": list(FER7), "label_set": "fer7"}))
    return root


class ServeProcess:
    """``python -m fer_core serve`` on a free port (output in ``log_path``), with JSON helpers."""

    def __init__(self, model, db, log_dir, env: dict | None = None):
        import os
        import socket
        import subprocess
        import sys
        from pathlib import Path
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_path = Path(log_dir) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "serve", "--port", str(self.port), "--model",
             str(model), "--feedback-db", str(db), "--log-level", "warning"], cwd=root,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FER_API_KEY": "", **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT)

    def call(self, method, path, body=None, conn=None, timeout=30):
        import http.client
        import json
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
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                status, body = self.call("GET", "/v1/health/ready", timeout=3)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"serve not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self):
        import subprocess
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
