"""Where the package and a source checkout keep their folders; the settings object decides which
ones are used (fer_core/settings.py)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"
# The shipped model: models/fer2013-default in a checkout; the build (setup.py) copies it into
# the package as fer_core/shipped/fer2013-default, where an installed package finds it.
_PACKAGED_MODEL = PACKAGE_DIR / "shipped" / "fer2013-default"
DEFAULT_MODEL = _PACKAGED_MODEL if _PACKAGED_MODEL.is_dir() else MODELS_DIR / "fer2013-default"
