"""Checks on uploaded image bytes before they are decoded (type, size, declared pixel count)
and the server-wide budget of pixels being decoded: :class:`PixelBudget` in one process,
:class:`SharedPixelBudget` across the worker processes of ``serve --workers N`` (or several
servers on one host) through a folder."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import io
import os
import re
import struct
import uuid
import warnings
from pathlib import Path

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


class SharedPixelBudget:
    """:class:`PixelBudget` shared by every process using the folder ``root``.

    Each image being decoded is a file ``<pid>-<id>-<pixels>.hold`` in ``root``; a process
    counts the holdings and adds its own under an exclusive ``flock`` on ``root/.budget.lock``
    (the same pattern as the video job slots), so N workers never hold more than ``capacity``
    pixels together. A holding whose process is gone (killed worker) is removed when counted.
    An image that does not fit waits: woken by a release in this process, else it looks again
    every ``poll`` seconds (a release in another process). One image larger than the capacity
    is let in alone, as in :class:`PixelBudget`."""

    LOCK = ".budget.lock"

    def __init__(self, capacity: int, root, poll: float = 0.02):
        self.capacity = max(1, int(capacity))
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.poll = poll
        self._cond = asyncio.Condition()

    @property
    def used(self) -> int:
        """Pixels held now by every live process sharing the folder."""
        with self._locked():
            return self._count()

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self.root / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a directory listing only
            yield
        finally:
            os.close(fd)

    def _count(self) -> int:
        used = 0
        for entry in os.scandir(self.root):
            if not entry.name.endswith(".hold"):
                continue
            pid, _, pixels = entry.name[:-5].split("-")
            if not _alive(int(pid)):
                Path(entry.path).unlink(missing_ok=True)  # its worker died holding it
                continue
            used += int(pixels)
        return used

    def _try_take(self, n: int) -> Path | None:
        with self._locked():
            used = self._count()
            if used and used + n > self.capacity:
                return None
            path = self.root / f"{os.getpid()}-{uuid.uuid4().hex}-{n}.hold"
            path.touch()
            return path

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int | None):
        n = max(1, min(int(pixels or 1), self.capacity))
        while (path := self._try_take(n)) is None:
            async with self._cond:
                try:
                    await asyncio.wait_for(self._cond.wait(), self.poll)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            async with self._cond:
                self._cond.notify_all()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    from fer_core.jobs import process_exists
    if pid == os.getpid():
        return True
    if not process_exists(pid):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill()


def decode_budget(capacity: int, shared_dir=None):
    """The app's decode budget: shared through ``shared_dir`` when given, else in memory."""
    return SharedPixelBudget(capacity, shared_dir) if shared_dir else PixelBudget(capacity)
