"""Fault test: the historian's PostgreSQL database is unreachable for 30 s while device readings flow (and at
the historian's start); afterwards every published reading is in the database exactly once.

The historian (a second instance of agents/historian, so platform.historian keeps its SQLite store) reaches a
database created for this test through a TCP proxy that the test starts; killing the proxy makes the database
unreachable (open connections reset, new ones refused) without touching the machine's PostgreSQL server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import gevent
import psycopg2
import pytest

from dr_common.topics import HistorianRpc, device_all_topic
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, free_port, throwaway_postgres_db

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

IDENTITY = "platform.historian.pgtest"
OUTAGE_S = 30.0
PERIOD_S = 0.25
UTC = timezone.utc

PROXY = r"""
import asyncio, sys
listen_port, target_host, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()

async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class Proxy:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PROXY, str(self.port), POSTGRES_HOST, str(POSTGRES_PORT)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def pg_database():
    with throwaway_postgres_db("drhist_outage") as name:
        yield name


def stored(dbname: str, topic: str) -> list[tuple[datetime, float]]:
    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=dbname, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT d.ts, d.value_num FROM data d JOIN topics t ON t.topic_id = d.topic_id "
                        "WHERE t.topic_key = %s ORDER BY d.ts", (topic.lower(),))
            return [(ts.astimezone(UTC), value) for ts, value in cur.fetchall()]
    finally:
        conn.close()


def test_postgres_unreachable_for_30s_loses_and_duplicates_nothing(vplatform, pg_database, figure):
    proxy = Proxy(free_port())  # not started yet: the historian starts with its database unreachable
    config = {"connection": {"url": f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/{pg_database}"},
              "connect_timeout_s": 2, "retry_period": 2.0, "record_dr": False, "capture_analysis_data": False,
              "capture_record_data": False}
    published: list[tuple[datetime, float]] = []
    try:
        vplatform.install_agent("historian", IDENTITY, config=config, tag="dr-historian-test")
        health = vplatform.wait_for(lambda: (h := vplatform.rpc(IDENTITY, HistorianRpc.HEALTH))["setupError"] and h,
                                    timeout=60, what=f"{IDENTITY} reporting its unreachable database")
        assert health["ok"] is False and "postgresql" in health["setupError"]
        base = datetime.now(UTC).replace(microsecond=0)
        state = {"run": True}

        def publisher() -> None:
            i = 0
            while state["run"]:
                ts = base + timedelta(milliseconds=250 * i)
                value = round(1.0 + 0.01 * i, 2)
                vplatform.publish(device_all_topic("pgfault/meter"), [{"PowerKw": value, "BaseLoadKw": 0.5}, {}],
                                  headers={"TimeStamp": ts.isoformat()})
                published.append((ts, value))
                i += 1
                gevent.sleep(PERIOD_S)

        worker = gevent.spawn(publisher)
        gevent.sleep(3)  # readings published before the database was ever reachable wait in the cache
        proxy.start()
        vplatform.wait_for(lambda: vplatform.rpc(IDENTITY, HistorianRpc.HEALTH)["ok"], timeout=30,
                           what=f"{IDENTITY} healthy once its database is reachable")
        gevent.sleep(5)
        assert stored(pg_database, "pgfault/meter/PowerKw"), "readings reach PostgreSQL before the outage"
        proxy.kill()
        outage_started = time.monotonic()
        peak_backlog = 0
        while time.monotonic() - outage_started < OUTAGE_S:
            health = vplatform.rpc(IDENTITY, HistorianRpc.HEALTH)
            peak_backlog = max(peak_backlog, health["backlog"])
            gevent.sleep(1)
        assert peak_backlog > 0, "the backlog shows in health while the database is unreachable"
        assert health["ok"] is False and health["dbUnavailableForS"] and "postgresql" in health["lastDbError"]
        # a query during the outage: the caller learns an error id, never the SQL, the driver text or the URL
        with pytest.raises(Exception, match=r"error id [0-9a-f]{12}") as info:
            vplatform.rpc(IDENTITY, HistorianRpc.QUERY, topic="pgfault/meter/PowerKw", start=base.isoformat())
        text = str(info.value)
        for leak in ("SELECT", "psycopg2", "OperationalError", str(proxy.port), pg_database, "127.0.0.1"):
            assert leak not in text, leak
        assert vplatform.rpc(IDENTITY, HistorianRpc.HEALTH)["rpcFailures"] >= 1
        proxy.start()
        back = time.monotonic()
        waiting = len(published)
        caught_up = None
        while time.monotonic() - back < 8:
            if caught_up is None and len(stored(pg_database, "pgfault/meter/PowerKw")) >= waiting:
                caught_up = time.monotonic() - back
            gevent.sleep(0.25)
        state["run"] = False
        worker.join(timeout=5)
        expected = sorted(published)
        vplatform.wait_for(lambda: len(stored(pg_database, "pgfault/meter/PowerKw")) >= len(expected), timeout=60,
                           step=0.5, what="every reading written after the database returned")
        vplatform.wait_for(lambda: vplatform.rpc(IDENTITY, HistorianRpc.HEALTH)["backlog"] == 0, timeout=30,
                           what="backlog drained")
        rows = stored(pg_database, "pgfault/meter/PowerKw")
        assert rows == expected  # every reading, in order, each exactly once (ts is part of the primary key)
        assert len(stored(pg_database, "pgfault/meter/BaseLoadKw")) == len(expected)
        health = vplatform.rpc(IDENTITY, HistorianRpc.HEALTH)
        assert health["ok"] and health["writeFailures"] > 0
        figure("historian PostgreSQL outage (30 s)",
               f"{len(expected)} publishes x 2 points, peak backlog {peak_backlog}, all stored once, "
               f"the {waiting} publishes made before it returned were stored "
               + (f"within {caught_up:.1f} s" if caught_up is not None else "after more than 8 s"))
    finally:
        proxy.kill()
        info = vplatform.agents().get(IDENTITY)
        if info is not None:
            vplatform.vctl("stop", info.uuid, check=False, timeout=60)
