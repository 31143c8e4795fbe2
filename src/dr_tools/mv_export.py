"""Settlement exports of an event_performance report: CSV rows, the baseline details an auditor reads (days
used and excluded with reasons, the adjustment applied and whether it was capped), and one chart per VEN, for
the total and for each site meter."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dr_tools.mv_plot import chart_from_report, write_png

CSV_COLUMNS = ("who", "method", "row", "intervalStart", "baselineKw", "actualKw", "reductionKw", "baselineKwh",
               "actualKwh", "avgReductionKw", "peakReductionKw", "percentOfRequested", "requestedKw", "variant",
               "adjustment", "rawAdjustment", "adjustmentCapped", "selectedDays", "excludedDays", "error")


def subjects(report: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(who, run) of each VEN, the total (more than one VEN) and each site meter."""
    for ven, run in report["vens"].items():
        yield f"ven:{ven}", run
    if len(report["vens"]) > 1:
        yield "total", {**report["total"], "requestedKw": report.get("requestedKw")}
    for topic, run in report["meters"].items():
        yield f"meter:{topic}", run


def _summary_cells(run: Mapping[str, Any], m: Mapping[str, Any]) -> dict[str, Any]:
    detail = m.get("baseline", {})
    excluded = detail.get("excludedDays", {})
    return {"baselineKwh": m.get("baselineKwh"), "actualKwh": m.get("actualKwh"),
            "avgReductionKw": m.get("avgReductionKw"), "peakReductionKw": m.get("peakReductionKw"),
            "percentOfRequested": m.get("percentOfRequested"), "requestedKw": run.get("requestedKw"),
            "variant": detail.get("variant"), "adjustment": detail.get("adjustment"),
            "rawAdjustment": detail.get("rawAdjustment"), "adjustmentCapped": detail.get("adjustmentCapped"),
            "selectedDays": " ".join(detail.get("selectedDays", [])),
            "excludedDays": "; ".join(f"{d}: {why}" for d, why in excluded.items()), "error": m.get("error")}


def csv_text(report: Mapping[str, Any]) -> str:
    """One summary row per subject and method, then one row per interval (row = summary | interval)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for who, run in subjects(report):
        for method, m in run["methods"].items():
            writer.writerow({"who": who, "method": method, "row": "summary", **_summary_cells(run, m)})
            for row in m.get("intervals", []):
                writer.writerow({"who": who, "method": method, "row": "interval", "intervalStart": row["start"],
                                 "baselineKw": row["baselineKw"], "actualKw": row["actualKw"],
                                 "reductionKw": row["reductionKw"]})
    return out.getvalue()


ACCURACY_COLUMNS = ("rank", "method", "relativeRmse", "rmseKw", "bias", "biasKw", "within10Pct", "under20", "days",
                    "daysNotComputable", "topic", "firstDay", "lastDay")


def accuracy_csv_text(report: Mapping[str, Any]) -> str:
    """The accuracy ranking as CSV: one row per method, best first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ACCURACY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, name in enumerate(report["ranking"], 1):
        writer.writerow({"rank": rank, "method": name, "topic": report.get("topic"), "firstDay": report["firstDay"],
                         "lastDay": report["lastDay"], **report["methods"][name]})
    return out.getvalue()


def details(report: Mapping[str, Any]) -> str:
    """The days each method used and excluded (with the reason) and its adjustment, per subject."""
    lines = ["Baseline details (days used, days excluded and why, day-of adjustment):"]
    for who, run in subjects(report):
        if who == "total":
            continue
        for method, m in run["methods"].items():
            detail = m.get("baseline") or {}
            if not detail.get("selectedDays") and not detail.get("excludedDays") and detail.get("adjustment") is None:
                continue
            lines.append(f"  {who} {method} ({detail.get('variant', '')}):")
            used = detail.get("selectedDays", [])
            lines.append(f"    used ({len(used)}): {' '.join(used)}")
            for day, why in detail.get("excludedDays", {}).items():
                lines.append(f"    excluded {day}: {why}")
            adj = detail.get("adjustment")
            if adj is not None:
                window = detail.get("adjustmentWindow") or {}
                raw = detail.get("rawAdjustment")
                capped = f" (capped, raw {raw:.4f})" if detail.get("adjustmentCapped") and raw is not None else ""
                lines.append(f"    adjustment {adj:.4f}{capped} over {window.get('start')} - {window.get('end')}")
            for note in detail.get("notes", []):
                lines.append(f"    note: {note}")
    return "\n".join(lines)


def write_charts(report: Mapping[str, Any], folder: str | Path, timezone: str | None = None) -> list[Path]:
    """One PNG per VEN, for the total of several VENs and per site meter (the report needs plot series)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    safe = _safe(report["eventId"])
    for ven in report["vens"]:
        path = folder / f"mv_{safe}_ven_{_safe(ven)}.png"
        write_png(chart_from_report(report, ven, timezone), str(path))
        written.append(path)
    if len(report["vens"]) > 1:
        path = folder / f"mv_{safe}_total.png"
        write_png(chart_from_report({**report, "meters": {}}, None, timezone), str(path))
        written.append(path)
    for topic in report["meters"]:
        path = folder / f"mv_{safe}_meter_{_safe(topic)}.png"
        write_png(chart_from_report(report, topic, timezone), str(path))
        written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
