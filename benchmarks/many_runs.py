"""How long ``report``, ``check``, ``plot`` and the HTML report take on a folder of many small runs.

Writes ``--runs`` run files of ``--steps`` steps each (loss, learning rate and
gradient norm every step, an evaluation every 50 steps; a few runs diverge or
overfit so that there is something to find) into a temporary folder, then runs
each command as its own process, as a user would, and reports its wall time,
the CPU seconds of the process and its workers (user + system: on a shared
machine the wall time mostly says how long it waited; the load average is
printed with each), and the peak memory of the process with its workers
(summed resident set sizes, sampled every 50 ms).

Every process runs from compiled bytecode, as an installed package does (see
``benchmarks/analysis_speed.py``): each command runs once, untimed, on a folder
of a few runs first, to write it.

    python benchmarks/many_runs.py [--runs 1000] [--steps 500]

Targets (issue 15): report and check under 10 s; plot and HTML under 30 s and 1 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from analysis_speed import compiled_environment

TARGETS = {"report": (10.0, None), "check": (10.0, None), "plot": (30.0, 1024.0), "html": (30.0, 1024.0)}


def write_runs(folder: Path, runs: int, steps: int) -> None:
    rng = random.Random(0)
    for index in range(runs):
        diverges, overfits = index % 17 == 0, index % 23 == 0
        lines = [
            json.dumps(
                {
                    "kind": "meta",
                    "schema": "diagnose.run/1",
                    "name": f"run-{index:04d}",
                    "metadata": {"task": "multiclass", "num_classes": 10},
                }
            )
        ]
        for step in range(1, steps + 1):
            loss = 2.3 * math.exp(-step / (steps / 4)) + 0.1 + rng.gauss(0, 0.02)
            if diverges and step > steps // 2:
                loss *= math.exp((step - steps // 2) / 40)
            lines.append(
                json.dumps(
                    {
                        "kind": "step",
                        "step": step,
                        "loss": round(loss, 6),
                        "lr": 1e-3,
                        "grad_norm": round(abs(rng.gauss(1, 0.1)), 6),
                    }
                )
            )
            if step % 50 == 0:
                val = loss + 0.05 + (0.004 * max(0, step - steps // 3) if overfits else 0.0)
                lines.append(json.dumps({"kind": "eval", "step": step, "val_loss": round(val, 6)}))
        (folder / f"run-{index:04d}.jsonl").write_text("\n".join(lines) + "\n")


def measure(command: list[str], environment: dict[str, str]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds and peak MiB of the process and its children, exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers are reaped by the command itself
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak / 2**20, process.returncode


def commands_on(folder: Path, out: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-c", "from diagnose.cli.app import main; main()"]
    return {
        "report": cli + ["report", "--format", "json", "-o", str(out / "report.json"), str(folder)],
        "check": cli + ["check", str(folder), "--fail-on", "error"],
        "plot": cli + ["plot", str(folder), "-o", str(out / "runs.png")],
        "html": cli + ["report", "--format", "html", "-o", str(out / "report.html"), str(folder)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, few = Path(tmp) / "runs", Path(tmp) / "few"
        folder.mkdir()
        few.mkdir()
        write_runs(folder, args.runs, args.steps)
        write_runs(few, 3, args.steps)
        environment = compiled_environment(Path(tmp) / "bytecode")
        for command in commands_on(few, Path(tmp)).values():
            measure(command, environment)
        print(f"{args.runs} runs of {args.steps} steps")
        for name, command in commands_on(folder, Path(tmp)).items():
            seconds, cpu, mib, code = measure(command, environment)
            limit_s, limit_mib = TARGETS[name]
            ok = seconds <= limit_s and (limit_mib is None or mib <= limit_mib)
            memory = f"{mib:7.0f} MiB" + (f" (<= {limit_mib:.0f})" if limit_mib else "")
            print(
                f"  {name:<7} {seconds:7.2f} s (<= {limit_s:.0f}; {cpu:6.1f} s CPU) {memory}  exit {code}  "
                f"{'OK' if ok else 'OVER'}  load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
