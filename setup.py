"""Build hook (the metadata is in pyproject.toml): the wheel also carries the Streamlit app and
the shipped model (``models/fer2013-default`` -> ``fer_core/shipped/fer2013-default``).

The app lives at the repo root (``streamlit_app.py``, ``ui/``, ``pages/``, ``.streamlit/``), where
``make run`` starts it. Installed, these files go to ``fer_core/_app/`` (not top-level packages,
so nothing named ``ui`` or ``pages`` lands in site-packages) and ``fer-studio app`` starts
Streamlit there with that folder on its path.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
APP_FILES = ("streamlit_app.py", "ui", "pages", ".streamlit")
# the shipped model (models/fer2013-default in the repo) becomes package data
SHIPPED = ("models/fer2013-default", "fer_core/shipped/fer2013-default")


class BuildPyWithApp(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "fer_core" / "_app"
        for name in APP_FILES:
            src = HERE / name
            if src.is_dir():
                shutil.copytree(src, dest / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        src, target = SHIPPED
        shutil.copytree(HERE / src, Path(self.build_lib) / target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("last.keras", "tb", "swa", ".*"))


setup(cmdclass={"build_py": BuildPyWithApp})
