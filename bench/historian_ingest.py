"""platform.historian figures, each next to a baseline measured in the same run.

    /var/lib/volttron-dr/venv/bin/python bench/historian_ingest.py [--points 60000] [--batch 1000] [--no-postgres]

1. Ingest rate (points/s) on one workload: device scrapes of 25 points each, as VOLTTRON's base-historian cache
   hands them to `publish_to_historian` in batches of --batch records, one transaction per batch for everyone.
   Each contender writes into a fresh SQLite file, and on PostgreSQL (when 127.0.0.1:5432 is reachable) into a
   fresh database of its own:
   * ours:  dr_historian.writer.Writer.publish, the exact code platform.historian's publish_to_historian runs
            (topic cache, value encoding, (topic, ts) upsert, one transaction per batch; on PostgreSQL a binary
            COPY under a savepoint, the multi-row upsert only when a reading of the batch is stored already);
   * raw:   SQLAlchemy Core executemany of prebuilt rows into the same table (no topic lookup, no encoding,
            no upsert): the floor for any historian on SQLAlchemy;
   * raw COPY (PostgreSQL): psycopg2 copy_expert of a prebuilt binary COPY stream per batch straight into
            the same table (no topic lookup, no encoding, no upsert, streams built before the clock starts): the
            server's own ingest floor;
   * stock: on SQLite volttron-lib-sql-historian 2.0.0rc5 (what volttron-sqlite-historian runs), on
            PostgreSQL volttron-postgresql-historian 2.0.0rc6 (the newest, requires volttron-lib-sql-historian
            >= 2.0.0rc5 -> volttron-lib-base-historian >= 2.0.0rc4, the stack of volttron 11.0.0rc3): their
            SQLHistorian.publish_to_historian driven directly with SqlLiteFuncts / PostgreSqlFuncts on the same
            records, without the agent around it (running the stock agent would add the same bus and cache cost
            to both). Packages not in the environment are fetched with `pip download --no-deps` into
            $VDR_STATE/bench-cache (or /tmp) and put on sys.path, never installed (psycopg2 and volttron-core
            are the venv's own).
2. CAISO 10-in-10 baseline for one meter with 45 days (+ the event day) of 1-minute data on SQLite, median of
   --repeat runs, read from the database each time. Baseline in the same run: a bare SELECT of those rows.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dr_historian.mv.performance import MvOptions, topic_baseline  # noqa: E402
from dr_historian.pg_ingest import COPY_SQL, encode_rows  # noqa: E402
from dr_historian.store import Point, Store, data_table, topics_table  # noqa: E402
from dr_tools.synth import generate  # noqa: E402
from dr_historian.values import to_micros  # noqa: E402
from dr_historian.writer import Writer  # noqa: E402
from sqlalchemy import insert  # noqa: E402

UTC = timezone.utc
STOCK_VERSION = "2.0.0rc5"
STOCK_PG_VERSION = "2.0.0rc6"
POINTS_PER_DEVICE = 25


def workload(points: int) -> list[dict]:
    devices = 40
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    records = []
    scrape = 0
    while len(records) < points:
        device = scrape % devices
        ts = t0 + timedelta(seconds=5 * (scrape // devices), milliseconds=device)
        for p in range(POINTS_PER_DEVICE):
            value = float(scrape % 97) + p / 10 if p % 5 else int(scrape % 13)
            records.append({"_id": len(records) + 1, "timestamp": ts, "source": "scrape",
                            "topic": f"campus/building{device // 10}/device{device}/Point{p}", "value": value,
                            "headers": {}, "meta": {"units": "kW", "type": "float", "tz": "UTC"}})
        scrape += 1
    return records[:points]


def batches(records: list[dict], size: int) -> list[list[dict]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def bench_ours(url: str, parts: list[list[dict]], clock: Clock | None = None) -> float:
    clock = clock or Clock()
    store = Store(url)
    store.setup()
    writer = Writer(store)
    clock.start()
    for part in parts:
        if not writer.publish(part):
            raise RuntimeError(writer.stats.last_error)
    elapsed = clock.stop()
    assert store.count_rows() == sum(len(p) for p in parts)
    store.dispose()
    return elapsed


def bench_raw(url: str, parts: list[list[dict]], clock: Clock | None = None) -> float:
    clock = clock or Clock()
    store = Store(url)
    store.setup()
    engine = store.engine
    names = sorted({r["topic"] for part in parts for r in part})
    with engine.begin() as conn:
        conn.execute(insert(topics_table), [{"topic_name": n, "topic_key": n.lower(), "metadata": "{}"}
                                            for n in names])
        ids = dict(conn.execute(topics_table.select().with_only_columns(topics_table.c.topic_name,
                                                                        topics_table.c.topic_id)).all())
    sqlite = url.startswith("sqlite")
    prebuilt = [[{"topic_id": ids[r["topic"]], "ts": to_micros(r["timestamp"]) if sqlite else r["timestamp"],
                  "value_num": float(r["value"]), "value_json": None} for r in part] for part in parts]
    clock.start()
    for rows in prebuilt:
        with engine.begin() as conn:
            conn.execute(insert(data_table), rows)
    elapsed = clock.stop()
    store.dispose()
    return elapsed


def fetch_stock(cache_root: Path, folder: str, packages: list[str], module: str) -> str:
    """Make `historian.<module>` importable: the installed package, else wheels fetched into the cache."""
    try:
        importlib.import_module(f"historian.{module}")
        return "installed"
    except ImportError:
        pass
    target = cache_root / folder
    if not (target / "historian" / module).is_dir():
        wheels = cache_root / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--pre", "-d", str(wheels),
                        *packages], check=True, stderr=subprocess.DEVNULL)
        for package in packages:
            name = package.split("==")[0].replace("-", "_")
            for wheel in wheels.glob(f"{name}-*.whl"):
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(target)
    import historian  # a namespace package: let it span the fetched folder too

    if str(target / "historian") not in historian.__path__:
        historian.__path__.append(str(target / "historian"))
    importlib.import_module(f"historian.{module}")
    return f"fetched into {target}"


@functools.lru_cache(maxsize=1)
def stock_modules(cache_root: Path):
    origin = fetch_stock(cache_root, f"volttron-sql-historian-{STOCK_VERSION}",
                         [f"volttron-lib-sql-historian=={STOCK_VERSION}", f"volttron-sqlite-historian=={STOCK_VERSION}"],
                         "sqlite")
    from historian.sql.historian import SQLHistorian
    from historian.sqlite.sqlitefuncts import SqlLiteFuncts
    return SQLHistorian, SqlLiteFuncts, origin


@functools.lru_cache(maxsize=1)
def stock_pg_modules(cache_root: Path):
    SQLHistorian, _, _ = stock_modules(cache_root)
    origin = fetch_stock(cache_root, f"volttron-postgresql-historian-{STOCK_PG_VERSION}",
                         [f"volttron-postgresql-historian=={STOCK_PG_VERSION}"], "postgresql")
    from historian.postgresql.postgresqlfuncts import PostgreSqlFuncts
    return SQLHistorian, PostgreSqlFuncts, origin


def bench_stock(path: Path, parts: list[list[dict]], cache_root: Path) -> tuple[float, str]:
    SQLHistorian, SqlLiteFuncts, origin = stock_modules(cache_root)
    elapsed = drive_stock(SQLHistorian, lambda tables: SqlLiteFuncts({"database": str(path)}, tables), parts,
                          Clock())
    return elapsed, origin


def bench_stock_pg(dbname: str, parts: list[list[dict]], cache_root: Path, clock: Clock) -> float:
    SQLHistorian, PostgreSqlFuncts, _ = stock_pg_modules(cache_root)
    params = {"dbname": dbname, "host": "127.0.0.1", "port": 5432, "user": "postgres"}
    return drive_stock(SQLHistorian, lambda tables: PostgreSqlFuncts(params, tables), parts, clock)


def drive_stock(SQLHistorian, make_functs, parts: list[list[dict]], clock: Clock) -> float:
    """The stock SQLHistorian.publish_to_historian on every batch, as its agent's background thread runs it."""
    hist = SQLHistorian.__new__(SQLHistorian)
    hist.topic_id_map, hist.topic_name_map, hist.topic_meta, hist.agg_topic_id_map = {}, {}, {}, {}
    hist._successful_published = set()
    _, table_names = SQLHistorian.parse_table_def(hist, None)
    hist.bg_thread_dbutils = make_functs(table_names)
    hist.bg_thread_dbutils.setup_historian_tables()
    clock.start()
    for part in parts:
        SQLHistorian.publish_to_historian(hist, part)
        if None not in hist._successful_published:
            raise RuntimeError("the stock historian did not report the batch as published")
        hist._successful_published = set()
    elapsed = clock.stop()
    count = hist.bg_thread_dbutils.select("SELECT count(*) FROM data")[0][0]
    assert count == sum(len(p) for p in parts), count
    hist.bg_thread_dbutils.close()
    return elapsed


def bench_raw_copy(url: str, parts: list[list[dict]], clock: Clock) -> float:
    """psycopg2 binary COPY of prebuilt streams straight into `data`, one transaction per batch."""
    import psycopg2
    import psycopg2.extras

    store = Store(url)
    store.setup()
    store.dispose()
    dbname = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE UTC")
        names = sorted({r["topic"] for part in parts for r in part})
        psycopg2.extras.execute_values(cur, "INSERT INTO topics (topic_name, topic_key, metadata) VALUES %s",
                                       [(n, n.lower(), "{}") for n in names])
        cur.execute("SELECT topic_name, topic_id FROM topics")
        ids = dict(cur.fetchall())
    conn.commit()
    buffers = [encode_rows([(ids[r["topic"]], to_micros(r["timestamp"]), float(r["value"]), None) for r in part])
               for part in parts]
    clock.start()
    for stream in buffers:
        with conn.cursor() as cur:
            cur.copy_expert(COPY_SQL, io.BytesIO(stream), size=len(stream))
        conn.commit()
    elapsed = clock.stop()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM data")
        assert cur.fetchone()[0] == sum(len(p) for p in parts)
    conn.close()
    return elapsed


def pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


class PgDatabase:
    def __init__(self) -> None:
        import psycopg2

        self.name = f"drhist_bench_{uuid.uuid4().hex[:10]}"
        self.admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        self.admin.autocommit = True
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.name}"

    def drop(self) -> None:
        with self.admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


class Clock:
    """Wall time of a contender, and the CPU it cost: this process's, and (given a database) that of every
    PostgreSQL backend connected to it, read from /proc (the machine is shared: CPU per point is the steadier
    figure)."""

    def __init__(self, db: PgDatabase | None = None) -> None:
        self.db = db
        self.client_s = self.server_s = 0.0
        self._t0 = self._c0 = 0.0
        self._s0: dict[int, float] = {}

    def _backends(self) -> dict[int, float]:
        if self.db is None:
            return {}
        with self.db.admin.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db.name,))
            pids = [row[0] for row in cur.fetchall()]
        ticks = os.sysconf("SC_CLK_TCK")
        out = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return out

    def start(self) -> None:
        self._s0 = self._backends()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        elapsed = time.perf_counter() - self._t0
        self.client_s = time.process_time() - self._c0
        self.server_s = sum(cpu - self._s0.get(pid, 0.0) for pid, cpu in self._backends().items())
        return elapsed


def ingest(args: argparse.Namespace, workdir: Path, cache_root: Path) -> None:
    records = workload(args.points)
    parts = batches(records, args.batch)
    n = len(records)
    print(f"1. ingest: {n} points ({n // POINTS_PER_DEVICE} scrapes of {POINTS_PER_DEVICE} points, 40 devices), "
          f"batches of {args.batch}, median of {args.rounds} interleaved rounds")
    runs: dict[str, list[float]] = {"ours": [], "raw": [], "stock": []}
    origin = ""
    for rnd in range(args.rounds):  # interleaved, each into a fresh file; the median is reported
        runs["ours"].append(bench_ours(f"sqlite:///{workdir / f'ours{rnd}.sqlite'}", parts))
        runs["raw"].append(bench_raw(f"sqlite:///{workdir / f'raw{rnd}.sqlite'}", parts))
        elapsed, origin = bench_stock(workdir / f"stock{rnd}.sqlite", parts, cache_root)
        runs["stock"].append(elapsed)
    ours, raw, stock = (statistics.median(runs[k]) for k in ("ours", "raw", "stock"))
    print(f"   SQLite   ours  {n / ours:>10,.0f} points/s   ({ours:.2f} s)")
    print(f"   SQLite   raw   {n / raw:>10,.0f} points/s   ({raw:.2f} s)  SQLAlchemy executemany of prebuilt rows")
    print(f"   SQLite   stock {n / stock:>10,.0f} points/s   ({stock:.2f} s)  volttron-lib-sql-historian "
          f"{STOCK_VERSION} publish_to_historian ({origin})")
    print(f"   ours / stock = {stock / ours:.1f}x (target >= 2x);  ours / raw = {raw / ours:.2f}")
    if args.no_postgres:
        return
    if not pg_reachable():
        print("   PostgreSQL: skipped, 127.0.0.1:5432 unreachable")
        return
    ingest_pg(args, parts, cache_root)


def ingest_pg(args: argparse.Namespace, parts: list[list[dict]], cache_root: Path) -> None:
    n = sum(len(p) for p in parts)
    contenders = {
        "ours": lambda db, clock: bench_ours(db.url, parts, clock),
        "raw": lambda db, clock: bench_raw(db.url, parts, clock),
        "raw COPY": lambda db, clock: bench_raw_copy(db.url, parts, clock),
        "stock": lambda db, clock: bench_stock_pg(db.name, parts, cache_root, clock),
    }
    stock_origin = stock_pg_modules(cache_root)[2]
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):  # interleaved, each into a fresh database; the medians are reported
        for name, fn in contenders.items():
            db = PgDatabase()
            try:
                clock = Clock(db)
                elapsed = fn(db, clock)
                runs[name].append((elapsed, clock.client_s, clock.server_s))
            finally:
                db.drop()
    med = {name: [statistics.median(r[i] for r in rs) for i in range(3)] for name, rs in runs.items()}
    notes = {"ours": "", "raw": "  SQLAlchemy executemany of prebuilt rows",
             "raw COPY": "  psycopg2 binary COPY of prebuilt streams, no upsert",
             "stock": f"  volttron-postgresql-historian {STOCK_PG_VERSION} publish_to_historian ({stock_origin})"}
    print("   PostgreSQL (CPU: us per point, this process + the database's backends)")
    for name, (elapsed, client, server) in med.items():
        print(f"   Postgres {name:<8} {n / elapsed:>10,.0f} points/s   ({elapsed:.2f} s)  CPU "
              f"{client / n * 1e6:5.1f} + {server / n * 1e6:5.1f} us/point{notes[name]}")

    def cpu(name: str) -> float:
        return med[name][1] + med[name][2]

    print(f"   Postgres ours / stock = {med['stock'][0] / med['ours'][0]:.1f}x points/s, "
          f"{cpu('stock') / cpu('ours'):.1f}x less CPU (target >= 3x);  ours / raw = "
          f"{med['raw'][0] / med['ours'][0]:.2f} points/s, {cpu('raw') / cpu('ours'):.2f} CPU (target >= 1);  "
          f"ours / raw COPY = {med['raw COPY'][0] / med['ours'][0]:.2f} points/s")


def baseline_timing(args: argparse.Namespace, workdir: Path) -> None:
    import sqlite3

    topic = "demo/meter/PowerKw"
    url = f"sqlite:///{workdir / 'meter.sqlite'}"
    event_start = datetime(2026, 7, 15, 14, tzinfo=UTC)
    history_start = event_start.replace(hour=0) - timedelta(days=45)
    store = Store(url)
    store.setup()
    t0 = time.perf_counter()
    points = [Point(topic, ts, kw) for ts, kw in generate(history_start, event_start, 60, seed=11)]
    store.write(points)
    loaded = time.perf_counter() - t0
    print(f"2. CAISO 10-in-10 baseline, one meter, {len(points)} 1-minute readings (45 days + event day) on SQLite "
          f"(generated and loaded in {loaded:.1f} s)")
    conn = sqlite3.connect(workdir / "meter.sqlite")
    raw_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        rows = conn.execute("SELECT ts, value_num FROM data WHERE topic_id = 1 AND ts >= ? AND ts < ?",
                            (to_micros(history_start), to_micros(event_start))).fetchall()
        raw_times.append(time.perf_counter() - t)
    assert len(rows) == len(points)
    conn.close()
    for minutes in (60, 15):
        options = MvOptions(interval_minutes=minutes)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            result = topic_baseline(store, topic, event_start, event_start + timedelta(hours=1), "caiso-10in10",
                                    options)
            times.append(time.perf_counter() - t)
        assert len(result["selectedDays"]) == 10, result["notes"]
        print(f"   {minutes:>2}-min intervals: median {statistics.median(times) * 1000:6.1f} ms, "
              f"max {max(times) * 1000:6.1f} ms over {args.repeat} runs (target < 50 ms); "
              f"baseline {result['intervals'][0]['baselineKw']:.2f} kW, adjustment x{result['adjustment']:.3f}")
    print(f"   raw: SELECT of all {len(points)} rows median {statistics.median(raw_times) * 1000:6.1f} ms")
    store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per publish_to_historian call")
    parser.add_argument("--repeat", type=int, default=20, help="runs of the baseline timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the ingest contenders")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    state = os.environ.get("VDR_STATE", "/var/lib/volttron-dr")
    cache_root = Path(state) / "bench-cache" if os.access(state, os.W_OK) else Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="historian-bench-"))
    try:
        ingest(args, workdir, cache_root)
        baseline_timing(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
