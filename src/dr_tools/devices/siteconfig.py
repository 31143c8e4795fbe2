"""The `field` site's driver device configs pointed at the ports a device process actually serves.

The committed configs (platform-config/sites/field/driver/devices/field/*.json) name the default ports of
devices.json; tests and benchmarks start the devices on free ports and store these rewritten configs instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def device_configs(driver_dir: Path, ports: dict[str, Any], bacnet_proxy_port: int,
                   site_path: str = "field") -> dict[str, dict[str, Any]]:
    """{config-store name: device config} with Modbus ports, BACnet device addresses and the BACnet proxy's
    local port replaced by those of `ports` (what `scripts/devices start` prints)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((driver_dir / "devices" / site_path).glob("*.json")):
        config = json.loads(path.read_text())
        remote = config["remote_config"]
        if remote["driver_type"] == "modbus":
            remote["device_address"] = ports["host"]
            remote["port"] = int(ports["modbus"])
        elif remote["driver_type"] == "bacnet":
            remote["device_address"] = f"{ports['host']}:{int(ports['bacnet'][path.stem])}"
            remote["bacnet_port"] = int(bacnet_proxy_port)
        out[f"devices/{site_path}/{path.stem}"] = config
    return out
