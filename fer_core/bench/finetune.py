"""The feedback loop end to end: post corrections, fine-tune as a job, compare (issue figures).

Takes ``--n`` (400) training faces of ``--target`` (fear) that the shipped model calls
``--confused`` (sad) (then other faces of that class it gets wrong, if there are too few),
posts them with their true label through ``POST /v1/feedback`` of an in-process API on a
temporary SQLite store, fine-tunes the model on them as a job (a child process, the same as
``python -m fer_core finetune``) and reads the comparison. Prints, beside the issue's targets:
the candidate minus the current model on the target class of the feedback hold-out (>= +10
points), the overall change on the original val split (PublicTest for FER2013; >= -0.5 points)
and the job's wall time (<= 10 min on 2 cores). Uses FER2013 from ``../shared`` when present,
else the synthetic demo set as a stand-in (figures then say so).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def add_arguments(p) -> None:
    from fer_core import finetune as ft
    p.add_argument("--data", default=None,
                   help="FER2013 CSV (default ../shared/data/fer2013/fer2013.csv.gz, else demo)")
    p.add_argument("--model", default=None, help="base model (default: the shipped model)")
    p.add_argument("--n", type=int, default=400, help="feedback faces to post (default 400)")
    p.add_argument("--target", default="fear", help="their true class (default fear)")
    p.add_argument("--confused", default="sad",
                   help="what the model calls them, preferably (default sad)")
    p.add_argument("--replay", type=float, default=ft.DEFAULT_REPLAY)
    p.add_argument("--mode", choices=ft.MODES, default=ft.DEFAULT_MODE)
    p.add_argument("--epochs", type=int, default=None, help="default by mode")
    p.add_argument("--lr", type=float, default=None, help="default by mode")
    p.add_argument("--keep", default=None, help="keep the run here (default: a temp folder)")


def pick_feedback(model, ds, target: int, confused: int, n: int, seed: int = 0):
    """Indices of ``n`` training faces of ``target`` the model gets wrong, those it calls
    ``confused`` first; and how many of them it calls ``confused``."""
    import numpy as np
    idx = ds.indices("train", label=target, seed=seed)
    pred = model.predict_proba(ds.images[idx], tta=False).argmax(1)
    called = idx[pred == confused]
    other = idx[(pred != confused) & (pred != target)]
    picked = np.concatenate([called, other])[:n]
    return picked, int(min(len(called), n))


def run(args) -> dict:
    from fastapi.testclient import TestClient

    from fer_core import ROOT, compare, data, runs
    from fer_core import finetune as ft
    from fer_core.api.app import create_app
    from fer_core.settings import Settings, export_env, get_settings
    from fer_core.jobs import JobRunner
    from fer_core.labels import canonical
    from fer_core.model import FerModel
    from fer_core.resolve import resolve_model

    default_csv = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
    source = args.data or (str(default_csv) if default_csv.exists() else "demo")
    base = resolve_model(args.model, where="--model")
    ds = data.load(source)
    model = FerModel.load(base)
    names = [canonical(x) for x in model.labels]
    target, confused = names.index(canonical(args.target)), names.index(canonical(args.confused))
    picked, n_called = pick_feedback(model, ds, target, confused, args.n)
    work = Path(args.keep or tempfile.mkdtemp(prefix="fer-bench-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "feedback.sqlite3"
    import base64

    import cv2
    t0 = time.perf_counter()
    with TestClient(create_app(Settings(model=str(base), feedback_db=db, model_poll_s=0))) as c:
        for i in picked:
            png = base64.b64encode(cv2.imencode(".png", ds.images[i])[1]).decode()
            r = c.post("/v1/feedback", json={"label": args.target, "image_base64": png,
                                             "detect": False})
            if r.status_code != 201:
                raise RuntimeError(f"feedback refused: {r.text}")
    t_post = time.perf_counter() - t0
    export_env(get_settings().with_(runs_dir=work))  # the job (a child process) writes there
    run_dir = work / runs.new_run_id("finetune")
    spec = ft.finetune_spec(base, db, data=source, replay=args.replay, mode=args.mode,
                            epochs=args.epochs, lr=args.lr,
                            command="python -m fer_core bench finetune")
    t1 = time.perf_counter()
    handle = JobRunner(work).start("finetune", spec, run_dir)
    handle.wait()
    t_job = time.perf_counter() - t1
    state = handle.state()
    if state["status"] != "finished":
        raise RuntimeError(f"the job {state['status']}: {state.get('error')}\n"
                           + "\n".join(state.get("log_tail") or []))
    result = compare.read(run_dir)
    held = result["sets"]["feedback_holdout"]["per_class"][model.labels[target]]
    val = result["sets"]["val"]["accuracy"]
    out = {
        "data": ds.source, "synthetic": bool(ds.synthetic), "base": base.name,
        "feedback": {"posted": int(len(picked)), f"called_{args.confused}": n_called,
                     "post_s": round(t_post, 1)},
        "finetune": {k: state["result"].get(k) for k in ("mode", "n_feedback_train", "n_holdout",
                                                           "n_replay", "epochs", "lr",
                                                           "train_time_s", "total_time_s")},
        "job_wall_s": round(t_job, 1), "cpu_count": os.cpu_count(),
        "holdout_target": {"class": model.labels[target], "n": held["n"],
                           "current": held["current"], "candidate": held["candidate"],
                           "delta_points": round(held["delta"] * 100, 2),
                           "interval_points": [round(held["lo"] * 100, 2),
                                               round(held["hi"] * 100, 2)],
                           "target": ">= +10 points"},
        "val_overall": {"split": "val (PublicTest for FER2013)", "n": val["n"],
                        "current": val["current"], "candidate": val["candidate"],
                        "delta_points": round(val["delta"] * 100, 2),
                        "interval_points": [round(val["lo"] * 100, 2),
                                            round(val["hi"] * 100, 2)],
                        "target": ">= -0.5 points"},
        "time_target": "<= 600 s on 2 cores",
        "verdict": result["verdict"]["summary"],
        "run": str(run_dir),
    }
    if "test" in result["sets"]:
        t = result["sets"]["test"]["accuracy"]
        out["test_overall"] = {"split": "test (PrivateTest)", "current": t["current"],
                               "candidate": t["candidate"],
                               "delta_points": round(t["delta"] * 100, 2)}
    return out
