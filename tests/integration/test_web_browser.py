"""The status page in a real browser: Debian's chromium, headless, driven over the DevTools protocol (a small
stdlib websocket client below). Load the dashboard, save the token, create an event through the form, see
the banner and the chart's event window appear and the site power drop without a reload, follow the event
to its page (ack, response time), stop it with its button. On a VEN's page, see which loads it shed (EV
charger limited, HVAC setpoint raised, the constraint that limits each) and see them come back live when the
event stops. Screenshots go to test-artifacts/.

The test process plays the VEN on the bus: telemetry (a batch of history, then one payload a second), the
ack to dr.vtn's command, a lower power while shedding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gevent
import pytest

from dr_common import topics
from dr_ops.busclient import BusClient
from tests.integration.test_web_platform import TOKEN, Http, iso, start_stack, web_url
from tests.support.services import IN_CI

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
                  "--remote-debugging-port=0", "--window-size=1280,1200"]


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, masking, fragmentation, ping/pong."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        assert " 101 " in lines[0], lines[0]
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        assert headers.get("sec-websocket-accept") == accept, "bad Sec-WebSocket-Accept"

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Page:
    """One browser tab over the DevTools protocol."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(f"(v => v instanceof Node ? true : v)({expression})")
            if value:
                return value
            gevent.sleep(0.2)
        raise AssertionError(f"{what or expression} not true within {timeout:g} s")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && location.href === " + json.dumps(url), what="page load")

    def center(self, selector: str) -> tuple[float, float]:
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return box[0], box[1]

    def click(self, selector: str) -> None:
        x, y = self.center(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field, select what it holds and type over it, as a user would."""
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self, expected_urls: tuple[str, ...] = ()) -> list[str]:
        """Script exceptions and logged errors, but for failed loads of URLs the page is meant to survive
        (the browser logs every non-2xx fetch)."""
        out = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(event["params"]["exceptionDetails"])[:500])
            elif event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                entry = event["params"]["entry"]
                if entry.get("source") == "network" and str(entry.get("url", "")).endswith(expected_urls):
                    continue
                out.append(f"{entry['text']} ({entry.get('url')})")
        return out


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        if IN_CI:
            pytest.fail("chromium is not installed (scripts/bootstrap installs it); CI=true")
        pytest.skip("chromium is not installed; run scripts/bootstrap")
    profile = tempfile.mkdtemp(prefix="vdr-chromium-")
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port within 30 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            (target,) = [t for t in json.load(response) if t["type"] == "page"]
        ws = WebSocket(target["webSocketDebuggerUrl"])
        page = Page(ws)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            page.call(domain)
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1200, deviceScaleFactor=1, mobile=False)
        yield page
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


class FakeVenOnTheBus:
    """Plays one VEN on the bus: telemetry every second, acks dr.vtn's commands, sheds while asked to."""

    def __init__(self, plat, ven_id: str, base_kw: float = 5.0, with_loads: bool = False) -> None:
        self.plat, self.ven_id, self.base_kw = plat, ven_id, base_kw
        self.with_loads = with_loads
        self.bus: BusClient | None = None  # the VEN's own identity: dr.vtn takes its acks only from it
        self.shed_kw = 0.0
        self.event_id: str | None = None
        self.commands: list[dict] = []
        self._loop: gevent.Greenlet | None = None

    def baseline(self, ts: float) -> float:
        return round(self.base_kw + 0.4 * ((ts // 60) % 3), 3)

    def start(self) -> None:
        now = time.time()
        times = [now - 300 + 5 * i for i in range(60)]
        history = [{"venId": self.ven_id, "ts": iso(t), "usedPowerKw": self.baseline(t),
                    "baselinePowerKw": self.baseline(t), "shedPowerKw": 0.0} for t in times]
        self.bus = BusClient(self.plat.plat, topics.ven_identity(self.ven_id)).connect()
        self.plat.publish(topics.BUS_TELEMETRY_BATCH, {"items": history})
        self.plat.bus.subscribe(topics.bus_cmd(self.ven_id), self._on_command)
        self._loop = gevent.spawn(self._run)

    def _on_command(self, peer, sender, bus, topic, headers, message) -> None:
        self.commands.append(message)
        if message.get("op") == "event":
            self.shed_kw, self.event_id = float(message["requestedReductionKw"]), message.get("eventId")
        elif message.get("op") == "restore":
            self.shed_kw, self.event_id = 0.0, None
        gevent.spawn(self.bus.publish, topics.bus_ack(self.ven_id), {
            "correlationId": message["correlationId"], "op": message["op"], "ok": True, "venId": self.ven_id,
            "data": {"targetKw": self.shed_kw, "acceptedReduceKw": self.shed_kw, "until": message.get("until")}})

    def _run(self) -> None:
        while True:
            now = time.time()
            base = self.baseline(now)
            payload = {"venId": self.ven_id, "ts": iso(now), "usedPowerKw": round(base - self.shed_kw, 3),
                       "baselinePowerKw": base, "shedPowerKw": self.shed_kw, "eventId": self.event_id,
                       "requestedReductionKw": self.shed_kw}
            if self.with_loads:
                payload["loads"] = self.loads(now)
            self.bus.publish(topics.bus_telemetry(self.ven_id), payload)
            gevent.sleep(1.0)

    def loads(self, now: float) -> dict[str, Any]:
        """Per-load detail in the shape the VEN documents: the EV charger limited first, then the HVAC."""
        ev_shed = min(self.shed_kw, 4.2)
        hvac_shed = round(max(0.0, self.shed_kw - ev_shed), 3)
        since = iso(now - 5)

        def load(kind, priority, power, shed, capacity, action, constraint, state=None, **flags):
            return {"kind": kind, "priority": priority, "state": state or ("shed" if shed > 0 else "available"),
                    "powerKw": power, "shedKw": shed, "capacityKw": capacity, "action": action,
                    "constraint": constraint, "override": flags.get("override", False), "optOut": False,
                    "critical": flags.get("critical", False), "blocked": None,
                    "setPoints": action["points"] if action else {}}

        ev_limit = round(7.2 - ev_shed, 2)
        hvac_offset = round(hvac_shed / 1.5, 2)
        return {
            "ev_charger": load("ev_charger", 10, ev_limit, ev_shed, 4.2,
                               {"type": "powerLimit", "points": {"PowerLimitKw": ev_limit},
                                "from": {"PowerLimitKw": 7.2}, "since": since, "restoring": False}
                               if ev_shed > 0 else None,
                               {"type": "departureEnergy", "limiting": ev_shed >= 4.2, "energyNeededKwh": 18.0,
                                "departureHours": 6.0, "minKw": 3.0,
                                "text": "keeps 3.0 kW to add 18.0 kWh by departure in 6.0 h"}),
            "hvac": load("hvac", 30, round(2.0 - hvac_shed, 3), hvac_shed, 3.0,
                         {"type": "setpointRaise", "points": {"CoolingSetpointC": round(24 + hvac_offset, 2)},
                          "offsetC": hvac_offset, "from": {"CoolingSetpointC": 24.0}, "since": since,
                          "restoring": False} if hvac_shed > 0 else None,
                         {"type": "comfortBand", "limiting": False, "zoneTempC": 24.4, "maxZoneTempC": 27.0,
                          "maxOffsetC": 2.0, "text": "zone 24.4 C of 27.0 C max; 2.0 C of offset left"}),
            "battery": load("battery", 50, 0.0, 0.0, 0.0, None,
                            {"type": "reserve", "limiting": True, "socPercent": 20, "reserveSocPercent": 20,
                             "maxDischargeKw": 0.0, "text": "20 % charged, at its 20 % reserve"},
                            state="limited"),
            "panel.Fridge": load("circuit", 40, 0.15, 0.0, 0.0, None,
                                 {"type": "critical", "limiting": True, "text": "critical circuit"},
                                 state="critical", critical=True),
        }

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill()
        if self.bus is not None:
            self.bus.close()


@pytest.fixture(scope="module")
def stack(vplatform):
    return start_stack(vplatform)


@pytest.fixture(scope="module")
def historian(stack):
    """platform.historian, configured as its own integration test does (no reconfiguration between them)."""
    plat, _ = stack
    config = json.loads((REPO / "platform-config" / "sites" / "demo" / "historian.json").read_text())
    config["connection"] = {"type": "sqlite", "params": {"database": str(plat.state_dir / "historian.sqlite")}}
    plat.install_agent("historian", topics.HISTORIAN_IDENTITY, config=config, tag="dr-historian", priority=20)
    plat.wait_for(lambda: plat.rpc(topics.HISTORIAN_IDENTITY, "health", timeout=3)["ok"], timeout=60,
                  what="platform.historian healthy")
    return plat


def test_dashboard_create_event_through_the_form_banner_chart_and_stop(stack, historian, browser, figure):
    plat, _ = stack
    base = web_url(plat).rstrip("/")
    http = Http(base)
    ven_id = f"ven-browser-{uuid.uuid4().hex[:4]}"
    status, _ = http("POST", "/api/vens/", {"venId": ven_id, "name": "Browser test home", "transport": "bus",
                                            "status": "online", "maxShedKw": 3})
    assert status == 201
    ven = FakeVenOnTheBus(plat, ven_id)
    ven.start()
    page = browser
    try:
        page.navigate(base + "/")
        page.wait(f"document.querySelector('#ven-table tr[data-ven-id=\"{ven_id}\"] .badge.online')", 15,
                  "the VEN listed online")
        page.wait("Number(document.getElementById('site-chart').dataset.points) >= 5", 20, "the chart drawn")
        page.js("window.__noReload = 'still the same page'")

        page.type_into("#token-input", TOKEN)
        page.click("#token-form button")
        assert page.wait("localStorage.getItem('drWebToken')") == TOKEN
        page.type_into("#event-form input[name=requestedReductionKw]", "1.5")
        page.type_into("#event-form input[name=durationMin]", "3")
        page.type_into("#event-form input[name=name]", "browser test")
        page.type_into("#event-form input[name=venIds]", ven_id)
        t0 = time.monotonic()
        page.click("#event-submit")
        result = page.wait("(t => t.startsWith('created') && t)"
                           "(document.getElementById('event-form-result').textContent)", 10, "the form's confirmation")
        event_id = result.split()[1]
        assert event_id.startswith("evt-")
        page.wait(f"[...document.querySelectorAll('.event-banner.active')].some(b => b.dataset.eventId === '{event_id}'"
                  " && b.textContent.includes('browser test'))", 10, "the active event's banner")
        banner_s = time.monotonic() - t0
        page.wait(f"document.getElementById('site-chart').dataset.eventIds.split(' ').includes('{event_id}')", 10,
                  "the event window on the chart")
        page.wait("parseFloat(document.getElementById('stat-shed').textContent) >= 1.5", 15,
                  "the site shedding 1.5 kW")
        # the VEN sheds whole loads, so it may shed more than asked (a 2 kW water heater for 1.5 kW)
        shed_kw = float(page.js("parseFloat(document.getElementById('stat-shed').textContent)"))
        page.wait(f"document.querySelector('#ven-table tr[data-ven-id=\"{ven_id}\"] td:last-child a')?.textContent"
                  f" === '{event_id}'", 10, "the VEN row showing the event")
        gevent.sleep(2.5)  # a few more points of the lower power on the chart
        shed_kw = max(shed_kw, float(page.js("parseFloat(document.getElementById('stat-shed').textContent)")))
        assert page.js("window.__noReload") == "still the same page"
        shot = page.screenshot(ARTIFACTS / "web_dashboard.png")

        event = http.get(f"/api/events/{event_id}")
        assert event["status"] == "active" and event["requestedReductionKw"] == 1.5 and event["venIds"] == [ven_id]
        assert event["name"] == "browser test" and 170 <= event["durationS"] <= 190

        page.navigate(f"{base}/events/{event_id}")
        page.wait(f"document.querySelector('#participant-table tr[data-ven-id=\"{ven_id}\"] .badge.online')", 15,
                  "the VEN's ack on the event page")
        page.wait("document.getElementById('m-avg').textContent.endsWith('ms')", 10, "the average response time")
        page.wait("document.getElementById('m-current').textContent.startsWith('1.50')", 10, "the current reduction")
        # while it runs, the historian's window is the whole event (a stopped one needs a minute of shedding)
        # (the page re-reads the report every 10 s; the first one may predate the historian's first reading, and
        # the average over a window that starts before the shed grows as the event goes on)
        rows = page.wait("(rows => rows.some(r => r[0] === " + json.dumps(ven_id) + " && r[1] === 'ven-reported' "
                         "&& parseFloat(r[4]) > 0.2) && rows)([...document.querySelectorAll('#mv-table tbody tr')]"
                         ".map(tr => [...tr.cells].map(td => td.textContent)))", 60,
                         "the M&V report from the historian, with the VEN's shed in its average")
        (reported,) = [r for r in rows if r[0] == ven_id and r[1] == "ven-reported"]
        # average reduction against the VEN's own baseline: positive, metered below the baseline, the average at
        # most the peak, and the peak at most the shed the site showed (this VEN reports a baseline that moves
        # every minute and its used power exactly the shed below it, so baseline and metered power averaged over
        # different samples of an interval would show here)
        baseline_kwh, metered_kwh, avg_kw, peak_kw = (float(reported[i]) for i in (2, 3, 4, 5))
        assert metered_kwh < baseline_kwh and 0.2 < avg_kw <= peak_kw + 1e-9, (reported, shed_kw)
        assert peak_kw <= shed_kw + 0.01, (reported, shed_kw)
        assert any(r[0] == "total" for r in rows)
        # the chosen baseline method (the first meter-data method of the report) and its accuracy, or why it is not
        # known yet (the historian backcasts it on the site's non-event days; this platform's history is minutes)
        chosen = next(r[1] for r in rows if r[1] != "ven-reported")
        accuracy = page.js("document.getElementById('mv-accuracy').textContent")
        assert accuracy.startswith(chosen) and ("relative RMSE" in accuracy or "accuracy unknown" in accuracy
                                                or "no non-event day" in accuracy), (chosen, accuracy)
        event_shot = page.screenshot(ARTIFACTS / "web_event.png")
        page.click("#stop-button")
        page.wait("document.getElementById('event-status').textContent === 'completed'", 10, "the event completed")
        plat.wait_for(lambda: any(c.get("op") == "restore" for c in ven.commands), timeout=10, what="restore sent")
        assert http.get(f"/api/events/{event_id}")["status"] == "completed"
        # a report the historian cannot compute (yet) is a note on the page, not a broken page
        assert page.errors(expected_urls=("/performance",)) == []
        figure("status page in chromium: form submit -> active banner", f"{banner_s * 1000:.0f} ms")
        figure("status page screenshots", f"{shot} ({shot.stat().st_size} B), {event_shot}")
    except BaseException:
        failed = page.screenshot(ARTIFACTS / "web_failure.png")
        print(f"\nscreenshot of the failure: {failed}\npage text:\n{page.js('document.body.innerText')[:3000]}"
              f"\nbrowser errors: {page.errors()}")
        raise
    finally:
        ven.stop()


def test_ven_page_shows_which_loads_were_shed_and_updates_live(stack, browser, figure):
    """The seed's step 7: the operator sees the EV charger limited and the HVAC setpoint raised, each with the
    constraint that limits it, and sees them given back when the event stops, without reloading."""
    plat, _ = stack
    base = web_url(plat).rstrip("/")
    http = Http(base)
    ven_id = f"ven-loads-{uuid.uuid4().hex[:4]}"
    status, _ = http("POST", "/api/vens/", {"venId": ven_id, "name": "Loads test home", "transport": "bus",
                                            "status": "online", "maxShedKw": 6})
    assert status == 201
    ven = FakeVenOnTheBus(plat, ven_id, with_loads=True)
    ven.start()
    page = browser
    row = "document.querySelector('#load-table tr[data-load=\"{}\"]')"
    cell = "document.querySelector('#load-table tr[data-load=\"{}\"] td.{}')?.textContent || ''"
    try:
        page.navigate(base + "/")
        page.events.clear()  # what the previous page logged is not this test's
        page.wait(f"document.querySelector('#ven-table tr[data-ven-id=\"{ven_id}\"] a')", 15, "the VEN listed")
        page.click(f"#ven-table tr[data-ven-id=\"{ven_id}\"] td a")
        page.wait(f"location.pathname === '/vens/{ven_id}'", 10, "the VEN's page")
        page.wait(f"{row.format('ev_charger')}?.dataset.state === 'available'", 15, "the loads, none shed")
        page.wait("[...document.querySelectorAll('#load-table tbody tr')].map(r => r.dataset.load).join(',') === "
                  "'ev_charger,hvac,panel.Fridge,battery'", 5, "every load in shed order")
        assert "critical" in page.js(cell.format("panel.Fridge", "flags"))
        assert "reserve" in page.js(cell.format("battery", "constraint"))
        page.js("window.__noReload = 'same VEN page'")

        status, event = http("POST", "/api/events/", {"startTime": iso(time.time()), "durationS": 120,
                                                      "requestedReductionKw": 5.0, "venIds": [ven_id],
                                                      "name": "loads test"})
        assert status == 201, event
        t0 = time.monotonic()
        page.wait(f"{row.format('ev_charger')}?.dataset.state === 'shed' && "
                  f"{row.format('hvac')}?.dataset.state === 'shed'", 15, "the EV charger and the HVAC shed")
        shown_s = time.monotonic() - t0
        ev_action = page.js(cell.format("ev_charger", "action"))
        hvac_action = page.js(cell.format("hvac", "action"))
        assert "power limit" in ev_action and "PowerLimitKw 7.2 -> 3" in ev_action, ev_action
        assert "setpoint raised" in hvac_action and "CoolingSetpointC 24 -> 24.53" in hvac_action, hvac_action
        assert "departure" in page.js(cell.format("ev_charger", "constraint"))
        assert "limiting" in page.js(cell.format("ev_charger", "constraint"))
        assert "comfort" in page.js(cell.format("hvac", "constraint")) or \
            "27.0 C max" in page.js(cell.format("hvac", "constraint"))
        assert page.js("document.getElementById('v-shed').textContent") == "5.00 kW"
        shot = page.screenshot(ARTIFACTS / "web_ven_loads.png")

        status, _ = http("POST", f"/api/events/{event['eventId']}/stop")
        assert status == 200
        page.wait(f"{row.format('ev_charger')}?.dataset.state === 'available' && "
                  f"{row.format('hvac')}?.dataset.state === 'available'", 15, "the loads given back, live")
        assert page.js("window.__noReload") == "same VEN page"
        assert page.errors(expected_urls=("/performance",)) == []  # a poll of the previous page in flight
        figure("VEN page in chromium: event created -> loads shown shed", f"{shown_s * 1000:.0f} ms")
        figure("VEN page screenshot", f"{shot} ({shot.stat().st_size} B)")
    except BaseException:
        failed = page.screenshot(ARTIFACTS / "web_ven_failure.png")
        print(f"\nscreenshot of the failure: {failed}\npage text:\n{page.js('document.body.innerText')[:3000]}"
              f"\nbrowser errors: {page.errors()}")
        raise
    finally:
        ven.stop()
