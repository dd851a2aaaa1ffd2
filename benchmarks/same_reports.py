"""Whether a change left every report as it was: ``diagnose report --format json`` of every file.

``write`` runs the report of every file under ``sample_runs/`` and the shared
corpus (``../shared/real_runs``), and of each ``--extra`` file or folder, with
the diagnose that Python imports (set PYTHONPATH to the tree to test), in this
one process, and writes one record per input (exit code, output, messages) into
OUT. ``compare`` says how many records of two such folders are byte-identical
and names the inputs whose records differ, except held-out files of the corpora
(see ``benchmarks/corpus_score.py``), which are only counted: nothing of theirs
is printed.

    PYTHONPATH=/path/to/main python benchmarks/same_reports.py write /tmp/before
    PYTHONPATH=. python benchmarks/same_reports.py write /tmp/after [--extra big.jsonl]
    python benchmarks/same_reports.py compare /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_shapes import CORPUS, read_labels, split_of

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "real_runs"


def inputs(extra: list[Path]) -> list[Path]:
    roots = [ROOT / "sample_runs", SHARED]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*") if p.is_file()) + extra


def held_out(path: Path) -> bool:
    if path.is_relative_to(CORPUS):
        splits = {row["file"]: row["split"] for row in read_labels()}
        return splits.get(path.relative_to(CORPUS).as_posix(), "heldout") != "calibration"
    if path.is_relative_to(SHARED):
        return split_of(path.relative_to(SHARED).as_posix()) != "calibration"
    return False


def write(out: Path, extra: list[Path]) -> None:
    from typer.testing import CliRunner

    import diagnose
    from diagnose.cli.app import app

    print(f"diagnose from {Path(diagnose.__file__).parent}")
    out.mkdir(parents=True, exist_ok=True)
    runner = CliRunner()
    for index, path in enumerate(inputs(extra)):
        result = runner.invoke(app, ["report", "--format", "json", str(path)])
        record = {
            "path": str(path),
            "exit": result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "crash": repr(result.exception) if result.exit_code not in (0, 2) else None,
        }
        (out / f"{index:05d}.json").write_text(json.dumps(record), encoding="utf-8")


def compare(before: Path, after: Path) -> int:
    same = different = hidden = 0
    names = sorted({p.name for p in before.glob("*.json")} | {p.name for p in after.glob("*.json")})
    for name in names:
        left, right = before / name, after / name
        if left.is_file() and right.is_file() and left.read_bytes() == right.read_bytes():
            same += 1
            continue
        different += 1
        source = Path(json.loads((left if left.is_file() else right).read_text(encoding="utf-8"))["path"])
        if held_out(source):
            hidden += 1
        else:
            print(f"different: {source}")
    print(f"{same} identical, {different} different ({hidden} of them held-out files, not named)")
    return 1 if different else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    writing = commands.add_parser("write")
    writing.add_argument("out", type=Path)
    writing.add_argument("--extra", type=Path, action="append", default=[], help="another file or folder")
    comparing = commands.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out, args.extra)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
