"""Photos: decode (size-checked), detect, classify and annotate one uploaded image, and the
per-face table of several. Used by the Photo page; UI-free."""

from __future__ import annotations

from dataclasses import dataclass

from fer_core.errors import FerError

MAX_PHOTO_MB = 20
MAX_PHOTO_PIXELS = 40_000_000


@dataclass
class PhotoResult:
    name: str
    annotated: object          # BGR uint8 array
    faces: list                # fer_core.predict.FacePrediction

    def png(self) -> bytes:
        import cv2
        ok, buf = cv2.imencode(".png", self.annotated)
        if not ok:
            raise FerError("could not encode the annotated image", where=self.name)
        return buf.tobytes()


def analyse_photo(name: str, data: bytes, predictor, mode: str = "box",
                  tta: bool | None = None) -> PhotoResult:
    """Decode (size-checked), detect, classify and annotate one uploaded photo (``tta``: each
    face averaged with its mirror image; None: the predictor's default).

    Raises FerError for a file above MAX_PHOTO_MB / MAX_PHOTO_PIXELS or anything not an image.
    """
    from fer_core import vision
    from fer_core.drawing import annotate

    if len(data) > MAX_PHOTO_MB * 2**20:
        raise FerError(f"file is {len(data) / 2**20:.1f} MB; photos up to {MAX_PHOTO_MB} MB "
                       "are accepted", where=name)
    image = vision.decode_image(data, max_pixels=MAX_PHOTO_PIXELS, name=name)
    faces = predictor.predict_image(image, tta=tta)
    return PhotoResult(name, annotate(image, faces, mode=mode), faces)


def photo_rows(results: list[PhotoResult]) -> list[dict]:
    """One row per face: image, face, box, emotion, confidence, one column per class."""
    rows = []
    for r in results:
        for i, f in enumerate(r.faces, 1):
            x, y, w, h = f.box
            rows.append({"image": r.name, "face": i, "x": x, "y": y, "w": w, "h": h,
                         "emotion": f.emotion, "confidence": round(f.confidence, 4),
                         **{k: round(v, 4) for k, v in f.scores.items()}})
    return rows
