"""Where the time of ``diagnose report --format json`` of a long run goes, phase by phase.

Writes the run of ``benchmarks/analysis_speed.py`` (``--steps`` steps) unless a
file is given, then, in a new process run from compiled bytecode, goes through
the phases of a report one after another: importing the command line, pydantic
(typer converts the arguments with it), importing the rules (pandas with them),
reading the file and pyarrow's parse of it, building the `Run` of the parse, the
rules, the JSON render. The real command parses while it imports (see
``diagnose.readers.arrow_lines``); here nothing overlaps, so that each phase
shows its own cost. For each phase: wall seconds, CPU seconds
of the process (user and system: the parse runs on pyarrow's threads), minor
page faults (first touches of fresh memory) and the CPU the cyclic garbage
collector took.

    python benchmarks/report_phases.py [--steps 1000000] [--rounds 2] [FILE]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analysis_speed import compiled_environment, write_run


class Meter:
    """Prints what each phase cost since the one before it."""

    def __init__(self) -> None:
        self.collecting = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_collection)
        self.last = self._now()

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.collecting += time.thread_time() - self._started

    def _now(self) -> tuple[float, ...]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt, self.collecting

    def phase(self, name: str) -> None:
        now = self._now()
        wall, user, system, faults, collecting = (b - a for a, b in zip(self.last, now, strict=True))
        print(
            f"  {name:22s} wall {wall:5.2f} s  CPU {user + system:5.2f} s (user {user:4.2f}, system {system:4.2f})  "
            f"faults {faults:7,.0f}  gc {collecting:4.2f} s",
            flush=True,
        )
        self.last = now


def phases(path: Path) -> None:
    meter = Meter()
    from diagnose.cli import common, group  # noqa: F401 - the command line, as `diagnose report` imports it

    meter.phase("import command line")
    from pydantic import TypeAdapter  # noqa: F401 - typer (0.29) converts each argument with these

    meter.phase("import pydantic")
    common.freeze_imports = True  # as `diagnose report` runs
    config = common.rule_config()
    from diagnose.readers import arrow_lines, native
    from diagnose.report import render
    from diagnose.rules.engine import analyze

    meter.phase("import rules, pandas")
    arrow_lines.read_ahead([path])  # the bytes and their parse, which the reader then takes
    arrow_lines.early_bytes(path)
    meter.phase("read, parse (pyarrow)")
    runs = native.read_jsonl(path)
    meter.phase("build the Run")
    analyses = [analyze(run, config) for run in runs]
    meter.phase("rules")
    render(analyses, "json")
    meter.phase("render JSON")
    os._exit(0)  # as the command ends: without the interpreter's teardown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.phases:
        phases(args.file)
    with tempfile.TemporaryDirectory() as folder:
        path = args.file or Path(folder) / "long-run.jsonl"
        if args.file is None:
            write_run(path, args.steps, 0, 100)
        environment = compiled_environment(Path(folder) / "bytecode")
        command = [sys.executable, __file__, "--phases", str(path)]
        subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)  # writes the bytecode
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} ({path.stat().st_size / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.1f}):")
            subprocess.run(command, check=True, env=environment)


if __name__ == "__main__":
    main()
