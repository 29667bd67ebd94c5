"""Where the package and a source checkout keep their folders; the settings object decides which
ones are used (fer_core/settings.py)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"
# the shipped model is package data: inside the package in a checkout and when installed
DEFAULT_MODEL = PACKAGE_DIR / "shipped" / "fer2013-default"
