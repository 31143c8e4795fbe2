"""Shared plumbing of the operator scripts (scripts/*.py): MQTT and HTTP options, listening, printing.

The scripts run with any python3: scripts/platform_python.py re-runs them with the Python of the platform's
virtual environment, where this package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any


# --- MQTT ---------------------------------------------------------------------------------------------
def add_mqtt_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT broker")
    group.add_argument("--broker-host", "--host", default=os.environ.get("VDR_MQTT_HOST", "127.0.0.1"))
    group.add_argument("--broker-port", "--port", type=int, default=int(os.environ.get("VDR_MQTT_PORT", "1883")))
    group.add_argument("--username", default=os.environ.get("VDR_MQTT_USERNAME"))
    group.add_argument("--password", default=os.environ.get("VDR_MQTT_PASSWORD"))
    group.add_argument("--cafile", help="CA certificate: connect with TLS")
    group.add_argument("--cert", help="client certificate (mutual TLS)")
    group.add_argument("--key", help="client private key (mutual TLS)")
    group.add_argument("--client-id", default="", help="MQTT client id (default: generated)")


def mqtt_connect(args: argparse.Namespace, timeout: float = 10.0):
    """A connected paho client with its network loop running in a background thread."""
    import threading

    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id or "", protocol=mqtt.MQTTv311)
    if args.username:
        client.username_pw_set(args.username, args.password)
    if args.cafile:
        client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_client, _userdata, _flags, reason_code, _props):
        result["rc"] = reason_code
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(args.broker_host, args.broker_port, keepalive=30)
    except OSError as exc:
        sys.exit(f"error: cannot reach the MQTT broker at {args.broker_host}:{args.broker_port}: {exc}")
    client.loop_start()
    if not connected.wait(timeout) or result["rc"].is_failure:
        client.loop_stop()
        sys.exit(f"error: the MQTT broker at {args.broker_host}:{args.broker_port} refused the connection: "
                 f"{result.get('rc', 'no answer')}")
    return client


def decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"<not JSON>": payload[:200].decode("utf-8", "replace")}


# --- HTTP (dr.web) ------------------------------------------------------------------------------------
def add_api_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("volttron-dr API (dr.web)")
    group.add_argument("--backend-url", "--api-url", dest="api_url",
                       default=os.environ.get("VDR_API_URL", "http://127.0.0.1:8080"))
    group.add_argument("--token", default=os.environ.get("VDR_API_TOKEN"),
                       help="bearer token for writes (the site's web config api_token; env VDR_API_TOKEN)")


def api_request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = args.api_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except json.JSONDecodeError:
            return exc.code, {"error": raw.decode("utf-8", "replace")[:500]}
    except urllib.error.URLError as exc:
        sys.exit(f"error: cannot reach the API at {url}: {exc.reason}")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def listen(args: argparse.Namespace, topic_filters: list[str]) -> int:
    """Print every message on the topic filters as one JSON line; stop after --count messages or --timeout s.
    Returns the exit code: 0, or 1 when --count was given and not reached."""
    import queue
    import time

    from dr_common.timeutil import to_iso, utcnow

    inbox: "queue.SimpleQueue[tuple[str, bytes]]" = queue.SimpleQueue()
    client = mqtt_connect(args)
    client.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    for topic in topic_filters:
        client.subscribe(topic, qos=1)
    sys.stderr.write(f"listening on {', '.join(topic_filters)} at {args.broker_host}:{args.broker_port}\n")
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.count is None or seen < args.count:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            try:
                topic, payload = inbox.get(timeout=wait if wait is not None else 1.0)
            except queue.Empty:
                continue
            seen += 1
            sys.stdout.write(json.dumps({"receivedAt": to_iso(utcnow()), "topic": topic, "payload": decode(payload)})
                             + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
    sys.stderr.write(f"{seen} message(s)\n")
    return 1 if args.count is not None and seen < args.count else 0


def add_listen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ven-id", default="+", help="the VEN to watch (default: every VEN, '+')")
    parser.add_argument("--count", type=int, help="exit after this many messages (exit 1 if not reached)")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds")
