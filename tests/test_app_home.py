"""AppTest of the router and the Home page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def test_home_is_the_default_page_and_links_every_existing_page():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.title[0].value.endswith("FER Studio")
    links = {pl.proto.page for pl in at.get("page_link")}
    expected = {p.stem for p in (ROOT / "pages").glob("*.py") if p.stem != "home"}
    assert "explorer" in expected and links == expected


def test_home_names_the_synthetic_demo_as_active_dataset():
    at = AppTest.from_file(APP, default_timeout=60).run()
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Synthetic demo" in text and "not real people" in text


def test_home_shows_a_dataset_chosen_elsewhere_in_the_session():
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["active_dataset"] = {"source": "/x/fer2013.csv", "strict": True,
                                          "name": "data/fer2013.csv"}
    at.run()
    assert any(m.value == "data\\/fer2013\\.csv" for m in at.markdown)  # escaped Markdown
    assert not any("not real people" in c.value for c in at.caption)
