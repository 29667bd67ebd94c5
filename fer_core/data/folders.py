"""Image folders: the Kaggle layout (``train/<emotion>/*``, ``test/<emotion>/*``) or plain
``<emotion>/*`` folders. Any image size or colour becomes a grey 48x48 face through the same
decode, grey and resize steps as inference (:mod:`fer_core.vision`).

Splits: ``test`` -> test; a stratified val split (fixed seed) is carved from ``train``; a folder
without a train/test layout gets a stratified train/val/test split (fixed seed). Emotion folder
names map through :func:`fer_core.labels.canonical` (angry/anger, happy/happiness, ...); the
label set is FER2013-7 unless a ``contempt`` folder appears (then FER+-8).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fer_core import labels as labelsets
from fer_core.data.dataset import Dataset
from fer_core.data.splits import SEED, stratified_split
from fer_core.errors import FerError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "validation": "val",
              "valid": "val", "test": "test", "testing": "test"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def _emotion_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _canonical(d: Path) -> str:
    try:
        return labelsets.canonical(d.name)
    except FerError:
        raise FerError(f"folder name {d.name!r} is not an emotion; expected one of "
                       "angry, disgust, fear, happy, sad, surprise, neutral, contempt "
                       "(or synonyms like anger, happiness)", where=str(d)) from None


def scan(root: Path) -> tuple[list[Path], list[str], list[str | None]]:
    """(image paths, canonical emotion per image, layout split per image or None)."""
    root = Path(root)
    subdirs = _emotion_dirs(root)
    if not subdirs:
        raise FerError("folder has no sub-folders; expected train/<emotion>/*.jpg, "
                       "test/<emotion>/* or <emotion>/*.jpg", where=str(root))
    layout = [d for d in subdirs if d.name.lower() in SPLIT_DIRS]
    paths, emotions, splits = [], [], []
    if layout:
        for sd in layout:
            for ed in _emotion_dirs(sd):
                emo = _canonical(ed)
                for p in _images_in(ed):
                    paths.append(p), emotions.append(emo), splits.append(
                        SPLIT_DIRS[sd.name.lower()])
    else:
        for ed in subdirs:
            emo = _canonical(ed)
            for p in _images_in(ed):
                paths.append(p), emotions.append(emo), splits.append(None)
    if not paths:
        raise FerError("no images found (expected .jpg/.png files in emotion folders)",
                       where=str(root))
    return paths, emotions, splits


def read_face(path: Path) -> np.ndarray | None:
    """Grey 48x48 uint8 from any image file through the inference path
    (:func:`fer_core.vision.decode_image` then :func:`fer_core.vision.whole_image_face`),
    or None when it is not a readable image."""
    from fer_core import vision

    try:
        return vision.whole_image_face(vision.decode_image(path))[0]
    except FerError:
        return None


def load(root: Path, strict: bool = True, val: float = 0.1, test: float = 0.1,
         seed: int = SEED, workers: int | None = None) -> Dataset:
    """Load an image-folder dataset. Unreadable images: FerError naming the image (strict),
    else skipped and listed in ``Dataset.skipped``."""
    root = Path(root)
    paths, emotions, layout = scan(root)
    names = labelsets.FERPLUS8 if "contempt" in emotions else labelsets.FER7
    canon = [labelsets.canonical(n) for n in names]
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:   # decoders release the GIL
        faces = list(pool.map(read_face, paths))
    skipped = []
    for p, f in zip(paths, faces):
        if f is None:
            if strict:
                raise FerError("cannot read image (corrupt or not an image file); "
                               "load with strict=False to skip it", where=str(p))
            skipped.append((str(p), "cannot read image (corrupt or not an image file)"))
    keep = [i for i, f in enumerate(faces) if f is not None]
    if not keep:
        raise FerError("no readable images", where=str(root))
    images = np.stack([faces[i] for i in keep])
    labels = np.asarray([canon.index(emotions[i]) for i in keep], dtype=np.int64)
    lay = [layout[i] for i in keep]
    if lay[0] is None:
        split = stratified_split(labels, val=val, test=test, seed=seed)
    else:
        split = np.asarray(lay, dtype="U5")
        train = np.flatnonzero(split == "train")
        if len(train) and not (split == "val").any():
            carved = stratified_split(labels[train], val=val, test=0.0, seed=seed)
            split[train] = carved
    return Dataset(images=images, labels=labels, split=split, label_names=names,
                   source=str(root), label_set="ferplus8" if "contempt" in emotions else "fer7",
                   skipped=skipped)
