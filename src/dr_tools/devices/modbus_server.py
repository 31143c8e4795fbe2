"""The field site's Modbus units on one real Modbus TCP server (pymodbus), one unit id per device.

Reads come from the physics models at the instant of the request; a write is checked whole before anything is
applied: an unmapped address answers ILLEGAL DATA ADDRESS, a read-only register ILLEGAL DATA ADDRESS, a value
outside the register's limits ILLEGAL DATA VALUE, and nothing changes. Faults: a `silent` unit never answers,
`refuseWrites` answers every write with SLAVE DEVICE FAILURE, `delayS` answers that late.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from .fieldsite import FieldSite, RangeError, ReadOnlyError

_log = logging.getLogger(__name__)

_TABLES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_WRITE_CODES = (6, 16, 22, 23)
_MAX_WORDS = 125


class FieldModbusContext(ModbusServerContext):
    """A pymodbus server context answering from a FieldSite (the pymodbus 3 'old simulator' hook)."""

    def __init__(self, site: FieldSite) -> None:  # pylint: disable=super-init-not-called
        self.site = site
        self.old_simulator = True
        self.simdevices = []
        self.requests = 0
        self.refused = 0

    def device_ids(self) -> list[int]:
        """Unit ids of the site's Modbus devices."""
        return sorted(self.site.units)

    async def _gate(self, unit: int) -> None:
        dev = self.site.units.get(unit)
        if dev is None or dev.faults.silent:
            raise NoSuchIdException(f"unit {unit} does not answer")
        if dev.faults.delay_s > 0:
            await asyncio.sleep(dev.faults.delay_s)
            if dev.faults.silent:
                raise NoSuchIdException(f"unit {unit} does not answer")

    async def async_getValues(self, device_id: int, func_code: int, address: int,  # noqa: N802
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        """Words (or bits) from a unit's map, or an exception code."""
        self.requests += 1
        await self._gate(device_id)
        table = _TABLES.get(func_code, "holding" if func_code in _WRITE_CODES else "")
        if table not in ("holding", "input") or not 0 < count <= _MAX_WORDS:
            return ExcCodes.ILLEGAL_ADDRESS
        values = self.site.modbus_read(device_id, table, address, count)
        return ExcCodes.ILLEGAL_ADDRESS if values is None else values

    async def async_setValues(self, device_id: int, func_code: int, address: int,  # noqa: N802
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        """Apply a holding-register write whole, or answer the exception code and change nothing."""
        self.requests += 1
        await self._gate(device_id)
        dev = self.site.units[device_id]
        if func_code not in _WRITE_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        if dev.faults.refuse_writes:
            self.refused += 1
            return ExcCodes.DEVICE_FAILURE
        try:
            self.site.modbus_write(device_id, address, [int(v) for v in values])
        except (LookupError, ReadOnlyError):
            self.refused += 1
            return ExcCodes.ILLEGAL_ADDRESS
        except RangeError as exc:
            self.refused += 1
            _log.info("unit %s: write refused: %s", device_id, exc)
            return ExcCodes.ILLEGAL_VALUE
        return None


async def start_modbus(site: FieldSite, host: str, port: int) -> tuple[ModbusTcpServer, FieldModbusContext]:
    """Listen on host:port (already bound when this returns) and serve in the background."""
    context = FieldModbusContext(site)
    server = ModbusTcpServer(context, address=(host, port), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    return server, context
