#!/usr/bin/env python3
"""Hot-path payload parsing: the shared library's tolerant parser (`dr_common.payloads`) against pydantic 2 models
of the same payloads, and against bare `json.loads` as the raw baseline, in one run.

Every inbound telemetry report and ack goes through the tolerant parser (dr.mqtt, dr.vtn, dr.web, the
historian); configuration, read once, is validated by pydantic (`dr_common.config`). The pydantic models here
accept the canonical camelCase form of these payloads (aliases, numbers as strings, ISO times); the tolerant
parser also accepts what the seed contract allows beyond that (any case, '_', '-' or spaces in keys, field-name
variants, epoch seconds or milliseconds, the 1970-2999 time bound).

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/payload_parse.py [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from dr_common.payloads import Ack, Telemetry
from dr_common.schema import decode_json

TELEMETRY = json.dumps({"venId": "ven-1", "ts": "2026-12-05T14:00:05Z", "usedPowerKw": "3.2", "shedPowerKw": 1.9,
                        "requestedReductionKw": 2.0, "eventId": "evt-1", "baselinePowerKw": 5.1,
                        "availableShedKw": 4.0}).encode()
ACK = json.dumps({"correlationId": "event:evt-1:0:4f2a9c", "op": "event", "ok": True, "ts": "2026-12-05T14:00:00Z",
                  "venId": "ven-1", "data": {"targetKw": 2.0, "acceptedReduceKw": 2.0,
                                             "until": "2026-12-05T15:00:00Z"}}).encode()


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class TelemetryModel(_Model):
    ven_id: str = Field(alias="venId", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    ts: datetime | None = None
    used_power_kw: float = Field(validation_alias=AliasChoices("usedPowerKw", "usedKw", "powerKw"),
                                 ge=-1e6, le=1e6, allow_inf_nan=False)
    shed_power_kw: float = Field(0.0, alias="shedPowerKw", ge=-1e6, le=1e6, allow_inf_nan=False)
    requested_reduction_kw: float = Field(0.0, alias="requestedReductionKw", ge=0, le=1e6, allow_inf_nan=False)
    event_id: str | None = Field(None, alias="eventId")
    baseline_power_kw: float | None = Field(None, alias="baselinePowerKw", allow_inf_nan=False)
    available_shed_kw: float | None = Field(None, alias="availableShedKw", allow_inf_nan=False)


class AckData(_Model):
    target_kw: float | None = Field(None, alias="targetKw", allow_inf_nan=False)
    accepted_reduce_kw: float | None = Field(None, alias="acceptedReduceKw", allow_inf_nan=False)
    until: datetime | None = None


class AckModel(_Model):
    correlation_id: str = Field(alias="correlationId", max_length=256)
    op: str | None = None
    ok: bool
    ts: datetime | None = None
    ven_id: str | None = Field(None, alias="venId")
    data: AckData | None = None


def _time(fn: Any, n: int) -> float:
    """Median of 5 runs of n calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="calls per measured run (default 20000)")
    args = ap.parse_args()
    assert Telemetry.from_payload(decode_json(TELEMETRY)).used_power_kw == \
        TelemetryModel.model_validate_json(TELEMETRY).used_power_kw
    assert Ack.from_payload(decode_json(ACK)).accepted_reduce_kw == AckModel.model_validate_json(ACK).data.accepted_reduce_kw
    print(f"µs per payload, median of 5 runs of {args.n:,} (bytes in, typed object out)")
    print(f"{'payload':10} {'raw json.loads':>15} {'tolerant parser':>16} {'pydantic 2':>11}  tolerant/pydantic")
    for name, raw, ours, model in (("telemetry", TELEMETRY, Telemetry, TelemetryModel), ("ack", ACK, Ack, AckModel)):
        base = _time(lambda raw=raw: json.loads(raw), args.n)
        tolerant = _time(lambda raw=raw, ours=ours: ours.from_payload(decode_json(raw)), args.n)
        pyd = _time(lambda raw=raw, model=model: model.model_validate_json(raw), args.n)
        print(f"{name:10} {base:15.2f} {tolerant:16.2f} {pyd:11.2f}  {tolerant / pyd:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
