"""The synthetic demo dataset: deterministic, balanced, learnable but not trivially."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fer_core import data
from fer_core.data import demo
from fer_core.labels import FER7


@pytest.fixture(scope="module")
def small():
    return demo.generate(n_per_class=150)


def test_deterministic_bytes(tmp_path):
    a = demo.write_demo(tmp_path / "a" / demo.FILENAME, n_per_class=30)
    b = demo.write_demo(tmp_path / "b" / demo.FILENAME, n_per_class=30)
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) > 100_000
    readme = (a.parent / "README.md").read_text()
    assert "SYNTHETIC" in readme


def test_counts_per_class_and_split(small):
    images, labels, split = small
    assert images.shape == (1050, 48, 48) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [150] * 7
    for c in range(7):
        s = split[labels == c]
        assert (s == "train").sum() == 120 and (s == "val").sum() == 15
        assert (s == "test").sum() == 15


def test_expressions_differ_in_the_expected_regions(small):
    images, labels, _ = small
    f = images.astype(np.float32)
    mean = {n: f[labels == FER7.index(n)].mean(axis=0) for n in FER7}
    # mouth corners (left/right of the mouth, slightly above its centre) are darker when
    # they curve up (happy) than when they curve down (sad)
    corners = (slice(30, 35), np.r_[15:20, 28:33])
    assert mean["happy"][corners].mean() < mean["sad"][corners].mean() - 2
    # surprise opens the mouth: the mouth centre is darker than in neutral
    centre = (slice(33, 38), slice(21, 27))
    assert mean["surprise"][centre].mean() < mean["neutral"][centre].mean() - 5
    # classes are not identical images
    assert np.abs(mean["angry"] - mean["fear"]).max() > 5


def test_learnable_but_not_trivial(small):
    import cv2
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    images, labels, split = small
    x = np.stack([cv2.resize(i, (16, 16), interpolation=cv2.INTER_AREA) for i in images])
    x = StandardScaler().fit_transform(x.reshape(len(x), -1).astype(np.float32))
    tr = split == "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=300, C=0.1).fit(x[tr], labels[tr])
    acc = clf.score(x[~tr], labels[~tr])
    assert 0.28 < acc < 0.95, acc        # chance is 1/7 = 0.14


def test_ensure_demo_generates_and_regenerates(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_DEMO_DIR", str(tmp_path))
    monkeypatch.setattr(demo, "N_PER_CLASS", 20)
    monkeypatch.setattr(demo.write_demo, "__defaults__", (20, demo.SEED))
    path = demo.ensure_demo()
    assert path == tmp_path / demo.FILENAME and path.exists()
    mtime = path.stat().st_mtime_ns
    assert demo.ensure_demo() == path and path.stat().st_mtime_ns == mtime   # up to date
    monkeypatch.setattr(demo, "VERSION", demo.VERSION + 1)
    demo.ensure_demo()
    assert path.with_suffix(".version").read_text().strip() == str(demo.VERSION)
    ds = data.load("demo", cache=False)
    assert ds.synthetic and "synthetic" in ds.source and len(ds) == 140
    assert set(ds.splits) == {"train", "val", "test"}
