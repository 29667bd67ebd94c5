"""Where a source checkout keeps its folders; the settings object decides which ones are used."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"
DEFAULT_MODEL = MODELS_DIR / "fer2013-default"
