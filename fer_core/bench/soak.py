"""Soak test of one ``serve``: mixed traffic from 8 clients for minutes; errors, latency, RSS.

Starts ``python -m fer_core serve`` on a free loopback port (its own video folder and feedback
database), then:

1. **memory burst** (``--burst-rounds``, default 3): rounds of 4 concurrent batches of 16
   truncated PNGs whose headers say 6300x6300 16-bit RGBA (77 KB each), then ``--idle-seconds``
   (default 30) idle; reports RSS idle before, peak, and after the idle wait (issue 25's
   targets: peak <= 1.5 GB above idle, back within 300 MB of idle);
2. **soak** (``--minutes``, default 10): 8 keep-alive clients: photos (detect), face crops,
   batches of 8, feedback writes, one video job at a time (upload, poll to the end), and a
   stream of bad inputs (thin images, truncated 16-bit PNGs, a non-image, bad JSON). Reports
   requests, answers by status, p50/p99 latency (ms), server RSS at start, after the first
   minute, at the end of each minute, peak, end (2 s after the last request) and after 12 s
   idle (the server trims its heap after 5 s idle). Pass: no 5xx, and end RSS within 10 % of
   the one-minute value.

Not part of ``make test``; the machine's other load changes the latencies (the load average is
reported).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from fer_core.bench.api import _free_port, _multipart, _wait_ready
from fer_core.settings import child_env


def add_arguments(p) -> None:
    p.add_argument("--minutes", type=float, default=10.0,
                   help="soak duration (default 10; 0: the memory burst only)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--burst-rounds", type=int, default=3,
                   help="rounds of the memory burst before the soak (default 3; 0 = none)")
    p.add_argument("--idle-seconds", type=float, default=30.0,
                   help="idle wait after the burst before RSS is read again (default 30)")
    p.add_argument("--burst-image", choices=("truncated", "valid"), default="truncated",
                   help="burst with the truncated 16-bit PNGs (default) or valid 6000x6000 JPEGs")
    p.add_argument("--workers", type=int, default=1, help="serve --workers (default 1)")
    p.add_argument("--model", default=None, help="model to serve (default: the shipped one)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server (e.g. MALLOC_ARENA_MAX=2)")


# ----------------------------------------------------------------------------- inputs

def truncated_png(width: int = 6300, height: int = 6300, target_bytes: int = 77_000) -> bytes:
    """A PNG whose header says ``width`` x ``height`` 16-bit RGBA but whose image data stops
    after about ``target_bytes`` (the issue's 77 KB file): decoders allocate the full image,
    then fail."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    rng = np.random.default_rng(0)
    rows = np.zeros((64, 1 + width * 8), np.uint8)  # filter byte 0, then 16-bit RGBA pixels
    rows[:, 1:] = rng.integers(0, 4, (64, width * 8), dtype=np.uint8)
    idat = zlib.compress(rows.tobytes(), 9)[:target_bytes]  # the stream just stops
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


def _png(w: int, h: int) -> bytes:
    import cv2
    return cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


class Inputs:
    def __init__(self, tmp: Path):
        import cv2

        from fer_core.bench.api import face_photo
        from fer_core.synthetic import synthetic_clip
        self.photo = cv2.imencode(".jpg", face_photo())[1].tobytes()
        self.crop = cv2.imencode(".png", cv2.resize(
            cv2.cvtColor(face_photo(), cv2.COLOR_BGR2GRAY)[160:320, 240:400], (48, 48)))[1].tobytes()
        self.bomb = truncated_png()
        ramp = np.broadcast_to(np.linspace(0, 255, 6000, dtype=np.uint8)[None, :, None],
                               (6000, 6000, 3))
        self.big = cv2.imencode(".jpg", np.ascontiguousarray(ramp))[1].tobytes()  # ~0.3 MB
        self.thin = [_png(w, h) for w, h in ((641, 1), (700, 1), (2000, 3), (20000, 1),
                                             (1, 20000))]
        self.clip = synthetic_clip(tmp / "clip.mp4", seconds=2.0).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- RSS

def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its worker processes (``serve --workers N``), in MB;
    video job processes (own sessions) are not counted."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for k in map(int, kids):
        try:
            if os.getsid(k) == os.getsid(pid):  # not a video job (new session)
                out += [k, *_children(k)]
        except OSError:
            pass
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = self.last = rss_mb(pid)
        self._stop = threading.Event()

    def run(self):
        while not self._stop.wait(self.every):
            self.last = rss_mb(self.pid)
            self.peak = max(self.peak, self.last)

    def reset_peak(self) -> None:
        self.peak = self.last = rss_mb(self.pid)

    def stop(self):
        self._stop.set()


# ----------------------------------------------------------------------------- traffic

class Client:
    """A keep-alive connection that records (kind, status, seconds) per request."""

    def __init__(self, port: int, log: list):
        self.port, self.log = port, log
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def request(self, kind: str, method: str, path: str, body=None, ctype=None):
        headers = {"Content-Type": ctype} if ctype else {}
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body, headers)
            r = self.conn.getresponse()
            data = r.read()
            status = r.status
            if r.getheader("connection", "").lower() == "close":
                self._reconnect()
        except (OSError, http.client.HTTPException):
            status, data = 0, b""  # connection failure
            self._reconnect()
        self.log.append((kind, status, time.perf_counter() - t0))
        return status, data

    def _reconnect(self):
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def close(self):
        self.conn.close()


def burst(port: int, inputs: Inputs, rounds: int, log: list, valid: bool = False) -> None:
    """Rounds of 4 concurrent batches of 16 truncated 16-bit RGBA PNGs (or valid 6000x6000
    JPEGs)."""
    body, ctype = _batch(inputs.big if valid else inputs.bomb, 16)
    for _ in range(rounds):
        threads = [threading.Thread(target=lambda: Client(port, log).request(
            "burst", "POST", "/v1/predict/batch", body, ctype)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _batch(image: bytes, n: int) -> tuple[bytes, str]:
    return json.dumps({"images_base64": [_b64(image)] * n}).encode(), "application/json"


def _mixed(c: Client, inputs: Inputs, rng: random.Random, pids: list) -> None:
    kind = rng.choice(("photo", "crop", "crop", "batch", "feedback"))
    if kind == "photo":
        c.request(kind, "POST", "/v1/predict", *_multipart("file", "p.jpg", inputs.photo,
                                                            "image/jpeg"))
    elif kind == "crop":
        c.request(kind, "POST", "/v1/predict?detect=false",
                  *_multipart("file", "c.png", inputs.crop, "image/png"))
    elif kind == "batch":
        c.request(kind, "POST", "/v1/predict/batch", *_batch(inputs.photo, 8))
    else:
        status, data = c.request("predict_for_feedback", "POST", "/v1/predict?detect=false",
                                 *_multipart("file", "c.png", inputs.crop, "image/png"))
        if status == 200 and json.loads(data)["faces"]:
            pid = json.loads(data)["faces"][0]["prediction_id"]
            c.request("feedback", "POST", "/v1/feedback",
                      json.dumps({"label": rng.choice(("happy", "sad", "neutral")),
                                  "prediction_id": pid}).encode(), "application/json")


def _bad(c: Client, inputs: Inputs, rng: random.Random) -> None:
    choice = rng.randrange(6)
    if choice == 0:
        c.request("bad_thin", "POST", "/v1/predict", *_multipart(
            "file", "thin.png", rng.choice(inputs.thin), "image/png"))
    elif choice == 1:
        c.request("bad_truncated", "POST", "/v1/predict", *_multipart(
            "file", "big.png", inputs.bomb, "image/png"))
    elif choice == 2:
        c.request("bad_batch", "POST", "/v1/predict/batch", json.dumps({"images_base64": [
            _b64(inputs.photo), _b64(inputs.bomb), *map(_b64, inputs.thin), "@@"]}).encode(),
            "application/json")
    elif choice == 3:
        c.request("bad_not_image", "POST", "/v1/predict", *_multipart(
            "file", "x.png", b"not an image at all", "image/png"))
    elif choice == 4:
        c.request("bad_json", "POST", "/v1/predict", b"{\"image_base64\": ", "application/json")
    else:
        c.request("bad_feedback_thin", "POST", "/v1/feedback", json.dumps(
            {"label": "happy", "image_base64": _b64(rng.choice(inputs.thin))}).encode(),
            "application/json")


def _video(c: Client, inputs: Inputs, stop_at: float) -> None:
    status, data = c.request("video_upload", "POST", "/v1/videos",
                             *_multipart("file", "clip.mp4", inputs.clip, "video/mp4"))
    if status != 202:
        time.sleep(1.0)
        return
    vid = json.loads(data)["id"]
    while time.perf_counter() < stop_at + 120:
        status, data = c.request("video_status", "GET", f"/v1/videos/{vid}")
        if status != 200 or json.loads(data)["status"] not in ("queued", "running"):
            return
        time.sleep(0.5)


def soak(port: int, inputs: Inputs, clients: int, seconds: float, log: list,
         sampler: RssSampler) -> dict:
    stop_at = time.perf_counter() + seconds

    def client(i: int):
        rng = random.Random(i)
        c = Client(port, log)
        while time.perf_counter() < stop_at:
            if i == 0:
                _video(c, inputs, stop_at)
            elif i == 1:
                _bad(c, inputs, rng)
            else:
                _mixed(c, inputs, rng, [])
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    first_minute = None
    by_minute: list[float] = []  # RSS at the end of each minute
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        if first_minute is None and elapsed >= min(60.0, seconds / 2):
            first_minute = sampler.last
        if elapsed >= 60.0 * (len(by_minute) + 1):
            by_minute.append(round(sampler.last, 1))
    for t in threads:
        t.join()
    return {"rss_after_first_minute_mb": round(first_minute or sampler.last, 1),
            "rss_by_minute_mb": by_minute}


def _summary(log: list) -> dict:
    if not log:
        return {"requests": 0}
    lat = np.asarray([s for _, _, s in log]) * 1000
    by_status = Counter(str(st) for _, st, _ in log)
    by_kind = Counter(k for k, _, _ in log)
    return {"requests": len(log), "by_status": dict(sorted(by_status.items())),
            "by_kind": dict(sorted(by_kind.items())),
            "server_errors_5xx": sum(n for st, n in by_status.items() if st.startswith("5")),
            "connection_failures": by_status.get("0", 0),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def run(args) -> dict:
    from fer_core.errors import FerError
    if not 0 <= args.minutes <= 24 * 60:
        raise FerError(f"expected 0..1440 minutes (0: the burst only), got {args.minutes}",
                       where="--minutes")
    if not 3 <= args.clients <= 64:
        raise FerError(f"expected 3..64 clients, got {args.clients}", where="--clients")
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise FerError(f"expected NAME=VALUE, got {item!r}", where="--env")
        extra[name] = value
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="fer-soak-") as tmp:
        tmp = Path(tmp)
        inputs = Inputs(tmp)
        port = _free_port()
        env = child_env({"TF_CPP_MIN_LOG_LEVEL": "2", "FER_API_KEY": "",
                         "FER_VIDEO_DIR": str(tmp / "videos"), "FER_VIDEO_MAX_JOBS": "1", **extra})
        cmd = [sys.executable, "-m", "fer_core", "serve", "--port", str(port), "--workers",
               str(args.workers), "--feedback-db", str(tmp / "fb.sqlite3"),
               "--log-level", "warning"]
        if args.model:
            cmd += ["--model", args.model]
        with open(tmp / "server.log", "wb") as server_log:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=server_log)
            try:
                _wait_ready(port, proc, 300)
                out = _measure(port, proc.pid, inputs, args)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        tracebacks = (tmp / "server.log").read_text(errors="replace").count("Traceback")
    out.update(server_log_tracebacks=tracebacks, server_env=extra,
               load_average_1min=[load_before, round(os.getloadavg()[0], 2)],
               cpu_count=os.cpu_count())
    return out


def _measure(port: int, pid: int, inputs: Inputs, args) -> dict:
    sampler = RssSampler(pid)
    sampler.start()
    out: dict = {}
    try:
        warm = Client(port, [])  # one of each request first: lazy imports are not growth
        warm.request("warm", "POST", "/v1/predict", *_multipart("file", "p.jpg", inputs.photo,
                                                                 "image/jpeg"))
        warm.close()
        if args.burst_rounds:
            time.sleep(2)
            idle = rss_mb(pid)
            sampler.reset_peak()
            log: list = []
            burst(port, inputs, args.burst_rounds, log, args.burst_image == "valid")
            peak = sampler.peak
            time.sleep(args.idle_seconds)
            after = rss_mb(pid)
            out["burst"] = {"rounds": args.burst_rounds, "image": args.burst_image,
                            "idle_mb": round(idle, 1),
                            "peak_mb": round(peak, 1), "peak_above_idle_mb": round(peak - idle, 1),
                            f"after_{args.idle_seconds:g}s_idle_mb": round(after, 1),
                            "after_idle_above_idle_mb": round(after - idle, 1),
                            "target_peak_above_idle_mb": 1536, "target_after_idle_mb": 300,
                            "met": peak - idle <= 1536 and after - idle <= 300,
                            **_summary(log)}
        if args.minutes:
            log = []
            start = rss_mb(pid)
            sampler.reset_peak()
            res = soak(port, inputs, args.clients, args.minutes * 60, log, sampler)
            time.sleep(2)
            end = rss_mb(pid)
            time.sleep(10)  # the server trims its heap after 5 s without requests
            idle = rss_mb(pid)
            summary = _summary(log)
            one = res["rss_after_first_minute_mb"]
            out["soak"] = {"minutes": args.minutes, "clients": args.clients, **summary,
                           "rss_start_mb": round(start, 1), **res,
                           "rss_peak_mb": round(sampler.peak, 1), "rss_end_mb": round(end, 1),
                           "rss_after_12s_idle_mb": round(idle, 1),
                           "end_vs_first_minute_pct": round(100 * (end - one) / one, 1),
                           "met": summary.get("server_errors_5xx", 1) == 0 and
                           summary.get("connection_failures", 1) == 0 and end <= one * 1.10}
    finally:
        sampler.stop()
    return out
