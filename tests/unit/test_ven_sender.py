"""dr.ven's write rounds: one device's ops in order, devices side by side, a silent device holding only its own."""
from __future__ import annotations

import gevent
import gevent.event

from dr_ven_load_control.sender import by_device, send_round
from dr_ven_load_control.state import REVERT, RESTORE, SET, SHED, Op


def op(path: str, point: str, value: object = 1.0, kind: str = SET, purpose: str = SHED) -> Op:
    return Op(kind, path, point, value, path.rsplit("/", 1)[-1], purpose)


def test_ops_are_grouped_by_device_in_the_order_given():
    ops = [op("s/ev", "Limit"), op("s/tstat", "Sp"), op("s/ev", "Limit", kind=REVERT), op("s/tstat", "Mode")]
    assert by_device(ops) == [[0, 2], [1, 3]]


def test_a_silent_device_does_not_hold_another_devices_write_in_the_same_round():
    other_written = gevent.event.Event()
    seen: list[str] = []

    def send(o: Op) -> str | None:
        seen.append(o.path)
        if o.path == "s/ev":  # silent: answers only after the driver's timeout; here, after the other's write
            return None if other_written.wait(timeout=5) else "no answer from platform.driver within 5 s"
        other_written.set()
        return None

    results = send_round([op("s/ev", "Limit", purpose=RESTORE), op("s/tstat", "Sp", purpose=RESTORE)], send)
    assert [error for _, error in results] == [None, None]   # the thermostat's write went while the EV waited
    assert seen == ["s/ev", "s/tstat"]


def test_one_devices_ops_stay_in_order_and_results_keep_the_round_order():
    log: list[tuple[str, str]] = []

    def send(o: Op) -> str | None:
        log.append((o.path, o.kind))
        gevent.sleep(0)
        return "refused" if o.path == "s/bat" else None

    ops = [op("s/ev", "Limit"), op("s/bat", "W"), op("s/ev", "Limit", kind=REVERT)]
    results = send_round(ops, send)
    assert [o for o, _ in results] == ops
    assert [e for _, e in results] == [None, "refused", None]
    assert [k for p, k in log if p == "s/ev"] == [SET, REVERT]


def test_a_sender_that_dies_reports_its_ops_as_failed_and_the_others_keep_their_results():
    def send(o: Op) -> str | None:
        if o.path == "s/bad":
            raise RuntimeError("defect")
        return None

    results = send_round([op("s/bad", "X"), op("s/ok", "Y")], send)
    assert results[0][1] == "write not sent: its sender stopped"
    assert results[1][1] is None


def test_a_single_device_round_runs_in_the_callers_greenlet():
    callers: list[object] = []
    send_round([op("s/ev", "A"), op("s/ev", "B")], lambda o: callers.append(gevent.getcurrent()) and None)
    assert callers == [gevent.getcurrent()] * 2
