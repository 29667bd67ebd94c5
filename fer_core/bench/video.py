"""Video files: frames/s of ``fer_core.video.analyze`` against the fer package's per-frame work.

On a generated 640x480 clip (two drawn faces moving over a still background, H.264), in the same
run: (1) ``analyze`` with the video preset (detect + classify every ``--every`` frames, template
tracking in between, every frame decoded and tracked), also at ``every=1``; (2) a re-creation of
the ``fer`` package's ``Video.analyze`` work per frame: OpenCV decode, full-frame Haar at scale
1.1 (5 neighbours, faces >= 50 px: its defaults), then one model call per face, on every frame;
the same model for both. Targets: at least 4x fer's frames/s, goal >= 300 frames/s.

Memory: peak RSS (``ru_maxrss`` of a child process each) analysing a 1-minute and a 10-minute
clip (``--memory-fps`` frames per second to keep the bench short); the target is a difference
under 100 MB. Timings are wall-clock on a machine that may be busy: the load average and the CPU
frames/s (frames per CPU-second of this process) are reported alongside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fer_core.settings import child_env

TARGETS = {"speedup_vs_fer": 4.0, "frames_per_sec_goal": 300.0, "memory_growth_mb": 100.0}


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="run dir or .keras file (default: shipped)")
    p.add_argument("--seconds", type=float, default=20.0, help="clip length (default 20 s)")
    p.add_argument("--every", type=int, default=None, help="analyse every N frames (default 5)")
    p.add_argument("--fer-frames", type=int, default=150,
                   help="frames timed for the fer re-creation (default 150)")
    p.add_argument("--no-memory", action="store_true", help="skip the 1 vs 10 minute memory runs")
    p.add_argument("--memory-fps", type=float, default=10.0,
                   help="frame rate of the memory clips (default 10)")
    from fer_core.detectors import add_argument
    add_argument(p)


def _fer_style(clip: Path, predictor, limit: int) -> dict:
    """fer's per-frame work: cv2 decode, grey, full-frame Haar (1.1, 5, 50 px), one
    classification per face."""
    import cv2

    from fer_core import vision
    from fer_core.detectors import HAAR_FILE
    haar = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, HAAR_FILE))
    cap = cv2.VideoCapture(str(clip))
    n = faces = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while n < limit:
        ok, frame = cap.read()
        if not ok:
            break
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = haar.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
        for box in boxes:
            predictor.predict_faces(vision.crop_faces(grey, [box], predictor.margin))
            faces += 1
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cap.release()
    return {"frames": n, "faces": faces, "seconds": round(wall, 3),
            "frames_per_sec": round(n / wall, 1) if wall else None,
            "cpu_frames_per_sec": round(n / cpu, 1) if cpu else None}


def _ours(clip: Path, out: Path, predictor, every: int) -> dict:
    from fer_core import video
    c0 = time.process_time()
    s = video.analyze(clip, out, predictor=predictor, every=every)
    cpu = time.process_time() - c0
    n = s["video"]["frames"]
    return {"frames": n, "rows": s["processing"]["rows"], "faces": len(s["faces"]),
            "every": every, "seconds": s["processing"]["seconds"],
            "frames_per_sec": s["processing"]["frames_per_sec"],
            "cpu_frames_per_sec": round(n / cpu, 1) if cpu else None}


_CHILD = """
import json, resource, sys
from fer_core import video
s = video.analyze(sys.argv[1], sys.argv[2], model=sys.argv[3] or None, every=int(sys.argv[4]))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": s["video"]["frames"], "rows": s["processing"]["rows"],
                  "frames_per_sec": s["processing"]["frames_per_sec"],
                  "maxrss_mb": round(rss, 1)}))
"""


def _memory(tmp: Path, model, every: int, fps: float) -> dict:
    from fer_core import synthetic
    out = {}
    for minutes in (1, 10):
        clip = synthetic.synthetic_clip(tmp / f"mem{minutes}.mp4", seconds=60 * minutes, fps=fps)
        r = subprocess.run([sys.executable, "-c", _CHILD, str(clip), str(tmp / f"m{minutes}"),
                            str(model or ""), str(every)], capture_output=True, text=True,
                           env=child_env({"TF_CPP_MIN_LOG_LEVEL": "3"}))
        if r.returncode != 0:
            out[f"{minutes}_min"] = {"error": r.stderr.strip().splitlines()[-1:]}
            continue
        out[f"{minutes}_min"] = json.loads(r.stdout.strip().splitlines()[-1])
        clip.unlink()
    a, b = out.get("1_min", {}), out.get("10_min", {})
    if "maxrss_mb" in a and "maxrss_mb" in b:
        out["growth_mb"] = round(b["maxrss_mb"] - a["maxrss_mb"], 1)
        out["within_target"] = out["growth_mb"] <= TARGETS["memory_growth_mb"]
    out["clip_fps"] = fps
    return out


def run(args) -> dict:
    from fer_core import synthetic, video
    from fer_core.bench.predict import _model
    from fer_core.errors import FerError
    from fer_core.predict import Predictor

    every = video.DEFAULT_EVERY if args.every is None else args.every
    if args.seconds <= 0 or args.fer_frames < 10:
        raise FerError("--seconds must be > 0 and --fer-frames >= 10", where="bench video")
    model, model_desc = _model(args.model)
    cfg = video.detector_config(args.detector)
    predictor = Predictor(model, detector_config=cfg)
    with tempfile.TemporaryDirectory(prefix="fer-bench-video-") as tmp:
        tmp = Path(tmp)
        clip = synthetic.synthetic_clip(tmp / "clip.mp4", seconds=args.seconds)
        video.analyze(clip, tmp / "warm", predictor=predictor, every=every)  # warm caches
        ours = _ours(clip, tmp / "ours", predictor, every)
        ours1 = _ours(clip, tmp / "ours1", predictor, 1)
        fer = _fer_style(clip, predictor, args.fer_frames)
        memory = None
        if not args.no_memory:
            memory = _memory(tmp, model if isinstance(model, str) else None, every,
                             args.memory_fps)
    ratio = (ours["frames_per_sec"] / fer["frames_per_sec"]
             if fer["frames_per_sec"] else None)
    try:
        load_avg = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load_avg = None
    return {
        "clip": f"640x480, 30 fps, {args.seconds:g} s, 2 moving drawn faces, H.264",
        "ours": ours, "ours_every_1": ours1, "fer_style": fer,
        "speedup_vs_fer": round(ratio, 2) if ratio else None,
        "speedup_vs_fer_cpu": (round(ours["cpu_frames_per_sec"] / fer["cpu_frames_per_sec"], 2)
                               if fer["cpu_frames_per_sec"] else None),
        "speedup_every_1_vs_fer": (round(ours1["frames_per_sec"] / fer["frames_per_sec"], 2)
                                   if fer["frames_per_sec"] else None),
        "targets": TARGETS,
        "meets_speedup": bool(ratio and ratio >= TARGETS["speedup_vs_fer"]),
        "meets_goal_fps": bool(ours["frames_per_sec"] >= TARGETS["frames_per_sec_goal"]),
        "memory": memory,
        "model": model_desc, "model_id": predictor.model_id, "backend": predictor.backend_name,
        "detector": cfg.to_dict(),
        "cpu_count": os.cpu_count(), "load_average": load_avg,
    }
