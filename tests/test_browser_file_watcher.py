"""The app's Streamlit config watches only code: no recursive inotify watch over the project
folder (where .venv and data/ live), and an edited module is still noticed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.factories import ARTIFACTS_DIR, ROOT, free_port

pytestmark = pytest.mark.browser

APP = """
import streamlit as st
import helper

st.title(helper.TITLE)
"""


def inotify_watches(pid: int) -> int:
    """Inotify watches the process holds (one per watched directory)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            n += sum(line.startswith("inotify wd:") for line in fd.read_text().splitlines())
        except OSError:
            pass
    return n


@pytest.fixture
def project(tmp_path):
    """An app folder with the repo's .streamlit/config.toml and a big data-like tree."""
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(ROOT / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "helper.py").write_text('TITLE = "first"\n')
    for i in range(200):
        d = tmp_path / "data" / f"part{i // 20}" / f"d{i}"
        d.mkdir(parents=True)
        (d / "x.bin").write_bytes(b"0")
    return tmp_path


def test_only_code_is_watched(project, page):
    from playwright.sync_api import expect

    port = free_port()
    with open(ARTIFACTS_DIR() / f"watcher-{port}.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=project, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            page.goto(url)
            expect(page.get_by_role("heading", name="first")).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1500)  # watchers are set up after the first script run
            assert inotify_watches(proc.pid) == 0, "a recursive watch covers the project folder"
            (project / "helper.py").write_text('TITLE = "second"\n')
            page.get_by_role("button", name="Rerun").first.click(timeout=15_000)
            expect(page.get_by_role("heading", name="second")).to_be_visible(timeout=30_000)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Inotify queue overflowed" not in Path(log.name).read_text()
