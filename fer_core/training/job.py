"""Training as a job of :mod:`fer_core.jobs`: the "train" kind runs :func:`train` in a child
process, with the run directory as the job directory.

Spec (JSON values only): ``{"data": source path or "demo", "strict": bool, "max_train": int,
"seed": int (for max_train), "config": TrainConfig dict, "resume": bool, "command": str}``.
The child loads the data with :func:`fer_core.data.load` (the on-disk cache makes that quick
when the app loaded it before), then trains; events go to the run's ``events.jsonl`` (batch
progress events at most every :data:`BATCH_EVENT_SEC` seconds, plus the last batch of each epoch).
"""

from __future__ import annotations

import time
from pathlib import Path

from fer_core import runs
from fer_core.job_events import Progress
from fer_core.training.config import TrainConfig
from fer_core.training.state import RunState

BATCH_EVENT_SEC = 0.5


def train_spec(source, config: TrainConfig | dict, *, strict: bool = True, max_train: int = 0,
               seed: int = 0, resume: bool = False, command: str = "") -> dict:
    """The spec of a "train" job."""
    config = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {"data": str(source), "strict": bool(strict), "max_train": int(max_train),
            "seed": int(seed), "config": config, "resume": bool(resume), "command": command}


def load_data(spec: dict):
    """The dataset a spec names, limited to ``max_train`` training faces."""
    from fer_core import data

    ds = data.load(spec["data"], strict=spec.get("strict", True))
    return ds.limit_train(int(spec.get("max_train") or 0), int(spec.get("seed") or 0))


def start_training(runner, spec: dict, run_dir, dataset=None):
    """Validate the config (against ``dataset`` when the caller has it loaded, limited as the
    spec says) and start the job; returns its :class:`~fer_core.jobs.JobHandle`. FerError:
    a bad config, or (409) a job already running."""
    config = TrainConfig.from_dict(spec["config"])
    if dataset is not None:
        dataset = dataset.limit_train(int(spec.get("max_train") or 0), int(spec.get("seed") or 0))
    config.validate(dataset)
    return runner.start("train", spec, run_dir)


def resume_spec(spec: dict, run_dir) -> dict:
    """The spec that continues a stopped, crashed or interrupted run: from its last checkpoint
    when it has one, else from the start (it ended before its first epoch did)."""
    run_dir = Path(run_dir)
    can_resume = (run_dir / runs.LAST_FILE).exists() and RunState.exists(run_dir)
    return {**spec, "resume": can_resume}


class _Sink:
    """Training events -> the job's events.jsonl, per-batch progress events throttled."""

    def __init__(self, ctx):
        self.ctx, self.last = ctx, 0.0

    def __call__(self, event) -> None:
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - self.last < BATCH_EVENT_SEC and event.done != event.total:
                return
            self.last = now
        self.ctx.emit(event)


class _StopFlag:
    def __init__(self, ctx):
        self.ctx = ctx

    def is_set(self) -> bool:
        return self.ctx.stop_requested()


def run_job(spec: dict, ctx) -> dict:
    """The "train" job: load the data, train into the job directory; returns metrics.json."""
    from fer_core.training.loop import train

    dataset = load_data(spec)
    return train(dataset, TrainConfig.from_dict(spec["config"]), ctx.job_dir,
                 callbacks=[_Sink(ctx)], stop_event=_StopFlag(ctx),
                 resume=bool(spec.get("resume")), command=spec.get("command", ""))
