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


def tiny_model(n_classes: int = 7, softmax: bool = True, seed: int = 0):
    import keras
    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(n_classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out)
