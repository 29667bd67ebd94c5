"""Statistics for the Dataset Explorer, pure NumPy: counts, mean faces, intensity histograms and
flagged images (blank/near-constant faces and exact duplicates, within and across splits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fer_core.data.dataset import SPLITS, Dataset

BLANK_STD = 5.0          # a face with pixel std below this is near-constant
BLANK_MODE_FRACTION = 0.9  # ... or one value covers at least this share of its pixels


@dataclass
class Flagged:
    """Images an analyst should look at.

    blank: indices of blank/near-constant images, with ``blank_reasons`` aligned to them;
    duplicate_groups: lists of indices of byte-identical images (2+ members each);
    cross_split_groups: the duplicate groups whose members span more than one split (leakage).
    """

    blank: np.ndarray
    blank_reasons: list[str]
    duplicate_groups: list[list[int]] = field(default_factory=list)
    cross_split_groups: list[list[int]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        within = [g for g in self.duplicate_groups if g not in self.cross_split_groups]
        return {"blank": int(len(self.blank)),
                "duplicate_groups": len(self.duplicate_groups),
                "duplicate_images": int(sum(len(g) for g in self.duplicate_groups)),
                "duplicates_across_splits": len(self.cross_split_groups),
                "duplicates_within_splits": len(within)}


def counts(ds: Dataset) -> dict[str, dict]:
    """{split: {"total": n, "per_class": {label: n}}} (same as ``ds.counts()``)."""
    return ds.counts()


def mean_faces(ds: Dataset, split: str | None = None, batch: int = 4096) -> dict[str, np.ndarray]:
    """Mean face per class as uint8 48x48 (a class with no faces gives a zero image)."""
    mask = ds.mask(split)
    k = ds.n_classes
    sums = np.zeros((k, 48, 48), dtype=np.uint64)
    for s in range(0, len(ds), batch):
        lab = ds.labels[s:s + batch]
        m = mask[s:s + batch]
        x = ds.images[s:s + batch]
        for c in np.unique(lab[m]).tolist():
            sums[c] += x[m & (lab == c)].sum(axis=0, dtype=np.uint64)
    n = np.bincount(ds.labels[mask], minlength=k)
    means = sums / np.maximum(n, 1)[:, None, None]
    return {name: np.clip(np.rint(means[i]), 0, 255).astype(np.uint8)
            for i, name in enumerate(ds.label_names)}


def histogram(ds: Dataset, split: str | None = None) -> np.ndarray:
    """Pixel intensity counts, 256 bins (int64), for one split or all."""
    sel = ds.mask(split)
    out = np.zeros(256, dtype=np.int64)
    for s in range(0, len(ds), 2048):               # small temporaries (bincount uses intp)
        x = ds.images[s:s + 2048][sel[s:s + 2048]]
        out += np.bincount(x.reshape(-1), minlength=256)
    return out


def histograms(ds: Dataset) -> dict[str, np.ndarray]:
    """{"all": hist, "train": hist, ...}."""
    out = {s: histogram(ds, s) for s in ds.splits}
    out["all"] = sum(out.values()) if out else np.zeros(256, dtype=np.int64)
    return out


def find_blank(images: np.ndarray, std_below: float = BLANK_STD,
               mode_fraction: float = BLANK_MODE_FRACTION,
               batch: int = 4096) -> tuple[np.ndarray, list[str]]:
    """Indices of near-constant images and the reason for each."""
    idx, reasons = [], []
    flat = images.reshape(len(images), -1)
    for s in range(0, len(flat), batch):
        x = flat[s:s + batch]
        std = x.std(axis=1, dtype=np.float32)
        cand = np.flatnonzero(std < 40)            # only low-contrast rows can qualify
        mode_share = np.zeros(len(x))
        if len(cand):
            offs = (np.arange(len(cand)) * 256)[:, None]
            hist = np.bincount((x[cand] + offs).ravel(), minlength=256 * len(cand))
            mode_share[cand] = hist.reshape(len(cand), 256).max(axis=1) / x.shape[1]
        for i in np.flatnonzero((std < std_below) | (mode_share >= mode_fraction)).tolist():
            idx.append(s + i)
            if std[i] < std_below:
                reasons.append(f"near-constant (pixel std {std[i]:.1f} < {std_below:g})")
            else:
                reasons.append(f"one grey value covers {mode_share[i]:.0%} of the pixels")
    return np.asarray(idx, dtype=np.int64), reasons


def find_duplicates(images: np.ndarray) -> list[list[int]]:
    """Groups (2+ indices, ascending) of byte-identical images, ordered by first index."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(flat):
        groups.setdefault(hashlib.blake2b(row.data, digest_size=16).digest(), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def flagged(ds: Dataset) -> Flagged:
    """Blank/near-constant images and exact duplicates (those spanning splits leak)."""
    blank, reasons = find_blank(ds.images)
    dups = find_duplicates(ds.images)
    cross = [g for g in dups if len(set(ds.split[g].tolist())) > 1]
    return Flagged(blank=blank, blank_reasons=reasons, duplicate_groups=dups,
                   cross_split_groups=cross)


def summary(ds: Dataset) -> dict:
    """Everything the explorer shows, JSON-friendly except the arrays."""
    return {"counts": ds.counts(), "flagged": flagged(ds).summary(),
            "splits": [s for s in SPLITS if s in ds.splits]}
