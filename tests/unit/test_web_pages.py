"""The status page's HTML shells and static files: served, self-contained (no CDN), wired to the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_web_harness import WebHarness

WEB = Path(__file__).resolve().parents[2] / "web" / "dr_web"


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


@pytest.mark.parametrize("path,needles", [
    ("/", ['id="site-chart"', 'id="banners"', 'id="ven-table"', 'id="event-form"', "dashboard.js", "chart.js"]),
    ("/events", ['id="event-table"', 'id="event-form"', "events.js"]),
    ("/events/evt-123", ['data-event-id="evt-123"', 'id="participant-table"', 'id="mv"', "event.js"]),
])
def test_pages_render_with_their_parts(web, path, needles):
    r = web.get(path)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for needle in needles:
        assert needle in html, needle
    assert 'id="token-input"' in html and 'data-refresh-ms="2000"' in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        if src.startswith("/static/"):
            assert web.get(src).status_code == 200, src


def test_an_event_id_outside_the_identifier_rule_is_refused_before_the_page(web):
    r = web.get('/events/%3Cimg%20src=x%20onerror=alert(1)%3E%22')
    assert r.status_code == 400 and r.json["field"] == "eventId" and r.mimetype == "application/json"


def test_no_external_resources():
    """No CDN, no web fonts, no build step: every file the page loads is in the package."""
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("static/*")]:
        text = path.read_text()
        assert not re.search(r"https?://", text), path
        assert "innerHTML" not in text, f"{path}: build DOM nodes with textContent"
