"""Explorer statistics on constructed data with planted blanks and duplicates, and on FER2013."""

from __future__ import annotations

import numpy as np

from fer_core import data
from fer_core.data import stats
from fer_core.data.dataset import Dataset
from fer_core.labels import FER7


def planted() -> Dataset:
    rng = np.random.default_rng(0)
    n = 60
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    labels = np.arange(n) % 7
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    images[3] = 128                                   # constant
    images[7] = 200
    images[7, 0, :10] = 0                             # 99.6% one value (std ~12)
    images[11] = 50 + rng.integers(0, 3, (48, 48))    # low std
    images[45] = images[5]                            # train/val leak
    images[55] = images[5]                            # ... and test
    images[20] = images[21]                           # duplicate within train
    return Dataset(images=images, labels=labels.astype(np.int64), split=split,
                   label_names=FER7, source="planted")


def test_flags_planted_blanks_and_duplicates():
    ds = planted()
    f = stats.flagged(ds)
    assert f.blank.tolist() == [3, 7, 11]
    assert "std" in f.blank_reasons[0] and "covers" in f.blank_reasons[1]
    assert f.duplicate_groups == [[5, 45, 55], [20, 21]]
    assert f.cross_split_groups == [[5, 45, 55]]
    assert f.summary() == {"blank": 3, "duplicate_groups": 2, "duplicate_images": 5,
                           "duplicates_across_splits": 1, "duplicates_within_splits": 1}


def test_mean_faces_and_histograms():
    ds = planted()
    means = stats.mean_faces(ds)
    assert set(means) == set(FER7) and means["angry"].dtype == np.uint8
    expect = ds.images[ds.labels == 2].astype(np.float64).mean(axis=0)
    assert np.abs(means["fear"].astype(float) - expect).max() <= 0.5
    train_means = stats.mean_faces(ds, "train")
    expect_t = ds.images[(ds.labels == 0) & (ds.split == "train")].mean(axis=0)
    assert np.abs(train_means["angry"] - expect_t).max() <= 0.5
    h = stats.histograms(ds)
    assert h["all"].shape == (256,) and h["all"].sum() == ds.images.size
    assert h["val"].sum() == 10 * 2304
    assert np.array_equal(h["all"], h["train"] + h["val"] + h["test"])
    assert np.array_equal(h["all"], np.bincount(ds.images.ravel(), minlength=256))
    assert stats.counts(ds)["train"]["total"] == 40


def test_fer2013_has_blanks_and_leaks(fer2013_path):
    ds = data.load(fer2013_path)
    f = stats.flagged(ds)
    s = f.summary()
    print("FER2013 flagged:", s)
    assert s["blank"] > 0
    for i in f.blank[:5]:
        assert ds.images[i].std() < 5 or np.bincount(ds.images[i].ravel()).max() > 0.9 * 2304
    for g in f.cross_split_groups[:5]:
        assert len(set(ds.split[g].tolist())) > 1
        assert all(np.array_equal(ds.images[g[0]], ds.images[j]) for j in g)
