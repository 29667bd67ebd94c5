"""One settings object (fer_core.settings): every FER_* variable is a validated field, bad values
are refused at start by ``serve``, every CLI command and the app (one line naming the variable,
what it got and what it expects; exit code 2), user folders follow the checkout/installed layout,
and the README's table is generated from the fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fer_core import runs, settings as fs
from fer_core.vision import DetectorConfig
from fer_core.errors import FerError
from fer_core.settings import Settings, SettingsError
from tests.factories import ROOT, free_port

SOURCES = [ROOT / "streamlit_app.py", *(ROOT / "fer_core").rglob("*.py"),
           *(ROOT / "ui").rglob("*.py"), *(ROOT / "pages").rglob("*.py")]
INTERNAL = {"FER_JOB_LOCK_FD", "FER_RUN_LOCK_FD"}  # file descriptors handed to a job's child
ENV_VARS = {var for var, _, _ in fs.env_fields().values()}

# (variable, bad value, what the message must say)
BAD = [(var, value, "finite") for var in ("FER_VIDEO_MAX_MB", "FER_VIDEO_MAX_SECONDS",
                                          "FER_VIDEO_MAX_JOBS", "FER_VIDEO_TTL_HOURS")
       for value in ("nan", "inf")] + [
    ("FER_TFLITE_THREADS", "nan", "finite"), ("FER_TFLITE_THREADS", "inf", "finite"),
    ("FER_TFLITE_THREADS", "abc", "whole number"), ("FER_TFLITE_THREADS", "0", ">= 1"),
    ("FER_MAX_UPLOAD_MB", "-Infinity", "finite"), ("FER_MAX_BATCH", "2.5", "whole number"),
    ("FER_TTA", "maybe", "1/true"), ("FER_NATIVE_LOGS", "perhaps", "1/true"),
    ("FER_DETECTOR", "sharp", "expected one of"), ("FER_ICE_SERVERS", "[{", "JSON"),
    ("FER_ICE_SERVERS", '{"urls": 1}', "JSON list"), ("FER_CROP_CACHE", "2000000", "<= 1,000,000"),
]


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "fer_core", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


# --------------------------------------------------------------------------- the object

def test_every_fer_variable_in_the_code_is_a_settings_field():
    used = set()
    for path in SOURCES:
        if path == ROOT / "fer_core" / "settings.py":  # its docstring has made-up examples
            continue
        used |= set(re.findall(r"\bFER_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    assert used - INTERNAL <= ENV_VARS, f"FER_* names without a field: {used - INTERNAL - ENV_VARS}"
    assert len(ENV_VARS) >= 25


def test_no_environment_reads_outside_settings():
    """Only fer_core/settings.py touches os.environ (defaults, child envs, TF_CONFIG too)."""
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES if p.name != "settings.py"
                 or p.parent.name != "fer_core"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"os\.environ|getenv\(", line)]
    assert offenders == []


@pytest.mark.parametrize("var, value, expected", BAD)
def test_bad_value_is_one_line_naming_variable_value_and_expectation(var, value, expected):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({var: value})
    assert e.value.where == var and str(e.value).count("\n") == 0
    assert str(e.value).startswith(f"{var}: ") and expected in str(e.value)
    if var != "FER_ICE_SERVERS":
        assert repr(value) in str(e.value)


def test_several_bad_values_give_one_line_each():
    with pytest.raises(FerError) as e:
        Settings.from_env({"FER_VIDEO_MAX_MB": "nan", "FER_TFLITE_THREADS": "abc",
                           "FER_MAX_PIXELS": "12"})
    lines = str(e.value).splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["FER_TFLITE_THREADS", "FER_MAX_PIXELS",
                                                  "FER_VIDEO_MAX_MB"]


def test_values_are_parsed_and_defaults_kept(tmp_path):
    s = Settings.from_env({"FER_VIDEO_MAX_JOBS": " 3 ", "FER_TFLITE_THREADS": "4",
                           "FER_DATA_ROOTS": os.pathsep.join(["~/a", str(tmp_path)]),
                           "FER_ICE_SERVERS": '[{"urls": ["stun:x:3478"]}]',
                           "FER_RUNS_DIR": "~/my-runs", "FER_VIDEO_MAX_MB": "",
                           "FER_NATIVE_LOGS": "1", "FER_DETECTOR": "Haar",
                           "FER_DETECTOR_PRESET": "Accurate"})
    assert s.video_max_jobs == 3 and s.tflite_threads == 4 and s.video_max_mb == 200.0
    assert s.data_roots == (Path.home() / "a", tmp_path)
    assert s.ice_servers == [{"urls": ["stun:x:3478"]}] and s.native_logs is True
    assert s.runs_dir == Path.home() / "my-runs" and s.detector == "haar"
    assert s.detector_preset == "accurate" and DetectorConfig.of(s).kind == "haar"
    assert DetectorConfig.of(s).min_size > 0
    assert Settings.from_env(s.to_env()) == s  # what child processes rebuild
    assert s.with_(video_max_mb=5).video_max_mb == 5.0
    with pytest.raises(SettingsError, match="FER_VIDEO_MAX_MB: must be >= 0.001"):
        s.with_(video_max_mb=0)
    with pytest.raises(SettingsError, match="not a setting"):
        Settings(no_such_setting=1)


def test_process_settings_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "r1"))
    assert runs.runs_dir() == tmp_path / "r1" and fs.get_settings() is fs.get_settings()
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "r2"))
    assert runs.runs_dir() == tmp_path / "r2"
    monkeypatch.setenv("FER_MAX_BATCH", "lots")
    with pytest.raises(FerError, match="FER_MAX_BATCH"):
        fs.get_settings()


def test_secrets_never_echoed():
    for url in ("postgresql+psycopg://u:topsecret@h:99999/db", "mysql://u:topsecret@h/db",
                "postgresql+psycopg://u:topsecret@h:port/db"):
        with pytest.raises(SettingsError) as e:
            Settings.from_env({"FER_FEEDBACK_DB": url})
        assert e.value.where == "FER_FEEDBACK_DB" and "topsecret" not in str(e.value)
    assert "99999" in str(pytest.raises(SettingsError, Settings.from_env,
                                        {"FER_FEEDBACK_DB": "postgresql://h:99999/db"}).value)
    s = Settings.from_env({"FER_API_KEY": "k3y-secret",
                           "FER_FEEDBACK_DB": "postgresql+psycopg://u:topsecret@h:5432/db"})
    assert "k3y-secret" not in repr(s) and "topsecret" not in repr(s)


def test_feedback_db_folder_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="FER_FEEDBACK_DB: .* is a folder"):
        Settings.from_env({"FER_FEEDBACK_DB": str(tmp_path)})


def test_child_env_carries_settings_and_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_VIDEO_MAX_JOBS", "2")
    monkeypatch.setenv("PYTHONPATH", "/x")
    env = fs.child_env({"EXTRA": "1"}, pythonpath=tmp_path)
    assert env["FER_VIDEO_MAX_JOBS"] == "2" and env["EXTRA"] == "1"
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path), "/x"])
    assert all(env[k] for k in fs.ENV_DEFAULTS)


# --------------------------------------------------------------------------- user folders

def test_checkout_layout_is_todays():
    assert fs.in_checkout()
    lay = fs.layout()
    assert lay.kind == "checkout" and lay.runs_dir == ROOT / "models"
    assert lay.feedback_db == ROOT / "data" / "feedback.sqlite3"
    assert lay.demo_dir == ROOT / "data" / "demo"


def test_installed_layout_uses_user_folders(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "fer_core").mkdir(parents=True)
    (site / "fer_core" / "__init__.py").write_text("")
    assert not fs.in_checkout(site)
    (site / "pyproject.toml").write_text("")   # a checkout: both side by side
    assert fs.in_checkout(site)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    lay = fs.layout(checkout=False)
    assert lay.kind == "installed"
    assert lay.runs_dir == tmp_path / "xdg-data" / "fer-studio" / "runs"
    assert lay.feedback_db == tmp_path / "xdg-data" / "fer-studio" / "feedback.sqlite3"
    assert lay.upload_dir == tmp_path / "xdg-cache" / "fer-studio" / "uploads"
    assert lay.cache_dir == tmp_path / "xdg-cache" / "fer-studio"
    monkeypatch.setattr(fs, "in_checkout", lambda root=None: False)
    s = Settings.from_env({"FER_CACHE_DIR": str(tmp_path / "c")})
    assert s.runs_dir == lay.runs_dir and s.cache_dir == tmp_path / "c"


# --------------------------------------------------------------------------- refused at start

@pytest.fixture(scope="module")
def face_png(tmp_path_factory) -> Path:
    from PIL import Image

    from tests.factories import face_image
    path = tmp_path_factory.mktemp("img") / "face.png"
    Image.fromarray(face_image()).save(path)
    return path


@pytest.mark.parametrize("var, value", [("FER_TFLITE_THREADS", "nan"),
                                        ("FER_TFLITE_THREADS", "inf"),
                                        ("FER_TFLITE_THREADS", "abc")])
def test_predict_refuses_bad_tflite_threads_at_start(face_png, var, value):
    """Before: ``int()`` at import in model.py, a traceback and exit code 1."""
    line = one_error_line(cli("predict", str(face_png), env={var: value}))
    assert var in line and repr(value) in line and "expected" in line


@pytest.mark.parametrize("var, value", [(v, x) for v in ("FER_VIDEO_MAX_MB",
                                                         "FER_VIDEO_MAX_SECONDS",
                                                         "FER_VIDEO_MAX_JOBS",
                                                         "FER_VIDEO_TTL_HOURS")
                                        for x in ("nan", "inf")]
                         + [("FER_TFLITE_THREADS", "abc")])
def test_serve_refuses_bad_settings_at_start(tmp_path, var, value):
    line = one_error_line(cli("serve", "--port", str(free_port()), "--model",
                              str(tmp_path / "no-model"), env={var: value}))
    assert line.startswith(f"error: {var}: ") and repr(value) in line


@pytest.mark.parametrize("argv", [["info", "demo"], ["train", "demo"], ["swa", "demo", "r"],
                                  ["evaluate", "--data", "demo"], ["calibrate", "demo"],
                                  ["predict", "x.png"], ["video", "in.mp4", "--out", "out"], ["serve"],
                                  ["bench", "predict"]])
def test_every_cli_command_checks_settings_first(monkeypatch, capsys, argv):
    from fer_core.cli import main
    monkeypatch.setenv("FER_VIDEO_TTL_HOURS", "inf")
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == \
        "error: FER_VIDEO_TTL_HOURS: expected a finite number, got 'inf'"


def test_serve_refuses_a_feedback_folder(tmp_path):
    line = one_error_line(cli("serve", "--port", str(free_port()), "--model",
                              str(tmp_path / "no-model"), "--feedback-db", str(tmp_path)))
    assert "--feedback-db" in line and "is a folder" in line


def test_serve_refuses_an_impossible_port_without_the_password(tmp_path):
    url = "postgresql+psycopg://fer:topsecret@127.0.0.1:99999/fer"
    line = one_error_line(cli("serve", "--port", str(free_port()), "--model",
                              str(tmp_path / "no-model"), env={"FER_FEEDBACK_DB": url}))
    assert "FER_FEEDBACK_DB" in line and "99999" in line and "topsecret" not in line


def test_serve_refuses_a_file_that_is_not_sqlite(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"these are my notes, not a database\n" * 200)
    line = one_error_line(cli("serve", "--port", str(free_port()), "--model",
                              str(tmp_path / "no-model"), "--feedback-db", str(notes)))
    assert "FER_FEEDBACK_DB" in line and "as SQLite" in line and "my notes" not in line


def test_store_configured_right_but_down_still_starts_with_503(tmp_path):
    """A PostgreSQL URL with a valid port where nothing listens: serve starts; feedback calls
    answer 503 feedback_unavailable (today's documented behaviour), no password anywhere."""
    port, db_port = free_port(), free_port()
    env = {**os.environ, "FER_FEEDBACK_DB": f"postgresql+psycopg://fer:topsecret@127.0.0.1:"
                                            f"{db_port}/fer?connect_timeout=1"}
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "serve", "--port", str(port),
                             "--model", str(tmp_path / "no-model"), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/feedback/export", timeout=30)
        body = json.loads(e.value.read())
        assert e.value.code == 503 and body["error"] == "feedback_unavailable"
        assert "topsecret" not in json.dumps(body)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "topsecret" not in err


def test_app_shows_a_bad_setting_instead_of_starting(monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("FER_VIDEO_MAX_MB", "nan")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert "cannot start" in at.error[0].value
    assert at.code[0].value == "FER_VIDEO_MAX_MB: expected a finite number, got 'nan'"


# --------------------------------------------------------------------------- README

def test_readme_settings_table_is_generated_from_the_fields():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings-table:start[^>]*-->\n(.*?)\n<!-- settings-table:end -->",
                      text, re.S)
    assert block, "README lacks the settings table markers"
    assert block.group(1).strip() == fs.markdown_table(), \
        "README settings table is stale: paste the output of `python -m fer_core.settings`"
