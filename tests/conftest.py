"""Shared fixtures: isolated caches, the FER2013 copy, Chromium and a live Streamlit server."""

from __future__ import annotations

import pylibsrtp  # noqa: F401, I001 - before TensorFlow: app pages import it (see ui/__init__.py)

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FER2013 = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Dataset cache in a temp dir so tests never read a stale user cache."""
    os.environ["FER_CACHE_DIR"] = str(tmp_path_factory.mktemp("fer-cache"))
    yield


@pytest.fixture(scope="session")
def fer2013_path() -> Path:
    if not FER2013.exists():
        pytest.skip(f"FER2013 copy not present at {FER2013} (only on the dev machines)")
    return FER2013


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_chromium():
    if not Path(CHROMIUM).exists():
        msg = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def playwright_instance():
    _need_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


def launch_chromium(playwright, extra_args=()):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS + list(extra_args))


@pytest.fixture(scope="session")
def browser(playwright_instance):
    b = launch_chromium(playwright_instance)
    yield b
    b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


class StreamlitServer:
    """`streamlit run streamlit_app.py` on a free port, for real-browser tests."""

    def __init__(self, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none"]
        self.log = open(ARTIFACTS_DIR() / f"streamlit-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early, see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("streamlit did not become healthy in 60 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ARTIFACTS_DIR() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def streamlit_server(tmp_path_factory):
    """One app server for the browser tests of a session (demo data, temp run dir)."""
    _need_chromium()
    runs = tmp_path_factory.mktemp("runs")
    with StreamlitServer(env={"FER_RUNS_DIR": str(runs)}) as server:
        yield server
