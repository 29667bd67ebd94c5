"""AppTest of the Dataset Explorer: demo data, typed paths, uploads, bad data, grid filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.data.fer2013 import to_csv_bytes
from tests.factories import explorer_app, metric_value, pattern_faces, pick_typed_path
from ui.text import md

@pytest.fixture(autouse=True)
def _tmp_is_an_allowed_root(tmp_path, monkeypatch):
    """Typed paths must be under an allowed root: these tests type paths under tmp_path."""
    monkeypatch.setenv("FER_DATA_ROOTS", str(tmp_path))


def _csv(tmp_path, n_per_class=6, bad_line: str | None = None) -> Path:
    ds = pattern_faces(n_per_class=n_per_class, splits=("train", "val"))
    data = to_csv_bytes(ds.images, ds.labels, ds.split)
    if bad_line:
        data += bad_line.encode() + b"\n"
    path = tmp_path / "faces.csv"
    path.write_bytes(data)
    return path


def test_demo_loads_with_counts_and_label():
    at = explorer_app()
    assert not at.error, [e.value for e in at.error]
    assert any("Synthetic demo" in i.value for i in at.info)
    total = int(metric_value(at, "Faces").replace(",", ""))
    assert total > 1000
    assert int(metric_value(at, "train").replace(",", "")) < total
    assert at.session_state["active_dataset"]["source"] == "demo"


def test_typed_path_loads_and_becomes_active(tmp_path):
    at = pick_typed_path(explorer_app(), _csv(tmp_path))
    assert not at.error, [e.value for e in at.error]
    assert metric_value(at, "Faces") == f"{6 * 7 * 2}"
    assert metric_value(at, "train") == "42" and metric_value(at, "val") == "42"
    assert at.session_state["active_dataset"]["source"].endswith("faces.csv")


def test_missing_path_shows_error_not_exception(tmp_path):
    at = pick_typed_path(explorer_app(), tmp_path / "nope.csv")
    assert not at.exception
    assert any("no such file" in e.value for e in at.error)
    # the page stays usable: picking the demo again works
    at.selectbox(key="ds_pick").select("Synthetic demo").run()
    assert not at.error and not at.exception


def test_bad_row_error_then_skip_bad_rows(tmp_path):
    path = _csv(tmp_path, bad_line="3,1 2 3,Training")
    at = pick_typed_path(explorer_app(), path)
    assert at.error and md("faces.csv") in at.error[0].value
    at.checkbox(key="ds_skip").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert metric_value(at, "Faces") == "84"
    assert any("1 bad rows skipped" in e.label for e in at.expander)


def test_upload_csv_loads_and_bad_upload_shows_error(tmp_path):
    at = explorer_app()
    at.selectbox(key="ds_pick").select("Upload a file…").run()
    good = _csv(tmp_path).read_bytes()
    at.file_uploader(key="ds_upload").upload("faces.csv", good, "text/csv").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert metric_value(at, "Faces") == "84"
    at.file_uploader(key="ds_upload").upload("junk.csv", b"hello,world\n1,2\n",
                                              "text/csv").run()
    assert not at.exception
    assert at.error, "a CSV without the FER2013 columns must show an error"
    assert md("junk.csv") in at.error[0].value and "pixels" in at.error[0].value, \
        at.error[0].value
    at.file_uploader(key="ds_upload").upload("faces.gz", good, "application/gzip").run()
    assert not at.exception
    assert any(md("expected a .csv, .csv.gz or .zip") in e.value for e in at.error)


def test_upload_over_the_limit_is_refused_with_a_clear_message(monkeypatch):
    import ui.data
    from fer_core.errors import FerError
    monkeypatch.setattr(ui.data, "max_upload_mb", lambda: 1)
    with pytest.raises(FerError, match="upload limit is 1 MB"):
        ui.data.save_upload("big.csv", b"x" * (2 * 1024 * 1024))


def test_grid_filters_change_the_samples(tmp_path):
    at = pick_typed_path(explorer_app(), _csv(tmp_path))
    grid = lambda: at.image[0].captions  # noqa: E731  (the sample grid is the first image list)
    before = grid()
    at.button[0].click().run()  # reshuffle: another random page of the same faces
    assert len(grid()) == 40 and grid() != before
    before = grid()
    assert len(before) == 40  # one page of the 84 faces
    assert any("(train)" in c for c in before) and any("(val)" in c for c in before)
    at.selectbox(key="grid_split").select("val").run()
    at.selectbox(key="grid_class").select("happy").run()
    after = grid()
    assert after and all(c.endswith("happy (val)") for c in after), after
    assert len(after) == 6
    order = after
    at.button[0].click().run()  # reshuffle
    assert sorted(grid()) == sorted(order)


@pytest.mark.parametrize("page", ["pages/explorer.py"])
def test_switching_pages_keeps_the_dataset(tmp_path, page):
    at = pick_typed_path(explorer_app(), _csv(tmp_path))
    at.switch_page("pages/home.py").run()
    assert any(md("faces.csv") in m.value for m in at.markdown)
    at.switch_page(page).run()
    assert metric_value(at, "Faces") == "84"


def test_files_in_data_dir_and_fer_data_env_are_offered(tmp_path, monkeypatch):
    import gzip

    import ui.data
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "faces.csv.gz").write_bytes(gzip.compress(_csv(tmp_path).read_bytes()))
    (data_dir / "notes.txt").write_text("not a dataset")
    other = _csv(tmp_path / "data", n_per_class=3).rename(tmp_path / "env.csv")
    monkeypatch.setattr(ui.data, "DATA_DIR", data_dir)
    monkeypatch.setenv("FER_DATA", str(other))
    at = explorer_app()
    options = at.selectbox(key="ds_pick").options
    assert "data/faces.csv.gz" in options and "data/notes.txt" not in options
    at.selectbox(key="ds_pick").select("data/faces.csv.gz").run()
    assert not at.error and metric_value(at, "Faces") == "84"
    at.selectbox(key="ds_pick").select(f"FER_DATA: {other}").run()
    assert not at.error and metric_value(at, "Faces") == "42"
