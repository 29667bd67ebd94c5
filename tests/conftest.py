"""Shared fixtures: isolated caches, the FER2013 copy, Chromium and a live Streamlit server."""

from __future__ import annotations

import pylibsrtp  # noqa: F401, I001 - before TensorFlow: app pages import it (see ui/__init__.py)

import os
import subprocess
from pathlib import Path

import pytest

from tests.factories import (FER2013, StreamlitServer, free_port, launch_chromium,
                             need_chromium)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Dataset cache in a temp dir so tests never read a stale user cache."""
    os.environ["FER_CACHE_DIR"] = str(tmp_path_factory.mktemp("fer-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """An untrained tiny FER7 model saved as the run dir ``tiny-run`` (model.keras +
    labels.json), built once per session: read-only (copy it to change it). Loaded once here,
    so its checked TFLite conversion is in this session's cache (``FER_CACHE_DIR``): the
    servers, jobs and CLIs the tests start on it run without importing TensorFlow."""
    from fer_core.model import FerModel
    from tests.factories import tiny_model_dir
    run = tiny_model_dir(tmp_path_factory.mktemp("run") / "tiny-run")
    FerModel.load(run)
    return run


@pytest.fixture(scope="session")
def eval_faces():
    """Pattern faces with train, val and test splits (20 per class each), seed 3."""
    from tests.factories import pattern_faces
    return pattern_faces(n_per_class=20, splits=("train", "val", "test"), seed=3)


@pytest.fixture(scope="session")
def trained_cnn(eval_faces, tmp_path_factory):
    """(keras model, run dir): ``conv_pool_cnn`` fitted 10 epochs on ``eval_faces`` (over 80 %
    test accuracy), saved with FER7 labels. Built once per session; treat both as read-only."""
    import keras

    from tests.factories import FER7_LABELS, conv_pool_cnn, save_model_dir
    keras.utils.set_random_seed(0)
    model = conv_pool_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    tr = eval_faces.subset("train")
    model.fit(tr.images[..., None].astype("float32"), tr.labels, epochs=10, batch_size=32,
              verbose=0)
    run = save_model_dir(tmp_path_factory.mktemp("runs") / "tiny-run", model, FER7_LABELS)
    return model, run


@pytest.fixture(scope="session")
def fer2013_path() -> Path:
    if not FER2013.exists():
        pytest.skip(f"FER2013 copy not present at {FER2013} (only on the dev machines)")
    return FER2013


@pytest.fixture(scope="session")
def playwright_instance():
    need_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


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


@pytest.fixture(scope="session")
def streamlit_server(tmp_path_factory):
    """One app server for the browser tests of a session (demo data, temp run dir)."""
    need_chromium()
    runs = tmp_path_factory.mktemp("runs")
    with StreamlitServer(env={"FER_RUNS_DIR": str(runs)}) as server:
        yield server


# ---- a throwaway PostgreSQL server ---------------------------------------------------------------
def _need(what: str, msg: str):
    """Skip, or fail under CI=true, when ``what`` is missing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} missing: {msg}")
    pytest.skip(f"{what} missing: {msg}")


def _pg_bin(name: str) -> str | None:
    import glob
    import shutil
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


class PgCluster:
    """``initdb`` + ``pg_ctl`` in a temp dir on a free loopback port; as root the server runs as
    the ``postgres`` user (initdb and pg_ctl refuse root). ``url(db)`` names a database on it."""

    def __init__(self):
        import pwd
        import tempfile
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            _need("PostgreSQL", "initdb/pg_ctl not found (apt-get install -y postgresql)")
        self.prefix: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="fer-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                _need("PostgreSQL", "no 'postgres' user to run the server as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self._sh([self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale", "C"])

    def _sh(self, cmd, check=True):
        return subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=120,
                              check=check, cwd=self.dir)

    def start(self):
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                "-c max_connections=200 -c fsync=on")
        r = self._sh([self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w",
                      "-t", "60", "start"], check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast"):
        self._sh([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
                 check=False)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres", user: str = "postgres", password: str | None = None):
        auth = user + (f":{password}" if password else "")
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str, owner: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            if owner != "postgres":
                conn.execute(f'CREATE ROLE "{owner}" LOGIN')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')

    def cleanup(self):
        import shutil
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server per test session (skips, or fails under CI=true, when
    PostgreSQL is not installed)."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_db(pg_cluster):
    """A fresh database on the throwaway server and its own role: returns its URL (with a
    password, which trust authentication ignores: it must still never show anywhere)."""
    import uuid
    name = "fer_" + uuid.uuid4().hex[:10]
    pg_cluster.create_database(name, owner=name + "_user")
    return pg_cluster.url(name, user=name + "_user", password="pw-" + name)
