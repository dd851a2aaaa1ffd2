"""How long ``diagnose report`` takes on a very long run, next to merely parsing its file.

Writes a run of one million steps (loss, learning rate, gradient norm every
step, an evaluation every 1000 steps; with ``--layers``, per-layer records
every ``--layer-every`` steps) into a temporary folder, then, in interleaved
rounds, times two whole processes started the same way:

- parse: the fastest parser available reads the file and nothing else
  (pyarrow's JSON reader when installed, else orjson, else the standard
  library), interpreter start and its import included;
- report: ``diagnose report --format json`` on the file (read, every rule, render).

The ratio of each round is report / parse; the median of the rounds is the
figure (the machine may be shared: each round compares two neighbouring runs).
Both processes run from compiled bytecode, as an installed package does (pip
compiles it at install time): an environment with PYTHONDONTWRITEBYTECODE set
would otherwise compile diagnose's modules from source in every report. The
bytecode goes to a temporary folder (PYTHONPYCACHEPREFIX), written by an untimed
first round of each command.
The CPU seconds of each process (user + system, all its threads) are printed
beside the wall time: on a loaded machine they say what each one costs, where
the wall time mostly says how long it waited (the load average is printed too).

    python benchmarks/analysis_speed.py [--steps 1000000] [--layers 0] [--rounds 3]

Target (issue 15): report / parse <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.5
PARSERS = {
    "pyarrow": "import sys, pyarrow.json as j; j.read_json(sys.argv[1])",
    "orjson": "import sys, orjson; [orjson.loads(l) for l in open(sys.argv[1], 'rb') if l.strip()]",
    "json": "import sys, json; [json.loads(l) for l in open(sys.argv[1], 'rb') if l.strip()]",
}


def fastest_parser() -> str:
    for name in PARSERS:
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    return "json"


def write_run(path: Path, steps: int, layers: int, layer_every: int) -> None:
    rng = random.Random(0)
    meta = {
        "kind": "meta",
        "schema": "diagnose.run/1",
        "name": "long-run",
        "metadata": {"task": "multiclass", "num_classes": 10},
        "model": {"modules": [[f"blocks.{i}", "Linear"] for i in range(layers)]},
    }
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(meta) + "\n")
        for step in range(1, steps + 1):
            loss = 2.3 * math.exp(-step / (steps / 5)) + 0.2 + rng.gauss(0, 0.02)
            lr = 1e-3 * min(1.0, step / 1000) * (0.5 + 0.5 * math.cos(math.pi * step / steps))
            fh.write(
                f'{{"kind":"step","step":{step},"loss":{loss:.6g},"lr":{lr:.6g},'
                f'"grad_norm":{abs(rng.gauss(1, 0.1)):.6g}}}\n'
            )
            if step % layer_every == 0:
                for i in range(layers):
                    fh.write(
                        f'{{"kind":"layer","step":{step},"module":"blocks.{i}","type":"Linear",'
                        f'"grad_norm":{abs(rng.gauss(0.1, 0.01)):.6g},"param_norm":{10 + i * 0.1:.6g},'
                        f'"act_mean":{rng.gauss(0, 0.1):.6g},"act_std":{abs(rng.gauss(1, 0.05)):.6g},'
                        f'"act_zero_frac":{rng.random() * 0.1:.6g}}}\n'
                    )
            if step % 1000 == 0:
                fh.write(f'{{"kind":"eval","step":{step},"val_loss":{loss + 0.05:.6g}}}\n')


def compiled_environment(folder: Path) -> dict[str, str]:
    """The environment, with bytecode written to and read from ``folder``."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**environment, "PYTHONPYCACHEPREFIX": str(folder)}


def seconds_of(command: list[str], environment: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of the process and its threads) of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load_average() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=0)
    parser.add_argument("--layer-every", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = fastest_parser()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long-run.jsonl"
        write_run(path, args.steps, args.layers, args.layer_every)
        print(
            f"run: {args.steps:,} steps, {args.layers} layers every {args.layer_every} steps, "
            f"{path.stat().st_size / 2**20:.0f} MiB; parser: {name}"
        )
        parse_cmd = [sys.executable, "-c", PARSERS[name], str(path)]
        report_cmd = [
            sys.executable,
            "-c",
            "from diagnose.cli.app import main; main()",
            "report",
            "--format",
            "json",
            "-o",
            str(Path(folder) / "report.json"),
            str(path),
        ]
        environment = compiled_environment(Path(folder) / "bytecode")
        for command in (parse_cmd, report_cmd):  # writes the bytecode; not timed
            seconds_of(command, environment)
        parses, reports = [], []
        for round_ in range(1, args.rounds + 1):
            parses.append(seconds_of(parse_cmd, environment))
            reports.append(seconds_of(report_cmd, environment))
            (parse_wall, parse_cpu), (report_wall, report_cpu) = parses[-1], reports[-1]
            print(
                f"  round {round_}: parse {parse_wall:6.2f} s ({parse_cpu:5.2f} s CPU)  "
                f"report {report_wall:6.2f} s ({report_cpu:5.2f} s CPU)  ratio {report_wall / parse_wall:.2f} "
                f"(CPU {report_cpu / parse_cpu:.2f})  load average {load_average()}",
                flush=True,
            )
    for what, index in (("wall", 0), ("CPU", 1)):
        ratios = [r[index] / p[index] for r, p in zip(reports, parses, strict=True)]
        ratio = statistics.median(ratios)
        print(
            f"{what}: parse (median) {statistics.median(p[index] for p in parses):.2f} s, report (median) "
            f"{statistics.median(r[index] for r in reports):.2f} s; report / parse: median {ratio:.2f}x "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; target <= {TARGET}) {'OK' if ratio <= TARGET else 'OVER'}"
        )


if __name__ == "__main__":
    main()
