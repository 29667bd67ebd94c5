"""Video files -> per-frame, per-face emotions: ``frames.csv``, ``summary.json``, an annotated copy.

    summary = analyze("interview.mp4", "out/", every=5, annotate=True, progress=print_progress)
    python -m fer_core video interview.mp4 --out out/ --every 5 --annotate --json

Decoding uses PyAV when it is installed (the ``[app]`` and ``[video]`` extras, and ``make``'s
full install), imported lazily inside this module's functions only (never at import time, so
importing ``fer_core.video`` in the app process loads no native video stack; importing ``av``
after TensorFlow is safe, unlike pylibsrtp). PyAV rather than OpenCV's ``VideoCapture`` because
it gives FFmpeg's error and the codec name for clear messages (no video stream, unsupported
codec, corrupt data skipped packet by packet), the luma plane without a colour conversion (the
detector and the model only need grey), and an H.264 encoder (libx264) for the annotated video,
which OpenCV's wheel does not ship. The runtime install (``pip install fer-studio``) leaves PyAV
out (-100 MB) and reads through OpenCV's own FFmpeg (:class:`_CvReader`: the same frames, each
frame's timestamp and the display rotation; coarser messages for files it cannot open) and
writes the annotated video as VP8 in WebM (:class:`_CvEncoder`, browser-playable).

The analysis reads as *reader -> step -> sinks* (:func:`process_video`): every frame is decoded
as grey (downscaled when larger than ``work_side``) and goes through the one per-frame face step
shared with the webcam (:class:`fer_core.tracking.FaceStep`): every ``every``-th frame is
*analysed* (faces detected with the ``video`` preset of the chosen detector, on the whole frame
about once every ``full_detection_s`` and around the tracked faces in between; classified in one
model call, aligned on the eyes; matched to tracks), and the frames in between follow each face
by template matching. A face missed for up to ``max_missing_s`` (1 s) keeps its id; a new track
counts once confirmed (found on 2 analysed frames), so a one-frame false box never becomes a
face in ``frames.csv`` or ``summary.json``. The sinks then write the CSV rows, the summary
statistics (each analysed label holds until the next analysed frame), the annotated video and
the progress. Memory is constant: one frame at a time (two with ``annotate``), rows streamed.

Outputs in ``out_dir`` (written as ``*.part`` and renamed when complete):

* ``frames.csv``: one row per face per analysed frame: ``frame, time_s, face`` (track id),
  ``x, y, w, h`` (pixels of the displayed, rotated video), ``emotion`` (argmax of the raw
  probabilities), one column per label (raw, per frame); with ``smoothing > 0`` also
  ``emotion_smoothed`` and ``<label>_smoothed`` (per-track exponential moving average).
* ``summary.json``: ``video`` (path, frames, fps, duration_s, width, height, codec, rotation),
  ``processing`` (seconds, frames_per_sec, every, smoothing, model, detector), ``faces`` (per
  confirmed track: id, first_s, last_s, frames, seconds, dominant, share of time per emotion; the smoothed
  emotion when smoothing > 0), ``warnings`` and ``outputs``.
* ``annotated.mp4`` (H.264; ``annotated.webm``, VP9, if libx264 is missing, VP8 without PyAV) with
  ``annotate=True``:
  boxes, labels and a per-face emotion timeline band under the picture.

Bad input raises :class:`FerError` naming the file: not a video, an image, no video stream, an
unsupported codec, zero frames, too long; a full disk removes the partial outputs. A truncated or
corrupt file keeps what was decoded: ``summary.warnings`` and ``video.stopped`` say where it
stopped. No face at all gives a header-only CSV and a summary whose ``faces`` is empty with a
warning that says so.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import importlib.util
import json
import os
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from fer_core import atomic
from fer_core.errors import FerError
from fer_core.tracking import FaceStep
from fer_core.vision import DetectorConfig

__all__ = ["analyze", "process_video", "probe", "run_job", "detector_config", "DEFAULT_EVERY",
           "WORK_SIDE", "FRAMES_CSV", "SUMMARY_JSON"]

DEFAULT_EVERY = 5
WORK_SIDE = 1280          # frames larger than this are downscaled (detection, crops, drawing)
FRAMES_CSV = "frames.csv"
SUMMARY_JSON = "summary.json"
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe",
                 "gif", "gif_pipe", "pgm_pipe", "ppm_pipe", "svg_pipe", "qoi_pipe")
_YUV8 = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
         "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray")
_LIMITED_TO_FULL = np.clip((np.arange(256) - 16) * 255.0 / 219.0 + 0.5, 0, 255).astype(np.uint8)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def detector_config(detector: str | None = None, **changes) -> DetectorConfig:
    """The ``video`` preset of ``detector`` (default: the default detector) for the CLI, app,
    API and benchmark: faces >= 40 px (Haar: on a <= 480 px copy, scale step 1.2)."""
    return DetectorConfig.preset("video", detector, **changes)


def _av():
    try:
        import av
    except ImportError:
        raise FerError("this needs PyAV, which the runtime install leaves out: "
                       "pip install 'fer-studio[video]'", where="video") from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own stderr chatter; errors still raise
    return av


def has_pyav() -> bool:
    """Whether PyAV is installed (else videos are read and written through OpenCV)."""
    return importlib.util.find_spec("av") is not None


def open_video(path, colour: bool = False, work_side: int = WORK_SIDE, name: str | None = None):
    """A reader of the video at ``path`` (see :class:`_Reader`): PyAV when installed, else
    OpenCV's own FFmpeg (:class:`_CvReader`)."""
    cls = _Reader if has_pyav() else _CvReader
    return cls(path, colour=colour, work_side=work_side, name=name)


def _av_error(av, e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).split(";")[0].strip()[:200]


# --------------------------------------------------------------------------- reading

class _VideoFile:
    """What both readers share: the checks of the path, the work copy of each frame (rotated
    as displayed, downscaled) and where a decode stopped early."""

    def _check_path(self, path, name, colour, work_side) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.where = name or str(self.path)
        if not self.path.exists():
            raise FerError("no such video file", where=self.where)
        if self.path.is_dir():
            raise FerError("is a folder, expected a video file", where=self.where)
        if self.path.stat().st_size == 0:
            raise FerError("empty file, expected a video (MP4, WebM, MOV, MKV, AVI)",
                           where=self.where)
        self.colour = colour
        self.work_side = int(work_side)
        self.rotation = 0
        self.scale = 1.0
        self.stopped: dict | None = None
        self.decode_errors = 0

    def _truncated(self) -> FerError:
        return FerError("truncated or unfinished MP4/MOV: its index ('moov' box) is missing, "
                        "so no frame can be located; remux or re-export it", where=self.where)

    def _is_mp4(self) -> bool:
        with open(self.path, "rb") as f:
            return f.read(12)[4:8] == b"ftyp"

    def _work_copy(self, index, grey, bgr, rot):
        """``grey`` and ``bgr`` as displayed (``rot``: counter-clockwise degrees still to turn)
        and downscaled; frame 0 sets the displayed size and the scale."""
        if rot:
            k = rot // 90
            grey = np.ascontiguousarray(np.rot90(grey, k))
            if bgr is not None:
                bgr = np.ascontiguousarray(np.rot90(bgr, k))
        if index == 0:
            h, w = grey.shape
            self.size = (w, h)
            self.scale = min(1.0, self.work_side / max(w, h))
        if self.scale < 1.0:
            size = (max(1, round(self.size[0] * self.scale)),
                    max(1, round(self.size[1] * self.scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            if bgr is not None:
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        return grey, bgr

    def _check_end(self, index, last_t, step) -> None:
        if self.stopped is None and self.declared_duration and last_t is not None:
            # demuxer ran out of data well before the declared end: a truncated file
            gap = self.declared_duration - (last_t + step)
            if gap > max(0.5, 3 * step):
                self._stop(index, last_t, "the file ends before its declared duration "
                           f"({self.declared_duration:.2f} s)")

    def _stop(self, index, last_t, reason):
        self.stopped = {"frame": index, "time_s": round(last_t or 0.0, 3), "reason": reason}


class _Reader(_VideoFile):
    """Opens a video with PyAV and yields ``(index, time_s, grey, bgr_or_None)``, one frame at
    a time.

    ``grey`` (and ``bgr`` with ``colour=True``) are rotated as displayed and downscaled so the
    longer side is <= ``work_side``; ``scale`` maps them back to the displayed size. After the
    loop ``stopped`` describes a decode that ended early (corrupt/truncated data), else None.
    """

    def __init__(self, path, colour: bool = False, work_side: int = WORK_SIDE,
                 name: str | None = None):
        self.av = av = _av()
        self._check_path(path, name, colour, work_side)
        try:
            self.container = av.open(str(self.path), "r", metadata_errors="ignore")
        except av.error.EOFError:
            raise FerError("no frames: the file ends before any video data (an empty or cut-off "
                           "recording)", where=self.where) from None
        except av.error.FFmpegError as e:
            if self._is_mp4():  # an MP4/MOV whose index (moov box) never got written
                raise self._truncated() from None
            raise FerError(f"not a video file FFmpeg can read ({_av_error(av, e)}); expected MP4, "
                           "WebM, MOV, MKV or AVI", where=self.where) from None
        try:
            self._check_and_describe(colour, work_side)
        except BaseException:
            self.container.close()
            raise

    def _check_and_describe(self, colour, work_side):
        c = self.container
        fmt = self.format = c.format.name
        if fmt in IMAGE_FORMATS or fmt.endswith("_pipe"):
            raise FerError(f"is an image ({fmt}), not a video; use predict for photos",
                           where=self.where)
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams}) or ["none"]
            raise FerError(f"has no video stream (streams: {', '.join(kinds)})",
                           where=self.where)
        s = self.stream = c.streams.video[0]
        cc = s.codec_context
        codec = (cc.name if cc is not None else None) or "unknown"
        self.codec = codec
        if cc is None or codec in ("none", "unknown"):
            tag = getattr(cc, "codec_tag", "") if cc is not None else ""
            raise FerError(f"unsupported video codec{f' {tag!r}' if tag else ''}: FFmpeg has no "
                           "decoder for it here; convert the file to H.264 MP4 or VP9 WebM",
                           where=self.where)
        s.thread_type = "AUTO"
        w, h = int(cc.width or 0), int(cc.height or 0)
        self.rate = float(s.average_rate or s.guessed_rate or s.base_rate or 0) or None
        self.start = (float(s.start_time * s.time_base)
                      if s.start_time is not None and s.time_base else 0.0)
        dur = None
        if s.duration and s.time_base:
            dur = float(s.duration * s.time_base)
        elif c.duration:
            dur = c.duration / 1_000_000
        self.declared_duration = dur
        n = int(s.frames or 0)
        if not n and dur and self.rate:
            n = int(round(dur * self.rate))
        self.declared_frames = n or None
        self.size = (w, h)          # displayed size, known for sure after the first frame

    def close(self):
        try:  # drain the decoder first: closing with frames in flight in its threads can hang
            for _ in self.stream.codec_context.decode(None):
                pass
        except Exception:  # noqa: BLE001
            pass
        try:
            self.container.close()
        except Exception:  # noqa: BLE001
            pass

    def _grey(self, frame):
        name = frame.format.name
        if name in _YUV8:
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            y = y[:frame.height, :frame.width]
            full = name.startswith("yuvj") or name == "gray" or frame.color_range == 2
            return y.copy() if full else cv2.LUT(y, _LIMITED_TO_FULL)
        return frame.to_ndarray(format="gray")

    def __iter__(self):
        av = self.av
        index, last_t = 0, None
        step = 1.0 / self.rate if self.rate else 1 / 30
        consecutive = 0
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                self._stop(index, last_t, _av_error(av, e))
                break
            try:
                frames = packet.decode()
                consecutive = 0
            except av.error.FFmpegError as e:
                self.decode_errors += 1
                consecutive += 1
                if consecutive >= 25 or (index == 0 and self.decode_errors >= 25):
                    self._stop(index, last_t, _av_error(av, e))
                    break
                continue
            for frame in frames:
                t = frame.time
                t = (t - self.start) if t is not None else (
                    0.0 if last_t is None else last_t + step)
                if last_t is not None and t <= last_t:
                    t = last_t + 1e-3  # keep time strictly increasing
                rot = int(getattr(frame, "rotation", 0) or 0) % 360
                if index == 0:
                    self.rotation = rot
                grey, bgr = self._work_copy(
                    index, self._grey(frame),
                    frame.to_ndarray(format="bgr24") if self.colour else None, rot)
                yield index, t, grey, bgr
                index += 1
                last_t = t
        self._check_end(index, last_t, step)


# FFmpeg's names of the codecs OpenCV reports as a FourCC
_FOURCC_CODECS = {"avc1": "h264", "h264": "h264", "x264": "h264", "hev1": "hevc", "hvc1": "hevc",
                  "hevc": "hevc", "vp80": "vp8", "vp90": "vp9", "av01": "av1", "mp4v": "mpeg4",
                  "fmp4": "mpeg4", "xvid": "mpeg4", "mjpg": "mjpeg", "mpng": "png"}


class _CvReader(_VideoFile):
    """:class:`_Reader` through OpenCV's own FFmpeg (``cv2.VideoCapture``), for the runtime
    install without PyAV: the same frames with each frame's timestamp (``CAP_PROP_POS_MSEC``)
    and the display rotation (applied by OpenCV); a file it cannot open gets one message (not a
    video it can decode, or an MP4 cut before its index), and a decode that stops early is
    found by comparing with the declared duration."""

    def __init__(self, path, colour: bool = False, work_side: int = WORK_SIDE,
                 name: str | None = None):
        self._check_path(path, name, colour, work_side)
        if cv2.haveImageReader(str(self.path)):
            raise FerError("is an image, not a video; use predict for photos", where=self.where)
        self.cap = cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            if self._is_mp4():
                raise self._truncated()
            raise FerError("not a video file FFmpeg can read here (no video stream it can "
                           "decode); expected MP4, WebM, MOV, MKV or AVI", where=self.where)
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
        tag = fourcc.decode("latin-1").strip("\0 ").lower()
        self.codec = _FOURCC_CODECS.get(tag, tag or "unknown")
        with open(self.path, "rb") as f:
            head = f.read(12)
        self.format = ("mov,mp4" if head[4:8] == b"ftyp" else "matroska,webm"
                       if head[:4] == b"\x1aE\xdf\xa3" else "avi" if head[8:12] == b"AVI "
                       else None)
        self.rate = float(cap.get(cv2.CAP_PROP_FPS) or 0) or None
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(n) if 0 < n < 1e12 else None
        self.declared_duration = (self.declared_frames / self.rate
                                  if self.declared_frames and self.rate else None)
        self.rotation = (-int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)) % 360
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),  # as displayed
                     int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def close(self):
        self.cap.release()

    def __iter__(self):
        index, last_t = 0, None
        step = 1.0 / self.rate if self.rate else 1 / 30
        while True:
            ok, bgr = self.cap.read()
            if not ok:
                break
            t = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if last_t is not None and t <= last_t:
                t = last_t + 1e-3  # keep time strictly increasing
            grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            grey, bgr = self._work_copy(index, grey, bgr if self.colour else None, 0)
            yield index, t, grey, bgr
            index += 1
            last_t = t
        self._check_end(index, last_t, step)


def probe(path, name: str | None = None) -> dict:
    """Header facts of a video without decoding it all: ``{"path", "format", "codec",
    "width", "height", "fps", "duration_s", "frames"}`` (None when the header does not say).
    FerError if it is not a readable video (see :class:`_Reader`)."""
    r = open_video(path, name=name)
    try:
        first = None
        for first in r:
            break
        if first is None:
            raise FerError("no frames: the video stream has nothing to decode"
                           + (f" ({r.stopped['reason']})" if r.stopped else ""), where=r.where)
        return {"path": str(r.path), "format": r.format, "codec": r.codec,
                "width": r.size[0], "height": r.size[1], "rotation": r.rotation,
                "fps": round(r.rate, 3) if r.rate else None,
                "duration_s": round(r.declared_duration, 3) if r.declared_duration else None,
                "frames": r.declared_frames}
    finally:
        r.close()


# --------------------------------------------------------------------------- writing

def _open_output(path: Path):
    """A text file for the CSV (a seam for tests that simulate a full disk)."""
    return open(path, "w", newline="", encoding="utf-8", buffering=1 << 16)


class _Encoder:
    """The annotated video: H.264 in MP4 (libx264), else VP9 in WebM; timestamps in ms."""

    def __init__(self, av, out_dir: Path, size, fps):
        self.av = av
        codecs = [("libx264", "mp4", {"preset": "veryfast", "crf": "26"}),
                  ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "crf": "36",
                                          "b": "0", "row-mt": "1"})]
        for codec, ext, opts in codecs:
            try:
                av.codec.Codec(codec, "w")
            except Exception:  # noqa: BLE001 - not in this FFmpeg build
                continue
            break
        else:
            raise FerError("cannot write an annotated video: this FFmpeg build has neither "
                           "libx264 nor libvpx-vp9", where="annotate")
        self.final = out_dir / f"annotated.{ext}"
        self.path = out_dir / f"annotated.{ext}.part"
        w, h = size
        self.w, self.h = w + (w % 2), h + (h % 2)
        self.out = av.open(str(self.path), "w", format=ext,
                           options={"movflags": "+faststart"} if ext == "mp4" else {})
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        self.stream = self.out.add_stream(codec, rate=rate, options=opts)
        self.stream.width, self.stream.height = self.w, self.h
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, 1000)
        self.last_pts = -1

    def write(self, bgr: np.ndarray, t: float) -> None:
        h, w = bgr.shape[:2]
        if (w, h) != (self.w, self.h):
            bgr = cv2.copyMakeBorder(bgr, 0, self.h - h, 0, self.w - w, cv2.BORDER_CONSTANT)
        frame = self.av.VideoFrame.from_ndarray(bgr, format="bgr24")
        pts = max(int(round(t * 1000)), self.last_pts + 1)
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self.last_pts = pts
        for packet in self.stream.encode(frame):
            self.out.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()

    def abort(self) -> None:
        self.out.close()


class _CvEncoder:
    """:class:`_Encoder` through OpenCV's FFmpeg (``cv2.VideoWriter``), for the runtime
    install without PyAV: VP8 in WebM (OpenCV's wheel has no H.264 encoder; VP8 plays in
    browsers and encodes about 4x faster than VP9 here). The writer has one constant frame rate
    (the video's, at most ``MAX_FPS``), so each frame is written into the slots its timestamp
    covers: a variable-frame-rate video (phones) keeps its timing, with a frame held while its
    source shows it and a frame dropped where two fall into one slot."""

    MAX_FPS = 60.0

    def __init__(self, out_dir: Path, size, fps):
        self.final = out_dir / "annotated.webm"
        self.path = out_dir / "annotated.part.webm"  # FFmpeg picks the container by suffix
        w, h = size
        self.w, self.h = w + (w % 2), h + (h % 2)
        self.fps = min(float(fps or 30.0), self.MAX_FPS)
        self.out = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG,
                                   cv2.VideoWriter_fourcc(*"VP80"), self.fps, (self.w, self.h))
        if not self.out.isOpened():
            raise FerError("cannot write an annotated video: OpenCV's FFmpeg has no VP8 "
                           "encoder here; pip install 'fer-studio[video]' for H.264",
                           where="annotate")
        self.t0: float | None = None
        self.written = 0        # slots filled so far
        self.pending = None     # the last frame, written once the next one says until when

    def write(self, bgr: np.ndarray, t: float) -> None:
        h, w = bgr.shape[:2]
        if (w, h) != (self.w, self.h):
            bgr = cv2.copyMakeBorder(bgr, 0, self.h - h, 0, self.w - w, cv2.BORDER_CONSTANT)
        if self.t0 is None:
            self.t0 = t
        slot = int(round((t - self.t0) * self.fps))
        if self.pending is not None:
            for _ in range(slot - self.written):  # none: this frame replaces it in its slot
                self.out.write(self.pending)
            self.written = max(self.written, slot)
        self.pending = bgr

    def close(self) -> None:
        if self.pending is not None:
            self.out.write(self.pending)
            self.pending = None
        self.out.release()
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise OSError(errno.EIO, "the video writer wrote nothing", str(self.path))

    def abort(self) -> None:
        self.pending = None
        self.out.release()


class _Timeline:
    """The emotion band drawn under each annotated frame: one row per face (first 4 faces),
    coloured by emotion from time 0 to the current time, with a cursor."""

    ROW = 10

    def __init__(self, width: int, duration: float | None, labels):
        from fer_core.drawing import emotion_colour
        self.width = width
        self.duration = duration if duration and duration > 0 else 60.0
        self.colours = [emotion_colour(lbl) for lbl in labels]
        self.rows: dict[int, int] = {}
        self.band = np.full((4 * self.ROW + 4, width, 3), 30, np.uint8)

    def mark(self, face: int, label: int, t: float) -> None:
        if face not in self.rows:
            if len(self.rows) >= 4:
                return
            self.rows[face] = len(self.rows)
        r = self.rows[face]
        x = int(min(self.width - 1, (t % self.duration) / self.duration * self.width))
        y0 = 2 + r * self.ROW
        self.band[y0:y0 + self.ROW - 2, max(0, x - 1):x + 2] = self.colours[label]

    def draw(self, img: np.ndarray, t: float) -> np.ndarray:
        band = self.band.copy()
        x = int(min(self.width - 1, (t % self.duration) / self.duration * self.width))
        band[:, x] = 255
        for face, r in self.rows.items():
            cv2.putText(band, f"#{face}", (2, 2 + r * self.ROW + 8), cv2.FONT_HERSHEY_PLAIN, 0.7,
                        (255, 255, 255), 1)
        return np.vstack([img, band])


# --------------------------------------------------------------------------- analysis

def _progress_every(interval: float = 0.5):
    last = [0.0]

    def due() -> bool:
        now = time.perf_counter()
        if now - last[0] >= interval:
            last[0] = now
            return True
        return False
    return due


def analyze(path, out_dir, *, predictor=None, model=None, every: int = DEFAULT_EVERY,
            smoothing: float = 0.0, annotate: bool = False, progress=None, should_stop=None,
            max_duration_s: float | None = None, name: str | None = None,
            work_side: int = WORK_SIDE, max_missing_s: float = 1.0,
            full_detection_s: float = 1.0, detector: str | None = None) -> dict:
    """Analyse the video at ``path``; writes ``frames.csv``, ``summary.json`` (and
    ``annotated.*``) into ``out_dir`` and returns the summary (see the module docstring).

    ``predictor``: a :class:`fer_core.predict.Predictor` (else one is made from ``model`` with
    the video preset of ``detector``). ``progress(done, total, fps=..., time_s=...)`` is called
    about twice a second (``total`` may be None); ``should_stop()`` True ends the analysis early
    with the outputs of what was analysed. ``name`` is the file name shown in messages and the
    summary (uploads). ``max_duration_s`` refuses longer videos. A face missed for up to
    ``max_missing_s`` keeps its id (:mod:`fer_core.tracking`).
    """
    if int(every) < 1:
        raise FerError(f"must be >= 1 frame, got {every}", where="every")
    if not 0.0 <= float(smoothing) < 1.0:
        raise FerError(f"must be in [0, 1), got {smoothing}", where="smoothing")
    out_dir = Path(os.path.expanduser(str(out_dir)))
    if out_dir.exists() and not out_dir.is_dir():
        raise FerError("exists and is not a folder", where=str(out_dir))
    cfg = detector_config(detector) if predictor is None else None
    reader = open_video(path, colour=bool(annotate), work_side=work_side, name=name)
    where = reader.where
    try:
        if (max_duration_s and reader.declared_duration
                and reader.declared_duration > max_duration_s):
            raise FerError(f"video is {reader.declared_duration:.1f} s long; the limit is "
                           f"{max_duration_s:g} s", where=where, status=413)
        if predictor is None:
            from fer_core.predict import Predictor
            predictor = Predictor(model, detector_config=cfg)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FerError(f"cannot create the output folder ({e.strerror or e})",
                           where=str(out_dir)) from None
        rate = reader.rate or 30.0
        every = int(every)
        step = FaceStep(predictor, every=every, smoothing=float(smoothing), follow=True,
                        full_every=every * max(1, int(round(rate * full_detection_s / every))),
                        max_missing=max(every, int(round(max_missing_s * rate))))
        labels = list(predictor.labels)
        state = {"frames": 0, "last_t": 0.0}
        try:
            sinks = [_CsvSink(out_dir, labels, smoothing > 0), _SummarySink(labels)]
            if annotate:
                sinks.append(_AnnotatedSink(reader, out_dir, labels))
            if progress is not None:
                sinks.append(_ProgressSink(progress, reader.declared_frames))
            run = process_video(reader, step, sinks, should_stop, max_duration_s, where, state)
        except OSError as e:
            _cleanup(out_dir)
            if e.errno in _DISK_FULL:
                raise FerError(f"disk full after {state['frames']} frames "
                               f"({state['last_t']:.1f} s of the video); the partial outputs "
                               "were removed; free some space and run again",
                               where=str(out_dir), status=507) from None
            raise FerError(f"cannot write the outputs ({e.strerror or e})",
                           where=str(out_dir)) from None
        except BaseException:
            _cleanup(out_dir)
            raise
        return _finish(reader, out_dir, predictor, run, sinks, every, float(smoothing), where)
    finally:
        reader.close()


# --------------------------------------------------------------------------- reader -> step -> sinks

def process_video(reader, step, sinks, should_stop=None, max_duration_s=None,
                  where: str = "video", state: dict | None = None) -> dict:
    """The analysis loop: each frame of ``reader`` goes through ``step(frame, index)`` (detect,
    classify, track: :class:`fer_core.tracking.FaceStep`) and then to every sink's
    ``frame(index, t, frame, faces, analysed, scale)``; then each sink's ``close(t_end)``. On
    any error every sink is ``abort()``-ed and the error re-raised. ``state`` (a dict) is kept
    up to date with ``frames`` and ``last_t`` (for the caller's error messages)."""
    state = {} if state is None else state
    n_frames, last_t = 0, 0.0
    warnings: list[str] = []
    stopped_by_user = None
    t0 = time.perf_counter()
    try:
        for index, t, grey, bgr in reader:
            if max_duration_s and t > max_duration_s:
                warnings.append(f"stopped at the {max_duration_s:g} s limit")
                break
            if should_stop is not None and index % 8 == 0 and should_stop():
                stopped_by_user = {"frame": index, "time_s": round(t, 3)}
                break
            faces = step(grey, index)
            analysed = step.analysed(index)
            inv = 1.0 / reader.scale  # work copy -> displayed pixels (known from frame 0)
            for sink in sinks:
                sink.frame(index, t, bgr, faces, analysed, inv)
            last_t = t
            n_frames = index + 1
            state["frames"], state["last_t"] = n_frames, last_t
        if n_frames == 0 and not stopped_by_user:
            raise FerError("no frames: the video stream has nothing to decode"
                           + (f" ({reader.stopped['reason']})" if reader.stopped else ""),
                           where=where)
        t_end = last_t + 1.0 / (reader.rate or 30.0)
        for sink in sinks:
            sink.close(t_end, n_frames, last_t)
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return {"frames": n_frames, "last_t": last_t, "warnings": warnings,
            "stopped_by_user": stopped_by_user, "seconds": time.perf_counter() - t0}


class _CsvSink:
    """``frames.csv``: one row per confirmed face per analysed frame (streamed, ``.part``)."""

    def __init__(self, out_dir: Path, labels, smoothed: bool):
        self.final, self.part = out_dir / FRAMES_CSV, out_dir / (FRAMES_CSV + ".part")
        self.labels, self.smoothed = labels, smoothed
        self.rows = 0
        self.fh = _open_output(self.part)
        self.writer = csv.writer(self.fh, lineterminator="\n")
        header = ["frame", "time_s", "face", "x", "y", "w", "h", "emotion", *labels]
        if smoothed:
            header += ["emotion_smoothed", *(f"{lbl}_smoothed" for lbl in labels)]
        self.writer.writerow(header)

    def frame(self, index, t, bgr, faces, analysed, inv):
        if not analysed:
            return
        for f in faces:
            raw = f.raw
            row = [index, f"{t:.3f}", f.id, *(int(round(v * inv)) for v in f.box),
                   self.labels[int(np.argmax(raw))], *(f"{float(v):.5f}" for v in raw)]
            if self.smoothed:
                row += [f.emotion, *(f"{float(v):.5f}" for v in f.probs)]
            self.writer.writerow(row)
            self.rows += 1

    def close(self, t_end, n_frames, last_t):
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None

    def commit(self):
        os.replace(self.part, self.final)

    def abort(self):
        if self.fh is not None:
            with contextlib.suppress(Exception):  # the disk may still be full
                self.fh.close()


class _FaceStats:
    __slots__ = ("id", "first", "last", "frames", "time")

    def __init__(self, fid, t, n_labels):
        self.id, self.first, self.last, self.frames = fid, t, t, 0
        self.time = np.zeros(n_labels)


class _SummarySink:
    """Per confirmed face: first/last seen, analysed frames, and the time per emotion (each
    analysed label holds until the next analysed frame)."""

    def __init__(self, labels):
        self.labels = labels
        self.stats: dict[int, _FaceStats] = {}
        self.pending: list[tuple[int, int]] = []
        self.prev_t: float | None = None

    def _settle(self, t_next):
        if self.prev_t is None:
            return
        dt = max(0.0, t_next - self.prev_t)
        for fid, lab in self.pending:
            self.stats[fid].time[lab] += dt

    def frame(self, index, t, bgr, faces, analysed, inv):
        if not analysed:
            return
        self._settle(t)
        self.prev_t, self.pending = t, []
        for f in faces:
            st = self.stats.get(f.id)
            if st is None:
                st = self.stats[f.id] = _FaceStats(f.id, t, len(self.labels))
            st.last, st.frames = t, st.frames + 1
            self.pending.append((f.id, int(np.argmax(f.probs))))

    def close(self, t_end, n_frames, last_t):
        self._settle((self.prev_t or 0.0) + (t_end - last_t))

    def abort(self):
        pass

    def faces(self) -> list[dict]:
        out = []
        for st in sorted(self.stats.values(), key=lambda s: s.id):
            total_t = float(st.time.sum())
            share = st.time / total_t if total_t > 0 else st.time
            out.append({"id": st.id, "first_s": round(st.first, 3), "last_s": round(st.last, 3),
                        "frames": st.frames, "seconds": round(total_t, 3),
                        "dominant": self.labels[int(np.argmax(st.time))],
                        "share": {lbl: round(float(v), 4) for lbl, v in zip(self.labels, share)}})
        return out


class _AnnotatedSink:
    """``annotated.mp4``: every frame with its faces drawn and the emotion timeline band."""

    def __init__(self, reader, out_dir: Path, labels):
        self.reader, self.out_dir, self.labels = reader, out_dir, labels
        self.encoder: _Encoder | None = None
        self.timeline: _Timeline | None = None
        self.marks: list[tuple[int, int]] = []

    def frame(self, index, t, bgr, faces, analysed, inv):
        from fer_core.drawing import annotate
        if self.encoder is None:
            size = (bgr.shape[1], bgr.shape[0] + 44)
            self.encoder = (_Encoder(self.reader.av, self.out_dir, size, self.reader.rate)
                            if isinstance(self.reader, _Reader)
                            else _CvEncoder(self.out_dir, size, self.reader.rate))
            self.timeline = _Timeline(bgr.shape[1], self.reader.declared_duration, self.labels)
        if analysed:
            self.marks = [(f.id, int(np.argmax(f.probs))) for f in faces]
        img = annotate(bgr, faces, "box")
        for fid, lab in self.marks:
            self.timeline.mark(fid, lab, t)
        self.encoder.write(self.timeline.draw(img, t), t)

    def close(self, t_end, n_frames, last_t):
        if self.encoder is not None:
            self.encoder.close()

    def abort(self):
        if self.encoder is not None:
            with contextlib.suppress(Exception):  # the disk may still be full
                self.encoder.abort()

    def commit(self):
        if self.encoder is not None:
            os.replace(self.encoder.path, self.encoder.final)


class _ProgressSink:
    """Calls ``progress(done, total, fps=..., time_s=...)`` about twice a second, and once at
    the end with done == total."""

    def __init__(self, progress, total):
        self.progress, self.total = progress, total
        self.due = _progress_every()
        self.t0 = time.perf_counter()

    def _fps(self, n):
        el = time.perf_counter() - self.t0
        return round(n / el, 1) if el > 0 else None

    def frame(self, index, t, bgr, faces, analysed, inv):
        if self.due():
            self.progress(index + 1, self.total, fps=self._fps(index + 1), time_s=round(t, 3))

    def close(self, t_end, n_frames, last_t):
        if n_frames:
            self.progress(n_frames, n_frames, fps=self._fps(n_frames), time_s=round(last_t, 3))

    def abort(self):
        pass


def _finish(reader, out_dir, predictor, run, sinks, every, smoothing, where) -> dict:
    """summary.json from the sinks; the outputs renamed into place (atomic)."""
    csv_sink, summary_sink = sinks[0], sinks[1]
    video_sink = next((s for s in sinks if isinstance(s, _AnnotatedSink)), None)
    encoder = video_sink.encoder if video_sink is not None else None
    labels = list(predictor.labels)
    n_frames, last_t, elapsed = run["frames"], run["last_t"], run["seconds"]
    rate = reader.rate or 30.0
    warnings = list(run["warnings"])
    if reader.stopped:
        s = reader.stopped
        warnings.append(f"decoding stopped at frame {s['frame']} ({s['time_s']:.2f} s): "
                        f"{s['reason']}; the outputs cover what was decoded")
    if reader.decode_errors and not reader.stopped:
        warnings.append(f"{reader.decode_errors} damaged packets were skipped")
    stopped_by_user = run["stopped_by_user"]
    if stopped_by_user:
        warnings.append(f"stopped on request at frame {stopped_by_user['frame']} "
                        f"({stopped_by_user['time_s']:.2f} s)")
    faces = summary_sink.faces()
    if not faces:
        warnings.append(f"no face found in {n_frames} frames")
    det = getattr(predictor, "detector_config", None)
    summary = {
        "video": {"path": where, "frames": n_frames,
                  "fps": round(reader.rate, 3) if reader.rate else None,
                  "duration_s": round(last_t + 1.0 / rate, 3), "width": reader.size[0],
                  "height": reader.size[1], "codec": reader.codec, "rotation": reader.rotation,
                  "declared_duration_s": (round(reader.declared_duration, 3)
                                          if reader.declared_duration else None),
                  "stopped": reader.stopped},
        "processing": {"seconds": round(elapsed, 3),
                       "frames_per_sec": round(n_frames / elapsed, 1) if elapsed > 0 else None,
                       "every": every, "smoothing": smoothing, "rows": csv_sink.rows,
                       "work_scale": round(reader.scale, 4),
                       "stopped_by_user": stopped_by_user,
                       "model": getattr(predictor, "model_id", None),
                       "detector": det.kind if det is not None else None,
                       "labels": labels},
        "faces": faces,
        "warnings": warnings,
        "outputs": {"frames_csv": FRAMES_CSV,
                    "annotated": encoder.final.name if encoder is not None else None},
    }
    try:
        csv_sink.commit()
        if video_sink is not None:
            video_sink.commit()
        atomic.write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    except OSError as e:
        _cleanup(out_dir, final=True)
        if e.errno in _DISK_FULL:
            raise FerError("disk full while writing the summary; the partial outputs were "
                           "removed; free some space and run again", where=str(out_dir),
                           status=507) from None
        raise FerError(f"cannot write the outputs ({e.strerror or e})",
                       where=str(out_dir)) from None
    return summary


def _cleanup(out_dir: Path, final: bool = False) -> None:
    names = [FRAMES_CSV + ".part", "annotated.mp4.part", "annotated.webm.part",
             "annotated.part.webm"]
    if final:
        names += [FRAMES_CSV, "annotated.mp4", "annotated.webm", SUMMARY_JSON]
    for n in names:
        try:
            (out_dir / n).unlink()
        except OSError:
            pass


# --------------------------------------------------------------------------- job

def run_job(spec: dict, ctx) -> dict:
    """The "video" job (``fer_core.jobs``): ``spec`` = ``{"input": path, "out_dir": path
    (default the job dir), "name", "model", "every", "smoothing", "annotate",
    "max_duration_s", "detector"}``; progress events go to ``ctx``; returns the summary."""
    out_dir = Path(spec.get("out_dir") or ctx.job_dir)

    def progress(done, total, fps=None, **extra):
        ctx.progress(done, total, rate=fps, unit="frame", **extra)

    summary = analyze(spec["input"], out_dir, model=spec.get("model"),
                      every=int(spec.get("every") or DEFAULT_EVERY),
                      smoothing=float(spec.get("smoothing") or 0.0),
                      annotate=bool(spec.get("annotate")), progress=progress,
                      should_stop=ctx.stop_requested, name=spec.get("name"),
                      max_duration_s=spec.get("max_duration_s"), detector=spec.get("detector"))
    return summary
