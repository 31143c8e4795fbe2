"""One process serving a site's field devices: Modbus TCP, BACnet/IP, and a loopback control port.

    python -m dr_tools.devices.service --config devices.json --modbus-port P --bacnet-port P --control-port P
                                       --ports-file FILE

The BACnet devices take consecutive UDP ports from --bacnet-port (or their own `port`). When every server is
bound, the process writes the ports it serves to --ports-file (JSON) and runs until SIGTERM/SIGINT.

Control port (JSON, one request per line, answers one line): `{"op": "status"}`,
`{"op": "fault", "device": NAME, "silent": bool, "refuseWrites": bool, "delayS": s}` (any subset),
`{"op": "clear"}` (every fault off), `{"op": "read", "device": NAME, "point": POINT}` (the model's value),
`{"op": "priority", "device": NAME, "object": "analogValue,1"}` (filled priority-array slots),
`{"op": "written"}` (the last BACnet writes: device, object, priority, value),
`{"op": "write", "device": NAME, "point": POINT, "value": V}` (a Modbus device's model point changed on the
device itself, as its own panel or another client would: the value a reading then shows).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from dr_common.schema import loads_strict

from .bacnet_server import OBJECTS, priority_slots, start_bacnet
from .fieldsite import FieldConfigError, FieldSite, Faults
from .modbus_server import start_modbus

_log = logging.getLogger("dr_tools.devices")

HOST = "127.0.0.1"
MAX_LINE = 4096
MAX_CONNECTIONS = 16
OPS = ("status", "fault", "clear", "read", "priority", "written", "write")


class Control:
    """The control port's requests against a running site."""

    def __init__(self, site: FieldSite, apps: dict[str, Any], ports: dict[str, Any]) -> None:
        self.site, self.apps, self.ports = site, apps, ports
        self.connections = 0

    def handle(self, request: Any) -> dict[str, Any]:
        """One request -> one answer; a bad request is `{"ok": false, "error": ...}` naming the field."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "request: expected a JSON object"}
        op = request.get("op")
        if op not in OPS:
            return {"ok": False, "error": f"op: expected one of {', '.join(OPS)}"}
        try:
            if op == "status":
                return {"ok": True, "ports": self.ports, **self.site.status()}
            if op == "clear":
                for dev in self.site.devices.values():
                    dev.faults = Faults()
                return {"ok": True}
            if op == "written":
                return {"ok": True, "written": [list(w) for w in self.site.written]}
            dev = self.site.devices.get(request.get("device"))  # type: ignore[arg-type]
            if dev is None:
                return {"ok": False, "error": f"device: expected one of {', '.join(self.site.devices)}"}
            if op == "fault":
                dev.faults.update({k: v for k, v in request.items() if k not in ("op", "device")})
                _log.info("fault on %s: %s", dev.name, dev.faults.as_dict())
                return {"ok": True, "faults": dev.faults.as_dict()}
            if op == "read":
                self.site.sync()
                return {"ok": True, "value": self.site.read_point(dev, str(request.get("point")))}
            if op == "write":
                if dev.protocol != "modbus":
                    return {"ok": False, "error": f"device: {dev.name} is not a Modbus device (a BACnet point "
                                                  "follows its priority array)"}
                self.site.sync()
                self.site.write_point(dev, str(request.get("point")), request.get("value"))
                _log.info("%s/%s written on the device: %r", dev.name, request.get("point"), request.get("value"))
                return {"ok": True, "value": self.site.read_point(dev, str(request.get("point")))}
            if op == "priority":
                obj_type, _, instance = str(request.get("object", "")).partition(",")
                return {"ok": True, "slots": {str(k): v for k, v in
                                              priority_slots(self.apps[dev.name], obj_type, int(instance)).items()}}
        except (FieldConfigError, KeyError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"op: {op} not handled"}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until it closes (at most MAX_CONNECTIONS at once)."""
        if self.connections >= MAX_CONNECTIONS:
            writer.write(b'{"ok": false, "error": "too many control connections"}\n')
            writer.close()
            return
        self.connections += 1
        try:
            while line := await reader.readline():
                if len(line) > MAX_LINE:
                    answer: dict[str, Any] = {"ok": False, "error": "request: too long"}
                else:
                    try:
                        answer = self.handle(loads_strict(line.decode("utf-8", "replace")))
                    except ValueError as exc:
                        answer = {"ok": False, "error": f"request: {exc}"}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            _log.info("control connection closed: %s", exc)
        finally:
            self.connections -= 1
            writer.close()


async def run(config: dict[str, Any], modbus_port: int, bacnet_port: int, control_port: int,
              ports_file: Path | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    site = FieldSite(config)
    server, _context = await start_modbus(site, HOST, modbus_port)
    bacnet_ports: dict[str, int] = {}
    next_port = bacnet_port
    for dev in site.devices.values():
        if dev.protocol == "bacnet":
            bacnet_ports[dev.name] = dev.port or next_port
            next_port = max(next_port, bacnet_ports[dev.name]) + 1
    apps = start_bacnet(site, HOST, lambda d: bacnet_ports[d.name])
    ports = {"host": HOST, "modbus": modbus_port, "bacnet": bacnet_ports, "control": control_port,
             "pid": os.getpid()}
    control = Control(site, apps, ports)
    ctl = await asyncio.start_server(control.serve, HOST, control_port, limit=MAX_LINE * 2)
    if ports_file is not None:
        tmp = ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(ports_file)
    _log.info("serving site %s: %s", site.name, ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ctl.close()
    for app in apps.values():
        app.close()
    await server.shutdown()
    _log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dr_tools.devices.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--modbus-port", type=int, required=True)
    parser.add_argument("--bacnet-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--ports-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    try:
        config = loads_strict(args.config.read_text())
        asyncio.run(run(config, args.modbus_port, args.bacnet_port, args.control_port, args.ports_file))
    except (OSError, ValueError) as exc:
        _log.error("error: %s", exc)
        return 1
    return 0


__all__ = ["Control", "OBJECTS", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
