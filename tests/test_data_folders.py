"""Image-folder datasets: Kaggle layout, plain emotion folders, any size/colour, bad images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_core import data
from fer_core.data import folders
from fer_core.errors import FerError
from fer_core.labels import FER7, FERPLUS8


def _img(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_tree(root, spec, rng, ext=".png"):
    """spec: {relative folder: count}; images vary in size and colour."""
    for rel, n in spec.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = [(48, 48), (96, 80, 3), (30, 30), (64, 64, 4)][i % 4]
            cv2.imwrite(str(d / f"{i}{ext}"), _img(rng, shape))


def test_kaggle_layout(tmp_path):
    rng = np.random.default_rng(0)
    make_tree(tmp_path, {"train/angry": 20, "train/happy": 30, "test/angry": 4,
                         "test/happy": 5}, rng, ext=".jpg")
    ds = data.load(tmp_path, cache=False)
    assert ds.images.shape == (59, 48, 48) and ds.images.dtype == np.uint8
    assert ds.label_names == FER7 and ds.label_set == "fer7"
    c = ds.counts()
    assert c["test"]["per_class"]["angry"] == 4 and c["test"]["per_class"]["happy"] == 5
    assert c["val"]["per_class"]["angry"] == 2 and c["val"]["per_class"]["happy"] == 3
    assert c["train"]["total"] == 45
    again = data.load(tmp_path, cache=False)
    assert again.split.tolist() == ds.split.tolist()      # fixed seed


def test_plain_folders_synonyms_and_contempt(tmp_path):
    rng = np.random.default_rng(1)
    make_tree(tmp_path, {"Anger": 10, "happiness": 10, "contempt": 10}, rng)
    ds = data.load(tmp_path, cache=False)
    assert ds.label_names == FERPLUS8 and ds.label_set == "ferplus8"
    per = {s: ds.counts()[s]["per_class"] for s in ds.splits}
    assert per["train"]["anger"] == 8 and per["val"]["happiness"] == 1
    assert per["test"]["contempt"] == 1


def test_resize_keeps_content(tmp_path):
    (tmp_path / "sad").mkdir()
    big = np.zeros((200, 200, 3), dtype=np.uint8)
    big[:100] = 255                                  # top half white
    cv2.imwrite(str(tmp_path / "sad" / "a.png"), big)
    face = folders.read_face(tmp_path / "sad" / "a.png")
    assert face.shape == (48, 48) and face[:20].mean() > 240 and face[28:].mean() < 10


def test_unreadable_image(tmp_path):
    rng = np.random.default_rng(2)
    make_tree(tmp_path, {"fear": 5, "neutral": 5}, rng)
    bad = tmp_path / "fear" / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(FerError) as e:
        data.load(tmp_path, cache=False)
    assert str(bad) in str(e.value)
    ds = data.load(tmp_path, cache=False, strict=False)
    assert len(ds) == 10 and ds.skipped == [(str(bad), ds.skipped[0][1])]
    assert "cannot read image" in ds.skipped[0][1]


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FerError, match="no sub-folders"):
        data.load(tmp_path / "empty", cache=False)
    (tmp_path / "x" / "bananas").mkdir(parents=True)
    with pytest.raises(FerError, match="not an emotion"):
        data.load(tmp_path / "x", cache=False)
    (tmp_path / "y" / "happy").mkdir(parents=True)
    with pytest.raises(FerError, match="no images"):
        data.load(tmp_path / "y", cache=False)
