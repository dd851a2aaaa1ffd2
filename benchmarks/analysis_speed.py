"""How long reading, analysing and rendering a very long run takes, next to merely parsing its file.

Writes a run of one million steps (loss, learning rate, gradient norm every
step, an evaluation every 1000 steps) with per-layer records for a 50-layer
model every 100 steps into a temporary folder, then times:

- parse: every line through the fastest JSON parser available (orjson when
  installed, else the standard library), nothing else;
- read: the run file into a `Run` (the native reader);
- analyse: every rule (their modules imported beforehand, timed apart);
- render: the terminal, JSON and Markdown reports;
- HTML: the HTML report with its embedded plots, shown apart.

    python benchmarks/analysis_speed.py [--steps 1000000] [--layers 50] [--layer-every 100]

Target: analysis plus rendering adds at most half again on top of parsing
(ratio to parse <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diagnose.readers import load_all
from diagnose.report import render
from diagnose.rules import all_rules, analyze

TARGET = 0.5

try:
    import orjson

    PARSER, parse_line = "orjson", orjson.loads
except ImportError:
    PARSER, parse_line = "json", json.loads


def write_run(path: Path, steps: int, layers: int, layer_every: int) -> None:
    rng = random.Random(0)
    meta = {"kind": "meta", "schema": "diagnose.run/1", "name": "long-run",
            "metadata": {"task": "multiclass", "num_classes": 10},
            "model": {"modules": [[f"blocks.{i}", "Linear"] for i in range(layers)]}}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(meta) + "\n")
        for step in range(1, steps + 1):
            loss = 2.3 * math.exp(-step / (steps / 5)) + 0.2 + rng.gauss(0, 0.02)
            lr = 1e-3 * min(1.0, step / 1000) * (0.5 + 0.5 * math.cos(math.pi * step / steps))
            fh.write(f'{{"kind":"step","step":{step},"loss":{loss:.6g},"lr":{lr:.6g},'
                     f'"grad_norm":{abs(rng.gauss(1, 0.1)):.6g}}}\n')
            if step % layer_every == 0:
                for i in range(layers):
                    fh.write(f'{{"kind":"layer","step":{step},"module":"blocks.{i}","type":"Linear",'
                             f'"grad_norm":{abs(rng.gauss(0.1, 0.01)):.6g},"param_norm":{10 + i * 0.1:.6g},'
                             f'"act_mean":{rng.gauss(0, 0.1):.6g},"act_std":{abs(rng.gauss(1, 0.05)):.6g},'
                             f'"act_zero_frac":{rng.random() * 0.1:.6g}}}\n')
            if step % 1000 == 0:
                fh.write(f'{{"kind":"eval","step":{step},"val_loss":{loss + 0.05:.6g}}}\n')


def timed(label: str, action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    print(f"  {label:<28} {seconds:8.2f} s", flush=True)
    return seconds, result


def parse_only(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line and parse_line(line) is not None)


def render_text(analyses: list) -> None:
    for format in ("terminal", "json", "md"):
        render(analyses, format)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--layer-every", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long-run.jsonl"
        print(f"run: {args.steps:,} steps, {args.layers} layers every {args.layer_every} steps")
        timed("write the run file", lambda: write_run(path, args.steps, args.layers, args.layer_every))
        print(f"  file: {path.stat().st_size / 2**20:.0f} MiB")
        parse_s, _ = timed(f"parse only ({PARSER})", lambda: parse_only(path))
        read_s, runs = timed("read into a Run", lambda: load_all(path))
        timed("import the rules", all_rules)
        analyse_s, analyses = timed("analyse (every rule)", lambda: [analyze(run) for run in runs])
        render_s, _ = timed("render terminal+JSON+md", lambda: render_text(analyses))
        html_s, _ = timed("render HTML with plots", lambda: render(analyses, "html"))
    ratio = (analyse_s + render_s) / parse_s
    print(f"read / parse:             {read_s / parse_s:.2f}x")
    print(f"analyse+render / parse:   {ratio:.2f}x (target <= {TARGET}) {'OK' if ratio <= TARGET else 'OVER'}")
    print(f"  of which analyse / parse: {analyse_s / parse_s:.2f}x, render / parse: {render_s / parse_s:.2f}x")
    print(f"HTML with plots / parse:  {html_s / parse_s:.2f}x")


if __name__ == "__main__":
    main()
