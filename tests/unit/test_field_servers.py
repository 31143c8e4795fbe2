"""The field devices on the wire (loopback, free ports, no platform): Modbus TCP through a pymodbus client,
BACnet/IP through a bacpypes3 client, injected faults, and the control port's requests."""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from bacpypes3.app import Application
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Null, ObjectIdentifier
from pymodbus.client import AsyncModbusTcpClient

from dr_tools.devices.bacnet_server import start_bacnet
from dr_tools.devices.fieldsite import FieldSite
from dr_tools.devices.modbus_server import start_modbus
from dr_tools.devices.service import Control

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / "platform-config" / "sites" / "field" / "devices.json").read_text())
HOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def test_modbus_reads_writes_exceptions_and_faults():
    async def main() -> None:
        fs = FieldSite(CONFIG)
        port = free_port()
        server, context = await start_modbus(fs, HOST, port)
        client = AsyncModbusTcpClient(HOST, port=port, timeout=0.5, retries=0)
        await client.connect()
        try:
            marker = await client.read_holding_registers(40000, count=2, device_id=1)
            assert marker.registers == [0x5375, 0x6E53]                       # 'SunS'
            ok = await client.write_register(0, 125, device_id=3)               # 12.5 A
            assert not ok.isError()
            assert fs.devices["ev_charger"].model.read("PowerLimitKw") == pytest.approx(3.0)
            bad = await client.write_register(0, 301, device_id=3)              # beyond 30 A
            assert bad.isError() and bad.exception_code == 3                    # ILLEGAL DATA VALUE
            ro = await client.write_register(40072, 1, device_id=2)             # meter W is read only
            assert ro.isError() and ro.exception_code == 2
            gap = await client.read_holding_registers(39000, count=1, device_id=2)
            assert gap.isError() and gap.exception_code == 2
            assert fs.devices["ev_charger"].model.read("PowerLimitKw") == pytest.approx(3.0)

            fs.devices["ev_charger"].faults.update({"refuseWrites": True})
            refused = await client.write_register(0, 200, device_id=3)
            assert refused.isError() and refused.exception_code == 4            # SLAVE DEVICE FAILURE
            assert (await client.read_input_registers(0, count=1, device_id=3)).registers == [3000]
            fs.devices["ev_charger"].faults.update({"refuseWrites": False, "delayS": 0.3})
            t0 = time.monotonic()
            slow = await client.read_input_registers(0, count=1, device_id=3)
            assert not slow.isError() and time.monotonic() - t0 >= 0.3
            fs.devices["ev_charger"].faults.update({"delayS": 0, "silent": True})
            with pytest.raises(Exception):
                result = await client.read_input_registers(0, count=1, device_id=3)
                assert result.isError()
                raise RuntimeError("an error answer, not silence")
            assert context.refused == 3
        finally:
            client.close()
            await server.shutdown()

    asyncio.run(main())


def test_bacnet_priority_array_relinquish_range_and_faults():
    async def main() -> None:
        fs = FieldSite(CONFIG)
        ports = {"thermostat": free_port(socket.SOCK_DGRAM), "water_heater": free_port(socket.SOCK_DGRAM)}
        apps = start_bacnet(fs, HOST, lambda d: ports[d.name])
        client = Application.from_args(argparse.Namespace(
            name="client", instance=990, vendoridentifier=999, network=0, foreign=None, bbmd=None, ttl=30,
            address=f"{HOST}/32:{free_port(socket.SOCK_DGRAM)}"))
        thermostat, heater = Address(f"{HOST}:{ports['thermostat']}"), Address(f"{HOST}:{ports['water_heater']}")
        setpoint = ObjectIdentifier("analogValue,1")
        control = Control(fs, apps, {})
        try:
            assert await client.read_property(thermostat, setpoint, "presentValue") == pytest.approx(24.0)
            await client.write_property(thermostat, setpoint, "presentValue", 25.0, None, 10)
            assert fs.devices["thermostat"].model.read("CoolingSetpointC") == pytest.approx(25.0)
            assert control.handle({"op": "priority", "device": "thermostat", "object": "analogValue,1"}) == \
                {"ok": True, "slots": {"10": 25.0}}
            with pytest.raises(BaseException, match="value-out-of-range"):
                await client.write_property(thermostat, setpoint, "presentValue", 45.0, None, 10)
            with pytest.raises(BaseException, match="write-access-denied"):
                await client.write_property(thermostat, ObjectIdentifier("analogInput,1"), "presentValue", 1.0,
                                            None, 10)
            await client.write_property(thermostat, setpoint, "presentValue", Null(()), None, 10)
            assert fs.devices["thermostat"].model.read("CoolingSetpointC") == pytest.approx(24.0)
            assert control.handle({"op": "priority", "device": "thermostat", "object": "analogValue,1"})["slots"] == {}

            await client.write_property(heater, ObjectIdentifier("binaryValue,1"), "presentValue", "inactive", None, 10)
            assert fs.devices["water_heater"].model.read("ElementEnable") is False
            assert control.handle({"op": "fault", "device": "water_heater", "refuseWrites": True})["ok"]
            with pytest.raises(BaseException, match="write-access-denied"):
                await client.write_property(heater, ObjectIdentifier("binaryValue,1"), "presentValue", Null(()),
                                            None, 10)
            assert fs.devices["water_heater"].model.read("ElementEnable") is False
            power = await client.read_property(heater, ObjectIdentifier("analogInput,2"), "presentValue")
            assert power == pytest.approx(0.0)
            assert [w[:3] for w in fs.written] == [("thermostat", "CoolingSetpoint", 10)] * 2 + \
                [("water_heater", "ElementEnable", 10)]
            assert fs.written[1][3] is None                                  # the relinquish
        finally:
            for app in [client, *apps.values()]:
                app.close()

    asyncio.run(main())


def test_the_control_port_refuses_bad_requests_naming_the_field():
    fs = FieldSite(CONFIG)
    control = Control(fs, {}, {"control": 1})
    assert control.handle({"op": "status"})["devices"]["meter"]["protocol"] == "modbus"
    assert "device" in control.handle({"op": "fault", "device": "toaster", "silent": True})["error"]
    assert "delayS" in control.handle({"op": "fault", "device": "meter", "delayS": "slow"})["error"]
    assert "op" in control.handle({"op": "explode"})["error"]
    assert "request" in control.handle(["status"])["error"]
    assert control.handle({"op": "read", "device": "battery", "point": "SocPercent"})["value"] == pytest.approx(80)
    control.handle({"op": "fault", "device": "meter", "silent": True})
    control.handle({"op": "clear"})
    assert fs.devices["meter"].faults.silent is False


def test_the_control_port_answers_one_line_per_request_and_bounds_connections():
    async def main() -> None:
        fs = FieldSite(CONFIG)
        control = Control(fs, {}, {})
        server = await asyncio.start_server(control.serve, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b'{"op": "read", "device": "meter", "point": "PowerKw"}\n{"op": NaN}\n')
        first = json.loads(await reader.readline())
        second = json.loads(await reader.readline())
        assert first["ok"] and first["value"] > 0
        assert second["ok"] is False and second["error"].startswith("request")
        control.connections = 16                        # as if 16 clients were connected
        r2, w2 = await asyncio.open_connection(HOST, port)
        assert json.loads(await r2.readline())["error"] == "too many control connections"
        w2.close()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_the_control_port_writes_a_modbus_devices_point_on_the_device_itself():
    fs = FieldSite(CONFIG)
    control = Control(fs, {}, {"control": 1})
    answer = control.handle({"op": "write", "device": "battery", "point": "PowerSetpointKw", "value": -0.8})
    assert answer == {"ok": True, "value": pytest.approx(-0.8)}
    assert control.handle({"op": "read", "device": "battery", "point": "PowerSetpointKw"})["value"] == \
        pytest.approx(-0.8)
    refused = control.handle({"op": "write", "device": "battery", "point": "PowerSetpointKw", "value": -99})
    assert refused["ok"] is False and "PowerSetpointKw" in refused["error"]
    assert control.handle({"op": "read", "device": "battery", "point": "PowerSetpointKw"})["value"] == \
        pytest.approx(-0.8)
    bacnet = control.handle({"op": "write", "device": "thermostat", "point": "CoolingSetpointC", "value": 25})
    assert bacnet["ok"] is False and "not a Modbus device" in bacnet["error"]
