"""scripts/mv_report.py as a settlement report: CSV rows, days used and excluded with reasons, the adjustment,
one chart per VEN, the total and each meter, the new presets, and the --accuracy ranking."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_csv_details_charts_and_accuracy(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    gen = load_script("gen_meter_history")
    for ven, topic, seed in (("home-1", "demo/meter/PowerKw", "1"), ("home-2", "other/meter/PowerKw", "2")):
        assert gen.main(["--db", str(db), "--days", "70", "--step", "300", "--end", "2026-07-16T00:00Z",
                         "--topic", topic, "--seed", seed, "--ven", ven, "--event", "2026-07-15T14:00/60/1.5",
                         "--event-id", "ev-x1"]) == 0
    capsys.readouterr()
    report = load_script("mv_report")
    csv_path, charts = tmp_path / "ev.csv", tmp_path / "charts"
    assert report.main(["ev-x1", "--db", str(db), "--meter", "demo/meter/PowerKw", "--csv", str(csv_path),
                        "--png-dir", str(charts), "--png", str(tmp_path / "one.png"),
                        "--method", "caiso-10in10", "--method", "ieso-15of20", "--method", "pjm-same-day"]) == 0
    out = capsys.readouterr().out
    assert "Baseline details" in out and "used (10):" in out and "adjustment" in out
    assert "ieso-15of20" in out and "pjm-same-day" in out
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    whos = {r["who"] for r in rows}
    assert whos == {"ven:home-1", "ven:home-2", "total", "meter:demo/meter/PowerKw"}
    summary = [r for r in rows if r["row"] == "summary" and r["who"] == "ven:home-1" and r["method"] == "caiso-10in10"]
    assert len(summary) == 1 and len(summary[0]["selectedDays"].split()) == 10
    assert summary[0]["adjustment"] and summary[0]["adjustmentCapped"] in ("True", "False")
    intervals = [r for r in rows if r["row"] == "interval" and r["who"] == "total" and r["method"] == "caiso-10in10"]
    assert len(intervals) == 4  # 60 minutes in 15-minute intervals
    for r in intervals:
        assert abs(float(r["baselineKw"]) - float(r["actualKw"]) - float(r["reductionKw"])) < 1e-9
    names = sorted(p.name for p in charts.iterdir())
    assert names == ["mv_ev-x1_meter_demo_meter_PowerKw.png", "mv_ev-x1_total.png", "mv_ev-x1_ven_home-1.png",
                     "mv_ev-x1_ven_home-2.png"]
    assert all(Image.open(charts / n).size == (1200, 640) for n in names)

    ranking_csv = tmp_path / "acc.csv"
    # the regression preset (where opendsm is installed) on the outdoor temperature the generator stored
    covariate = ["--set", 'opendsm-caltrack-dr.covariateTopic="demo/weather/OutdoorTempF"'] \
        if "opendsm-caltrack-dr" in report.METHODS else []
    assert report.main(["ev-x1", "--db", str(db), "--meter", "demo/meter/PowerKw", "--accuracy", "--days", "20",
                        "--csv", str(ranking_csv)] + covariate) == 0
    out = capsys.readouterr().out
    assert "Baseline accuracy: 20 non-event days" in out and "pjm-match-day" in out and "rel. RMSE" in out
    assert not covariate or "opendsm-caltrack-dr" in out
    ranked_rows = list(csv.DictReader(io.StringIO(ranking_csv.read_text())))
    assert [r["rank"] for r in ranked_rows] == [str(n) for n in range(1, len(ranked_rows) + 1)]
    assert ranked_rows[0]["method"] in out.splitlines()[3] and ranked_rows[0]["topic"] == "demo/meter/PowerKw"
    rmses = [float(r["relativeRmse"]) for r in ranked_rows]
    assert rmses == sorted(rmses) and all(r["days"] == "20" for r in ranked_rows)
    assert report.main(["ev-x1", "--db", str(db), "--accuracy", "--days", "10", "--plot", "home-2",
                        "--method", "caiso-10in10", "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["topic"] == "dr/telemetry/home-2/usedPowerKw" and ranked["ranking"] == ["caiso-10in10"]
    assert report.main(["ev-x1", "--db", str(db), "--no-png", "--json", "--method", "caiso-10in10",
                        "--set", "caiso-10in10.weekday.keep=5", "--set", "caiso-10in10.weekday.of=5"]) == 0
    five = json.loads(capsys.readouterr().out)["vens"]["home-1"]["methods"]["caiso-10in10"]["baseline"]
    assert len(five["selectedDays"]) == 5
    used = five["selectedDays"]
    assert report.main(["ev-x1", "--db", str(db), "--no-png", "--json", "--method", "caiso-10in10",
                        "--outage", used[0], "--outage", used[1]]) == 0
    out = json.loads(capsys.readouterr().out)["vens"]["home-1"]["methods"]["caiso-10in10"]["baseline"]
    assert out["excludedDays"][used[0]] == "outage day" and used[1] not in out["selectedDays"]
    assert report.main(["ev-x1", "--db", str(db), "--no-png", "--set", "caiso-10in10.adjustment.cap=big"]) == 1
    assert "adjustment.cap" in capsys.readouterr().err
    assert report.main(["nope", "--db", str(db), "--accuracy"]) == 1
    assert "no event" in capsys.readouterr().err
