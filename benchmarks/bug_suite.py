"""How well diagnose names real bugs: every script of `sample_runs/bugs/`, buggy and fixed.

Each kind is recorded in its own subprocess (buggy run and healthy twin, one
CPU thread, a bounded time), then analysed twice: the run file as the probes
wrote it, and a plain log cut from it (step, loss and the val_* columns only,
no metadata), which is what a loss-only logger gives. Per kind and in total,
for the calibration part, the held-out part and both:

    symptom     the buggy run gets a finding at warning or above whose code is one of the script's symptoms
    root cause  a finding at warning or above has the script's root-cause regex in its title or message
    false alarm the healthy twin gets any finding at warning or above
    incoherent  a report (buggy or twin) with two fixes that turn a knob opposite ways, or whose
                first finding is not of its highest severity
    verified    the twin trains and the bug shows (the script's numeric conditions)

Rules are tuned on the calibration part only; the held-out figures are the honest ones.

    python benchmarks/bug_suite.py [KIND ...] [--json] [--keep DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_runs" / "bugs"))

import _common as suite  # noqa: E402 - found through the path set above

import diagnose  # noqa: E402
from diagnose.rules import fixes as fix_directions  # noqa: E402

RECORD = "import sys; sys.path.insert(0, sys.argv[1]); import _common; _common.record_pair(*sys.argv[2:5])"
PLAIN_KEYS = ("step", "loss")


@dataclass
class Outcome:
    kind: str
    part: str
    observable: str
    seconds: float
    verified: bool = False
    failures: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    plain: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def record(kind: str, folder: Path, timeout: float) -> tuple[Path, Path, str]:
    """Record ``kind`` buggy and fixed in a fresh interpreter; an error string when it failed."""
    bad, good = folder / f"{kind}.jsonl", folder / f"{kind}-fixed.jsonl"
    command = [sys.executable, "-c", RECORD, str(suite.HERE), kind, str(bad), str(good)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        return bad, good, f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return bad, good, (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return bad, good, ""


def plain_log(path: Path, dest: Path) -> Path:
    """The run as a loss-only logger would have written it: step, loss and val_* columns."""
    run = diagnose.load(path)
    lines = []
    for frame, keep in (
        (run.steps, lambda c: c in PLAIN_KEYS),
        (run.evals, lambda c: c == "step" or c.startswith("val_")),
    ):
        columns = [c for c in frame.columns if keep(c)]
        for row in frame[columns].itertuples(index=False):
            lines.append(json.dumps({c: _json_number(v) for c, v in zip(columns, row, strict=True)}))
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _json_number(value: float) -> float | int | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def judge(bug: dict[str, Any], bad: Path, good: Path) -> dict[str, Any]:
    bad_analysis, good_analysis = diagnose.analyze(diagnose.load(bad)), diagnose.analyze(diagnose.load(good))
    bad_findings = bad_analysis.findings
    good_alarms = suite.alarms(good_analysis.findings)
    return {
        "symptom": any(f.code in bug["symptoms"] for f in suite.alarms(bad_findings)),
        "root_cause": suite.named(bug, bad_findings),
        "false_alarms": sorted({f.code for f in good_alarms}),
        "bug_codes": [f.code for f in suite.alarms(bad_findings)],
        "incoherent": [side for side, a in (("bug", bad_analysis), ("twin", good_analysis)) if not _coherent(a)],
    }


def _coherent(analysis: Any) -> bool:
    """No two fixes turn a knob opposite ways, and the first finding is of the highest severity."""
    every_fix = [fix for finding in analysis for fix in finding.fixes]
    worst_first = not analysis.findings or analysis.worst.severity.rank == max(f.severity.rank for f in analysis)
    return not fix_directions.contradictions(every_fix) and worst_first


def evaluate_kind(kind: str, folder: Path, timeout: float) -> Outcome:
    bug = suite.load_script(kind).BUG
    start = time.perf_counter()
    bad, good, error = record(kind, folder, timeout)
    outcome = Outcome(kind, bug["part"], bug["observable"], time.perf_counter() - start, error=error)
    if error:
        return outcome
    outcome.failures = suite.verify(bug, suite.summarize(bad), suite.summarize(good))
    outcome.verified = not outcome.failures
    outcome.probes = judge(bug, bad, good)
    outcome.plain = judge(
        bug, plain_log(bad, folder / f"{kind}.plain.jsonl"), plain_log(good, folder / f"{kind}-fixed.plain.jsonl")
    )
    return outcome


def totals(outcomes: list[Outcome]) -> dict[str, Any]:
    """Recall and false alarms per part, from the probes and from the plain log."""
    table: dict[str, Any] = {}
    for part in (*suite.PARTS, "all"):
        chosen = [o for o in outcomes if part in ("all", o.part) and not o.error]
        live = [o for o in chosen if o.observable == "live"]
        entry: dict[str, Any] = {
            "kinds": len(chosen),
            "live_kinds": len(live),
            "verified": sum(o.verified for o in chosen),
        }
        for source in ("probes", "plain"):
            entry[source] = {
                "symptom": sum(getattr(o, source)["symptom"] for o in chosen),
                "root_cause": sum(getattr(o, source)["root_cause"] for o in chosen),
                "root_cause_live": sum(getattr(o, source)["root_cause"] for o in live),
                "symptom_live": sum(getattr(o, source)["symptom"] for o in live),
                "false_alarm_twins": sum(bool(getattr(o, source)["false_alarms"]) for o in chosen),
                "incoherent_reports": sum(len(getattr(o, source)["incoherent"]) for o in chosen),
            }
        table[part] = entry
    return table


def _pct(hit: int, total: int) -> str:
    return f"{hit}/{total} ({100 * hit / total:.0f}%)" if total else "0/0"


def print_report(outcomes: list[Outcome], table: dict[str, Any]) -> None:
    mark = {True: "yes", False: "-"}
    print(
        f"{'kind':28} {'part':11} {'obs':5} {'verified':8} | probes: symptom root twin-alarms "
        f"| plain: symptom root twin-alarms | codes on the buggy run"
    )
    for o in outcomes:
        if o.error:
            print(f"{o.kind:28} {o.part:11} {o.observable:5} ERROR {o.error}")
            continue
        p, q = o.probes, o.plain
        print(
            f"{o.kind:28} {o.part:11} {o.observable:5} {mark[o.verified]:8} | {mark[p['symptom']]:7} "
            f"{mark[p['root_cause']]:4} {','.join(p['false_alarms']) or '-':11} | {mark[q['symptom']]:7} "
            f"{mark[q['root_cause']]:4} {','.join(q['false_alarms']) or '-':11} | {','.join(p['bug_codes']) or '-'}"
        )
    for o in outcomes:
        for failure in o.failures:
            print("not verified:", failure)
    for part, entry in table.items():
        n, live = entry["kinds"], entry["live_kinds"]
        print(f"\n{part}: {n} kinds ({live} observable live), verified {_pct(entry['verified'], n)}")
        for source in ("probes", "plain"):
            s = entry[source]
            print(
                f"  {source:6}: symptom {_pct(s['symptom'], n)} (live kinds: {_pct(s['symptom_live'], live)}), "
                f"root cause {_pct(s['root_cause'], n)} "
                f"(live kinds: {_pct(s['root_cause_live'], live)}), false alarms on twins "
                f"{_pct(s['false_alarm_twins'], n)}, reports with contradicting fixes or a lesser finding "
                f"first {s['incoherent_reports']}/{2 * n}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score diagnose on the bug scripts of sample_runs/bugs/.")
    parser.add_argument("kinds", nargs="*", help="only these kinds (default: all)")
    parser.add_argument("--json", action="store_true", help="print the outcomes and totals as JSON")
    parser.add_argument("--keep", type=Path, help="keep the recorded run files in this folder")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed to record one kind (both runs)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.kinds) - set(suite.kinds()))
    if unknown:
        parser.error(f"unknown kind(s): {', '.join(unknown)}; known: {', '.join(suite.kinds())}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for kind in args.kinds or suite.kinds():
            outcomes.append(evaluate_kind(kind, folder, args.timeout))
            if not args.json:
                print(f"recorded {kind} in {outcomes[-1].seconds:.1f} s", file=sys.stderr)
    table = totals(outcomes)
    if args.json:
        print(json.dumps({"outcomes": [asdict(o) for o in outcomes], "totals": table}, indent=2))
    else:
        print_report(outcomes, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
