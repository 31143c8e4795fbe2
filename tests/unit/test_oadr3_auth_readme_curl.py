"""The README's OpenADR 3.1 curl lines (token, program, event, event list) run as written, by bash and curl,
against dr.web's OpenADR blueprint served on a free loopback port with the demo site's own clients (its
web.json) and the real dr.vtn service in-process; only the `BASE=` line is pointed at that port. The demo's
printout (`scripts/demo`) names the same base URL and clients."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from dr_ops.demo import openadr_lines
from dr_tools.webharness import WebHarness
from dr_web.oadr3 import BASE_PATH
from dr_web.oadr3.auth import Oadr3Config, TokenIssuer
from dr_web.oadr3.blueprint import install

REPO = Path(__file__).resolve().parents[2]
DEMO_WEB = json.loads((REPO / "platform-config" / "sites" / "demo" / "web.json").read_text())
DEMO_BASE = f"http://{DEMO_WEB['host']}:{DEMO_WEB['port']}{BASE_PATH}"


def readme_block() -> str:
    """The bash block of the README's `## OpenADR 3.1` section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## OpenADR 3.1"):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README's OpenADR 3.1 section has no bash block"
    return match.group(1)


def json_documents(text: str) -> list:
    decoder, out, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        value, index = decoder.raw_decode(text, index)
        out.append(value)
    return out


@pytest.fixture
def demo_api(tmp_path):
    web = WebHarness(tmp_path)
    install(web.app, TokenIssuer(Oadr3Config.model_validate(DEMO_WEB["openadr3"])), web.gateway, "dr.vtn", 5.0)
    ready = threading.Event()
    holder = {}

    def serve() -> None:
        holder["http"] = make_server("127.0.0.1", 0, web.app, threaded=False)
        ready.set()
        holder["http"].serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield web, f"http://127.0.0.1:{holder['http'].server_port}{BASE_PATH}"
    holder["http"].shutdown()
    thread.join(5)
    web.close()


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs bash and curl")
def test_the_readme_curl_lines_get_a_token_make_a_program_and_an_event(demo_api):
    web, base = demo_api
    block = readme_block()
    assert f"BASE={DEMO_BASE}\n" in block                    # the README speaks of the demo's own address
    script = block.replace(f"BASE={DEMO_BASE}\n", f"BASE={base}\n")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    created, listed = json_documents(done.stdout)
    assert created["objectType"] == "EVENT" and created["eventName"] == "shed 2 kW now"
    assert created["intervals"][0]["payloads"][0] == {"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-2]}
    assert [e["id"] for e in listed] == [created["id"]]
    program = web.vtn.oadr_get("programs", created["programID"], {"clientId": "demo-bl", "role": "bl"})
    assert program["programName"] == "summer-peak"
    event = web.vtn.get_event(created["id"])                 # an OpenADR event is a dr.vtn event
    assert event["requestedReductionKw"] == 2.0


def test_the_demo_prints_the_openadr_base_url_and_the_demo_clients():
    lines = openadr_lines(DEMO_WEB, f"http://{DEMO_WEB['host']}:{DEMO_WEB['port']}/")
    assert lines[0].startswith(f"OpenADR 3.1: {DEMO_BASE} ")
    assert any("demo-bl / demo-bl-secret-change-me" in line and "business logic" in line for line in lines)
    assert any("demo-ven / demo-ven-secret-change-me" in line and "VEN ven-demo" in line for line in lines)
    real = {"openadr3": {"clients": [{"clientId": "c", "clientSecret": "a-real-long-secret-9", "role": "bl"}]}}
    assert not any("a-real-long-secret-9" in line for line in openadr_lines(real, "http://h:1/"))
    assert openadr_lines({}, "http://h:1/") == []
