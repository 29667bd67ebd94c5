"""Checks on uploaded image bytes before they are decoded (type, size, declared pixel count)
and the server-wide budget of pixels being decoded."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import re
import struct
import warnings

from fer_core.api.errors import ApiError

ALLOWED = ("jpeg", "png", "webp", "bmp")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.I)


def sniff(data: bytes) -> str:
    """The image type from its magic bytes, or ApiError 415."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if not data:
        raise ApiError("empty_file", "the image is empty (0 bytes)", 400)
    raise ApiError("unsupported_type",
                   f"not a supported image; expected one of {', '.join(ALLOWED)}", 415)


def declared_pixels(data: bytes) -> int | None:
    """Width x height from the file header (no decoding), or None if Pillow cannot tell."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])  # fast path: the common small crop upload
        return int(w) * int(h)
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except Image.DecompressionBombError:
            return 1 << 62
        except Exception:  # noqa: BLE001 - a broken header is reported by the decoder
            return None
    return int(w) * int(h)


def check_image(data: bytes, max_pixels: int, where: str = "image") -> str:
    """Type and declared pixel count check; returns the type."""
    kind = sniff(data)
    n = declared_pixels(data)
    if n is not None and n > max_pixels:
        raise ApiError("too_many_pixels",
                       f"{where}: the image declares {n} pixels; the limit is {max_pixels}",
                       413)
    return kind


def b64decode(text: str, where: str = "image_base64") -> bytes:
    if not isinstance(text, str):
        raise ApiError("bad_base64", f"{where}: expected a base64 string", 400)
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError("bad_base64", f"{where}: not valid base64 ({e})", 400) from None


class PixelBudget:
    """At most ``capacity`` decoded pixels in flight across the server.

    Each image holds its declared pixel count while it is decoded and its faces are cut; an
    image that does not fit waits until others finish. Create it inside the event loop that
    uses it (the app's lifespan).
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self.used = 0
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int | None):
        n = max(1, min(int(pixels or 1), self.capacity))
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.capacity)
            self.used += n
        try:
            yield
        finally:
            async with self._cond:
                self.used -= n
                self._cond.notify_all()
