"""The embedded synthetic demo dataset: deterministic grey 48x48 cartoon faces, 7 FER emotions.

Each face is drawn from facial geometry: mouth curve, opening and width, brow height and tilt,
eye opening, nose wrinkle. Identity (face shape, skin tone, hair, background), pose (rotation,
shift, scale), lighting gradient, blur, noise and occlusions vary per face, and every face shows
its emotion with a random intensity, so weak expressions overlap with neutral and the classic
pairs overlap too (fear/surprise, sad/neutral, angry/disgust): a model learns it but not to 100%.

Everything is drawn with vectorised NumPy on coordinate grids (plus OpenCV blur), so about
7,000 faces take seconds. ``python -m fer_core.data.demo`` writes the CSV if missing or stale.
SYNTHETIC: these are not photographs of people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core import atomic
from fer_core.labels import FER7

VERSION = 3                   # bump when the generator changes: ensure_demo() regenerates
N_PER_CLASS = 1000
SEED = 2013
FILENAME = "fer_demo_synthetic.csv"

#            curve  open  width brow_h tilt  eye  wrinkle
_PROTO = {
    "angry":    (-0.06, 0.02, 0.25, 0.08, 0.30, 0.75, 0.3),
    "disgust":  (-0.12, 0.05, 0.27, 0.10, 0.18, 0.55, 1.0),
    "fear":     (-0.06, 0.12, 0.33, 0.27, -0.22, 1.20, 0.0),
    "happy":    (0.20, 0.07, 0.36, 0.18, 0.00, 0.70, 0.1),
    "sad":      (-0.15, 0.01, 0.27, 0.19, -0.25, 0.65, 0.0),
    "surprise": (0.00, 0.20, 0.22, 0.31, -0.05, 1.30, 0.0),
    "neutral":  (0.00, 0.01, 0.28, 0.18, 0.00, 0.90, 0.0),
}
_NOISE = np.array([0.04, 0.025, 0.03, 0.035, 0.08, 0.14, 0.2], dtype=np.float32)


def demo_dir() -> Path:
    from fer_core.settings import get_settings
    return get_settings().demo_dir


def demo_path() -> Path:
    return demo_dir() / FILENAME


def _soft(d, width=0.04):
    """1 inside (d < 0), 0 outside, linear ramp of ``width`` around the edge."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _render(params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw faces for expression params (n, 7); returns float32 (n, 48, 48) in 0..255."""
    n = len(params)
    f32 = np.float32
    curve, mopen, mwidth, brow_h, tilt, eye, wrinkle = (params[:, i, None, None] for i in range(7))
    r = lambda lo, hi: rng.uniform(lo, hi, size=(n, 1, 1)).astype(f32)  # noqa: E731
    # pose
    ang = np.deg2rad(r(-10, 10))
    scale = r(15.0, 18.5)
    cx, cy = 23.5 + r(-2.5, 2.5), 24.5 + r(-2.0, 2.5)
    yy, xx = np.mgrid[0:48, 0:48].astype(f32)
    x, y = xx[None] - cx, yy[None] - cy
    u = (x * np.cos(ang) + y * np.sin(ang)) / scale
    v = (-x * np.sin(ang) + y * np.cos(ang)) / scale
    # identity
    bg = r(20, 200)
    skin = r(90, 215)
    fw, fh = r(0.92, 1.12), r(1.22, 1.45)
    jaw = r(0.0, 0.25)
    hair = r(0, 1) < 0.7
    hair_tone = r(10, 90)
    face = _soft((u / (fw * (1 - jaw * np.clip(v, 0, None) / fh))) ** 2 + (v / fh) ** 2 - 1, 0.12)
    img = bg + (skin - bg) * face
    hair_line = -fh * r(0.55, 0.8) + 0.08 * u ** 2
    hair_m = face * _soft(v - hair_line, 0.08) * hair
    img = img + (hair_tone - img) * hair_m
    # eyes
    au = np.abs(u)
    eye_h = 0.10 * eye
    eye_m = _soft(((au - 0.38) / 0.15) ** 2 + ((v + 0.15) / eye_h) ** 2 - 1, 0.3)
    img = img - 0.75 * skin * eye_m * face
    # brows: centre line tilted (positive tilt = inner end down, as in anger)
    brow_v = -0.15 - 0.12 - brow_h + tilt * (0.38 - au) * 1.2
    brow_m = _soft(np.abs(v - brow_v) - 0.045, 0.05) * _soft(np.abs(au - 0.38) - 0.2, 0.06)
    img = img - 0.55 * skin * brow_m * face
    # nose and disgust wrinkle
    nose_m = _soft(np.abs(u) - 0.07, 0.06) * _soft(np.abs(v - 0.22) - 0.04, 0.06)
    img = img - 0.35 * skin * nose_m
    wr = sum(_soft(np.abs(v - (0.02 + 0.07 * k)) - 0.012, 0.03) for k in range(3))
    img = img - 0.28 * skin * wrinkle * wr * _soft(np.abs(u) - 0.16, 0.05)
    # mouth: centre line with corners up (curve > 0) or down, opening as a lens
    t = np.clip(1 - (u / mwidth) ** 2, 0, 1)
    centre = 0.55 - curve * (1 - t) + 0.5 * curve * 0.3
    half = np.maximum(mopen * t, 0.025 * np.sqrt(t))
    inside = _soft(np.abs(v - centre) - half, 0.05) * (t > 0)
    img = img - 0.7 * skin * inside
    teeth = (mopen > 0.05) & (curve > 0.1)
    tooth_m = inside * _soft(np.abs(v - (centre - half * 0.45)) - half * 0.35, 0.04)
    img = img + (0.9 * skin + 40 - img) * tooth_m * teeth
    # lighting gradient
    gdir = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(f32)
    gain = r(0.0, 0.5)
    img = img * (1 + gain * (np.cos(gdir) * (xx - 24) + np.sin(gdir) * (yy - 24)) / 48)
    return img


def _post(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Occlusion, blur and noise; returns uint8."""
    import cv2

    n = len(img)
    occ = rng.uniform(size=n) < 0.12
    for i in np.flatnonzero(occ):
        x0, y0 = rng.integers(0, 40, size=2)
        w, h = rng.integers(8, 22, size=2)
        img[i, y0:y0 + h, x0:x0 + w] = rng.uniform(30, 220)
    sig = rng.uniform(0.3, 1.3, size=n)
    for i in range(n):
        img[i] = cv2.GaussianBlur(img[i], (0, 0), float(sig[i]))
    img += rng.normal(0, 1, size=img.shape).astype(np.float32) * rng.uniform(
        2, 12, size=(n, 1, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(n_per_class: int = N_PER_CLASS, seed: int = SEED
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N,48,48), labels int64 in FER7 order, split 'train'/'val'/'test')."""
    rng = np.random.default_rng(seed)
    k = len(FER7)
    labels = np.repeat(np.arange(k), n_per_class)
    proto = np.array([_PROTO[name] for name in FER7], dtype=np.float32)
    neutral = proto[FER7.index("neutral")]
    strength = rng.uniform(0.4, 1.2, size=(len(labels), 1)).astype(np.float32)
    params = neutral + strength * (proto[labels] - neutral)
    params += rng.normal(size=params.shape).astype(np.float32) * _NOISE
    params[:, 1] = np.clip(params[:, 1], 0.0, None)           # opening
    params[:, 2] = np.clip(params[:, 2], 0.15, 0.45)          # width
    params[:, 5] = np.clip(params[:, 5], 0.2, 1.6)            # eye opening
    params[:, 6] = np.clip(params[:, 6], 0.0, None)           # wrinkle
    split = np.empty(len(labels), dtype="U5")
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = n_test = int(round(0.1 * len(idx)))
        split[idx] = "train"
        split[idx[:n_val]] = "val"
        split[idx[n_val:n_val + n_test]] = "test"
    order = rng.permutation(len(labels))
    labels, params, split = labels[order], params[order], split[order]
    images = np.empty((len(labels), 48, 48), dtype=np.uint8)
    for s in range(0, len(labels), 1000):
        images[s:s + 1000] = _post(_render(params[s:s + 1000], rng), rng)
    return images, labels.astype(np.int64), split


README = """# Synthetic demo dataset (SYNTHETIC, not real faces)

`fer_demo_synthetic.csv` is generated by `python -m fer_core.data.demo` (generator version {v},
seed {seed}) in a few seconds: {n} cartoon faces, 48x48 grey, {k} per emotion for the 7 FER2013
emotions, in the FER2013 CSV format (`emotion,pixels,Usage`, ~80/10/10
Training/PublicTest/PrivateTest). Faces are drawn from facial geometry (mouth curve and opening,
brow height and tilt, eye opening) with identity, pose, lighting, blur, noise and occlusion
varied. It lets the app, the CLI and the tests run without FER2013; models trained on it do not
recognise real faces. The file is git-ignored and regenerated when missing or stale.
"""


def write_demo(path: Path, n_per_class: int = N_PER_CLASS, seed: int = SEED) -> Path:
    """Generate the demo set and write it atomically as a FER2013 CSV at ``path``."""
    from fer_core.data.fer2013 import to_csv_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images, labels, split = generate(n_per_class, seed)
    for name, data in ((path.name, to_csv_bytes(images, labels, split)),
                       ("README.md", README.format(v=VERSION, seed=seed, n=len(labels),
                                                   k=n_per_class).encode()),
                       (path.stem + ".version", f"{VERSION}\n".encode())):
        atomic.write_bytes(path.parent / name, data)
    return path


def ensure_demo() -> Path:
    """Path of the demo CSV, generating it if missing or made by another generator version."""
    path = demo_path()
    stamp = path.with_suffix(".version")
    try:
        current = path.exists() and stamp.read_text().strip() == str(VERSION)
    except OSError:
        current = False
    if not current:
        write_demo(path)
    return path


if __name__ == "__main__":
    print(ensure_demo())
