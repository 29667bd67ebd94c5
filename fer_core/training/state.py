"""How far a run has got: :class:`RunState`, saved as ``state.json`` after every epoch so
that a stopped or crashed run resumes where it was."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from fer_core import runs
from fer_core.errors import FerError

STATE_FILE = "state.json"


@dataclass
class RunState:
    """Epochs done, the best val accuracy and its epoch, epochs since it improved (for early
    stopping and the plateau schedule) and the training time so far."""

    epoch: int = 0
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    plateau_wait: int = 0
    train_time_sec: float = 0.0

    def save(self, run_dir, epochs: int) -> None:
        """Write ``state.json`` (with the run's planned ``epochs``) atomically."""
        runs.atomic_write_json(Path(run_dir) / STATE_FILE, {**asdict(self), "epochs": epochs})

    @staticmethod
    def exists(run_dir) -> bool:
        return (Path(run_dir) / STATE_FILE).is_file()

    @classmethod
    def load(cls, run_dir) -> tuple["RunState", int | None]:
        """The saved state and the ``epochs`` the run was planned for."""
        path = Path(run_dir) / STATE_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FerError(f"unreadable resume state ({e})", where=str(path)) from None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names}), saved.get("epochs")
