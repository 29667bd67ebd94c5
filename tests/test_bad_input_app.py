"""Dataset Explorer with hostile input: typed paths outside the allowed roots, file contents in
messages, Markdown in file names and CSV headers; FER_DATA is the dataset at start-up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_core import DATA_DIR
from fer_core.data.fer2013 import to_csv_bytes
from tests.factories import explorer_app, metric_value, pattern_faces, pick_typed_path

PASSWD_LINE = "root:x:0:0:root:/root:/bin/bash"
HOSTILE_HEADER = "[x](http://127.0.0.1:9/a) ![i](http://127.0.0.1:9/p.png)"
MD_NAME = "[l](u) ![i](p.png) *b* `c`.csv"


def _texts(at) -> list[str]:
    """Everything the page rendered as Markdown text (errors, warnings, infos, captions...)."""
    out = []
    for kind in ("error", "warning", "info", "success", "markdown", "caption"):
        out += [e.value for e in getattr(at, kind)]
    return out


def _good_csv(path: Path) -> Path:
    ds = pattern_faces(n_per_class=3, splits=("train", "val"))
    path.write_bytes(to_csv_bytes(ds.images, ds.labels, ds.split))
    return path


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """tmp_path is an allowed root (FER_DATA_ROOTS); returns it."""
    monkeypatch.setenv("FER_DATA_ROOTS", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("typed", ["/etc/passwd", "/etc", "~/.bashrc",
                                   str(DATA_DIR / ".." / ".." / ".." / "etc" / "passwd")])
def test_paths_outside_the_allowed_roots_are_refused(typed):
    at = pick_typed_path(explorer_app(), typed)
    assert at.error, _texts(at)
    msg = at.error[0].value
    assert "not allowed" in msg and "FER\\_DATA\\_ROOTS" in msg, msg
    assert not any("root:" in t or "/bin/bash" in t for t in _texts(at)), _texts(at)
    # nothing was loaded: the demo stays the active dataset
    assert at.session_state["active_dataset"]["source"] == "demo"


def test_a_file_whose_first_line_is_secret_is_never_echoed(roots):
    secret = roots / "passwd"
    secret.write_text(PASSWD_LINE + "\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    at = pick_typed_path(explorer_app(), secret)
    assert at.error, _texts(at)
    assert "pixels" in at.error[0].value  # the message says what was expected
    for t in _texts(at):  # (escaped or not)
        plain = t.replace("\\", "")
        assert "x:0:0" not in plain and "daemon" not in plain and "bash" not in plain, t


def test_markdown_in_a_csv_header_is_neither_echoed_nor_rendered(roots):
    bad = roots / "header.csv"
    bad.write_text(HOSTILE_HEADER + ",emotion\n1,2\n")
    at = pick_typed_path(explorer_app(), bad)
    assert at.error, _texts(at)
    for t in _texts(at):
        assert "127.0.0.1" not in t and "](" not in t, t


def test_markdown_in_a_file_name_is_escaped_in_errors_and_captions(roots):
    bad = roots / MD_NAME
    bad.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    at = pick_typed_path(explorer_app(), bad)
    assert at.error, _texts(at)
    msg = at.error[0].value
    assert "![i](p.png)" not in msg and "[l](u)" not in msg, msg
    assert "\\!\\[i\\]\\(p\\.png\\)" in msg and "\\*b\\*" in msg and "\\`c\\`" in msg, msg
    good = _good_csv(roots / ("ok " + MD_NAME))
    at = pick_typed_path(at, good)
    assert not at.error, _texts(at)
    label = next(c for c in at.caption if "faces" in c.value).value
    assert "[l](u)" not in label and "\\[l\\]\\(u\\)" in label, label


def test_typed_paths_under_the_allowed_roots_load(roots, tmp_path, monkeypatch):
    good = _good_csv(roots / "faces.csv")
    at = pick_typed_path(explorer_app(), good)
    assert not at.error, _texts(at)
    assert metric_value(at, "Faces") == "42"
    # a second root in the os.pathsep-separated list, and the FER_DATA file itself
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.mkdir()
    try:
        elsewhere = _good_csv(other / "more.csv")
        at = pick_typed_path(explorer_app(), elsewhere)
        assert at.error and "not allowed" in at.error[0].value
        monkeypatch.setenv("FER_DATA_ROOTS", f"{roots}:{other}")
        at = pick_typed_path(explorer_app(), elsewhere)
        assert not at.error, _texts(at)
        monkeypatch.delenv("FER_DATA_ROOTS")
        monkeypatch.setenv("FER_DATA", str(elsewhere))
        at = pick_typed_path(explorer_app(), elsewhere)
        assert not at.error, _texts(at)
    finally:
        shutil.rmtree(other)


def test_fer_data_is_the_active_dataset_at_start(tmp_path, monkeypatch):
    csv = _good_csv(tmp_path / "env.csv")
    monkeypatch.setenv("FER_DATA", str(csv))
    at = explorer_app()
    assert not at.error, _texts(at)
    assert at.session_state["active_dataset"]["source"] == str(csv)
    assert at.selectbox(key="ds_pick").value == f"FER_DATA: {csv}"
    assert metric_value(at, "Faces") == "42"
    # the other pages use it too
    at.switch_page("pages/home.py").run()
    assert any("env\\.csv" in m.value for m in at.markdown), [m.value for m in at.markdown]


def test_md_leaves_no_markdown_and_no_bare_address():
    from ui.text import JOINER, md
    text = "![i](http://h/p.png) [x](https://h/a) *b* `c` $x$ www.h.org me@h.org # t | u"
    out = md(text)
    assert out.replace(JOINER, "").replace("\\", "") == text
    import re
    bare = re.sub(r"\\[!-/:-@\[-`{-~]", "", out)  # drop every escaped character
    assert not re.search(r"[!-/:-@\[-`{-~]", bare), bare  # no punctuation left unescaped
    for live in ("http\\:", "https\\:", "www\\.", "e\\@"):  # no bare address either
        assert live not in out, (live, out)
