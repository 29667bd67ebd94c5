"""Real browser: Markdown typed into the Dataset Explorer's path box is shown, not rendered (no
link, no image fetched from the address it names)."""

from __future__ import annotations

import http.server
import threading

import pytest

from tests.factories import choose_option, free_port

pytestmark = pytest.mark.browser


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    port = free_port()
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, _Recorder.hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("prefix", ["/nowhere", "DATA"])
def test_markdown_in_a_typed_path_is_not_rendered(streamlit_server, page, recorder, prefix):
    from playwright.sync_api import expect

    from fer_core import DATA_DIR
    port, hits = recorder
    root = str(DATA_DIR) if prefix == "DATA" else prefix   # allowed root / not allowed
    typed = (f"{root}/![i](http://127.0.0.1:{port}/p.png) [x](http://127.0.0.1:{port}/a) "
             f"*b* http://127.0.0.1:{port}/auto www.example.org me@example.org")
    page.goto(f"{streamlit_server.url}/explorer")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Synthetic demo").first).to_be_visible(timeout=90_000)
    choose_option(page, main.get_by_test_id("stSelectbox").filter(has_text="Dataset").first,
                  "Type a path…")
    box = main.get_by_label("Path to a FER2013 CSV (.csv/.csv.gz/.zip) or an image folder")
    box.fill(typed)
    box.press("Enter")
    alert = main.get_by_test_id("stAlertContainer").filter(has_text="p.png")
    expect(alert).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)
    assert alert.locator("img").count() == 0 and alert.locator("a").count() == 0
    assert alert.locator("em").count() == 0
    text = alert.inner_text().replace("\u2060", "")  # the invisible joiner md() adds
    assert f"![i](http://127.0.0.1:{port}/p.png)" in text and "*b*" in text, text
    assert ("not allowed" in text) == (prefix != "DATA"), text
    assert hits == [], hits
