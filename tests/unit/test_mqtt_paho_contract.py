"""The contract between dr.mqtt's link and paho-mqtt's private internals.

`link._NativeSocketClient` overrides or calls paho internals (_packet_read, _sock_recv, _sock_close,
_create_socket_connection, _packet_queue, loop_read; _do_on_publish, _send_puback; _rbuf, _in_packet,
_out_message_mutex, _out_messages, _msgtime_mutex, _last_bytes_received, _manual_ack, _protocol, _sock). They are
not part of paho's API, so paho is pinned exactly (paho-mqtt==2.2.0 in the agent's pyproject and in
platform-config/pins.txt), and this test fails loudly, naming the method, when the installed paho is another
version or any of those internals changed. bench/mqtt_link_variants.py measured why they are worth it (at 1,000
messages: fan-out 133 vs 185 ms, fan-in 141 vs 240 ms, bridge CPU 68 vs 171 ms against paho's public API only).
To move to another paho: re-read each method below, adapt link.py, re-run the bench, record the new hashes.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from dr_common.mqtt import link as link_mod

PINNED = "2.2.0"
REPO = Path(__file__).resolve().parents[2]

# sha256 of inspect.getsource() of every paho method the link overrides or relies on, as in paho-mqtt 2.2.0
SOURCE_SHA256 = {
    "_packet_read": "bbe32d8af1e37955175d7835c8b0a16a61435dbc40e563f447f08b102c776347",
    "_sock_recv": "c3b9043a46dd81b79a601a321a2479154ec158c75243f4f4ad7431474efa1d62",
    "_sock_close": "638e9c4e5a7f32ae76d3d73ea55d0ec8c94c69e9e35d7e980658f57f473b0d4b",
    "_create_socket_connection": "fb7815d85a2c94612d484a6b886a00516e88d6dc03828f7fde818b2b3558b8e5",
    "_packet_queue": "e298fa9ab31e5f79c1c6d08d303b049db9a2bcf681dcac1cd510b2fb519d3a26",
    "_do_on_publish": "5bbcad6f9447107a5ba9446e6dbdbdf4eedad2734533d900db907240f75b93e4",
    "_send_puback": "bb015cefb632f9428e6b25b7529412fee3ebbc781e2f0933ac3df06f4f11d7f2",
    "loop_read": "4fa11ca2d451dbec3f8518b7ce7578e17513c03d319139017512773b8ec1bded",
    "_handle_publish": "1bbaa3ef0e3afc6dea0423a41e67170930c024827e2e8dbf69b5d61c304b675d",
    "_handle_pubackcomp": "04d39ba283b1f3bee9aa99f5b27b112eca549f889a58a8a5720d7f7873b09428",
    "_get_proxy": "725ac4a27856ecd91a7a954a01783c167e146267e3e8cce2481f1f18847aecd1",
}
ATTRIBUTES = ("_in_packet", "_out_message_mutex", "_out_messages", "_msgtime_mutex", "_last_bytes_received",
              "_manual_ack", "_protocol", "_sock", "_ssl", "_host", "_port", "_connect_timeout")


def test_paho_is_the_pinned_version_everywhere():
    assert paho.mqtt.__version__ == PINNED, (
        f"paho-mqtt {paho.mqtt.__version__} is installed; dr.mqtt's link is written against {PINNED}'s internals")
    pyproject = (REPO / "agents" / "mqtt_bridge" / "pyproject.toml").read_text()
    assert f'"paho-mqtt=={PINNED}"' in pyproject
    pins = (REPO / "platform-config" / "pins.txt").read_text()
    assert re.search(rf"^paho-mqtt=={re.escape(PINNED)}$", pins, re.M)


@pytest.mark.parametrize("name", sorted(SOURCE_SHA256))
def test_the_paho_internals_the_link_relies_on_are_unchanged(name):
    method = getattr(mqtt.Client, name, None)
    assert method is not None, f"paho.mqtt.client.Client.{name} is gone: dr_common.mqtt.link must be adapted"
    digest = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()
    assert digest == SOURCE_SHA256[name], (
        f"paho.mqtt.client.Client.{name} changed since paho-mqtt {PINNED}: re-read it and adapt "
        f"dr_common.mqtt.link._NativeSocketClient before moving the pin")


def test_the_paho_attributes_the_link_reads_exist():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    missing = [name for name in ATTRIBUTES if not hasattr(client, name)]
    assert not missing, f"paho.mqtt.client.Client no longer has {missing}: adapt dr_common.mqtt.link"
    assert "command" in client._in_packet and hasattr(client._out_message_mutex, "__enter__")


def test_every_override_of_the_link_is_covered_here():
    overridden = {name for name, value in vars(link_mod._NativeSocketClient).items()
                  if callable(value) and name.startswith("_") and not name.startswith("__")
                  and hasattr(mqtt.Client, name)}
    unrecorded = overridden - set(SOURCE_SHA256)
    assert not unrecorded, f"overrides without a recorded paho source: {unrecorded}"
