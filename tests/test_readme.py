"""The README stays true: its rules table is the registry, its commands exist."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
import typer.main

from diagnose.rules import all_rules

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}
SNAPSHOTS = ROOT / "tests" / "snapshots"


def rules_table_rows() -> list[str]:
    return [f"| `{r.code}` | {r.name} | {r.severity.value} | {r.category.value} | {r.title} |" for r in all_rules()]


def test_readme_rules_table_lists_every_rule_as_declared() -> None:
    documented = [line for line in README.splitlines() if re.match(r"^\| `[A-Z]+\d{3}` \|", line)]
    assert documented == rules_table_rows()


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_documents_every_cli_command() -> None:
    from diagnose.cli.app import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for command in commands:
        assert f"diagnose {command}" in README, command


# -- what a reader would copy: command lines, code, samples --------------------------------------


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Each fenced block as (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


# What a synopsis's placeholders stand for, to parse it as a command line.
_PLACEHOLDERS = {
    "PATH...": "run.jsonl",
    "PATH": "run.jsonl",
    "SCRIPT": "train.py",
    "DIR": "out",
    "N": "100",
    "X": "0.5",
    "CODE": "LR001",
    "READER": "csv",
    "FILE": "out.txt",
    "SECONDS": "10",
    "MODULE:FUNCTION": "train:pieces",
    "{error,warning,info}": "warning",
}
_DROPPED = {"options", "ARGS..."}


def command_lines(text: str) -> list[str]:
    """Every ``diagnose ...`` command line: in shell and YAML blocks, and in inline code spans."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    candidates = [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", prose)]
    candidates += [
        line for language, body in code_blocks(text) if language in ("sh", "yaml") for line in body.splitlines()
    ]
    found = []
    for candidate in candidates:
        for part in re.split(r"[;|]", candidate):
            part = re.sub(r"#.*", "", re.sub(r"^\s*(- run:\s*)?(python -m )?", "", part)).strip()
            # A bare `diagnose report` names the command in a sentence; it is no command line.
            mention = part in (f"diagnose {word}" for word in ("report", "check", "plot", "run", "explain"))
            if part.startswith("diagnose ") and not mention:
                found.append(part)
    return found


def _arguments(line: str) -> list[str]:
    words = [word.strip("[]") for word in shlex.split(line)[1:]]
    return [_PLACEHOLDERS.get(word, word) for word in words if word and word not in _DROPPED]


def test_the_readme_shows_command_lines_of_every_command() -> None:
    # The extraction below finds them: a README with none would pass the parse test for nothing.
    assert {line.split()[1] for line in command_lines(README)} >= {"report", "check", "plot", "explain", "run"}


ALL_COMMAND_LINES = sorted({*command_lines(README), *(line for text in DOCS.values() for line in command_lines(text))})


@pytest.mark.parametrize("line", ALL_COMMAND_LINES)
def test_every_command_line_in_the_readme_and_docs_parses_with_the_cli(line: str) -> None:
    from diagnose.cli.app import app

    group = typer.main.get_command(app)
    name, *rest = _arguments(line)
    if name == "--version":
        assert any("--version" in param.opts for param in group.params)
        return
    command = group.get_command(click.Context(group), name)
    assert command is not None, f"{line}: no command {name!r}"
    try:
        command.make_context(name, rest)  # options, choices, types and required arguments, nothing run
    except click.UsageError as exc:
        pytest.fail(f"{line}: {exc.format_message()}")


def test_the_sample_terminal_report_is_the_pinned_report_of_its_example() -> None:
    found = re.search(r"A sample terminal report \(`diagnose report (\S+)`\):\n\n```\n(.*?)\n```", README, re.DOTALL)
    assert found, "the README's sample report moved"
    example = Path(found[1])
    pinned = SNAPSHOTS / f"{example.parent.name}-{example.stem}.txt"
    assert found[2] == pinned.read_text(encoding="utf-8").rstrip("\n"), f"copy {pinned} into the README"


def test_report_excerpts_in_the_readme_are_lines_of_the_pinned_report() -> None:
    excerpts = [body for _, body in code_blocks(README) if re.match(r"\d+\. (ERROR|WARNING|INFO) [A-Z]+\d{3} ", body)]
    assert excerpts
    for body in excerpts:
        code = body.split()[2]
        pinned = (SNAPSHOTS / f"{code}-bad.txt").read_text(encoding="utf-8").splitlines()
        # An abridged line ends in "..." (or is one); every other line is the report's own.
        missing = [line for line in body.splitlines() if not line.rstrip().endswith("...") and line not in pinned]
        assert not missing, f"not in {code}-bad.txt: {missing}"


def _cli_exit_codes() -> set[int]:
    """The codes diagnose/cli/ exits with: 0, and each int that a `typer.Exit(...)` or a `return` gives,
    named by a module constant or written out."""
    codes = {0}
    for path in (ROOT / "diagnose" / "cli").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        given = [
            node.args[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Exit" and node.args
        ]
        given += [node.value for node in ast.walk(tree) if isinstance(node, ast.Return) and node.value is not None]
        for value in given:
            number = constants.get(value.id) if isinstance(value, ast.Name) else getattr(value, "value", None)
            if isinstance(number, int) and not isinstance(number, bool):
                codes.add(number)
    return codes


def test_the_exit_codes_table_lists_every_code_the_cli_exits_with_and_no_other() -> None:
    table = README.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert listed == _cli_exit_codes()


def test_the_readme_gives_the_signature_of_watch() -> None:
    from diagnose.probes.watch import Watch

    found = re.search(r"`diagnose\.watch\((.*?)\)`", README)
    assert found, "the README no longer states watch()'s signature"
    arguments = ast.parse(f"def watch({found[1]}): pass").body[0].args
    names = [a.arg for a in (*arguments.args, *arguments.kwonlyargs)]
    defaults = [ast.literal_eval(d) for d in (*arguments.defaults, *arguments.kw_defaults)]
    actual = list(inspect.signature(Watch.__init__).parameters.values())[1:]
    assert names == [p.name for p in actual]
    assert defaults == [p.default for p in actual if p.default is not inspect.Parameter.empty]


def test_the_configuration_example_is_a_table_diagnose_accepts() -> None:
    from diagnose.rules.config import config_from_table

    (toml,) = [body for language, body in code_blocks(README) if language == "toml"]
    table = tomllib.loads(toml)["tool"]["diagnose"]
    config = config_from_table(table)  # raises on a pattern or threshold that names no rule
    assert config.select and config.ignore and config.severity and config.thresholds and config.fail_on


def _codes(text: str) -> set[str]:
    """``LR001-LR003, NF001`` -> each code, ranges spelled out."""
    codes = set()
    for first, last in re.findall(r"\b([A-Z]+\d{3})(?:-([A-Z]+\d{3}))?\b", text):
        prefix, start = re.match(r"([A-Z]+)(\d{3})", first).groups()
        end = int(last[len(prefix) :]) if last else int(start)
        codes |= {f"{prefix}{n:03d}" for n in range(int(start), end + 1)}
    return codes


def test_the_readme_lists_the_live_rules() -> None:
    listed = README.split("declare themselves live", 1)[1].split("`diagnose explain CODE`", 1)[0]
    assert _codes(listed) == {r.code for r in all_rules() if r.live}


def test_the_readme_lists_the_rules_not_applied_to_adversarial_and_rl_losses() -> None:
    listed = README.split("the rules that assume a falling loss", 1)[1].split(")", 1)[0]
    assert _codes(listed) == {r.code for r in all_rules() if r.assumes_falling_loss}


def _backticked(sentence: str) -> list[str]:
    return re.findall(r"`([^`]+)`", sentence)


def test_key_resolution_prefixes_and_loss_names_are_the_readers() -> None:
    from diagnose.runfile import schema

    section = " ".join(README.split("### Key resolution", 1)[1].split("When two columns", 1)[0].split())
    evaluation = _backticked(section.split("2. A key starting with ", 1)[1].split(" is an", 1)[0])
    training = _backticked(section.split("3. A training prefix ", 1)[1].split(" is dropped", 1)[0])
    names, qualifiers = section.split("4. What is left is the loss when it names one: ", 1)[1].split(" alone or after ")
    qualifiers = _backticked(qualifiers.split(" (", 1)[0])
    assert set(evaluation) | {"test_"} == set(schema._EVAL_PREFIXES)
    assert all(schema.canonical_eval_key(prefix + "loss") == "val_loss" for prefix in evaluation)
    assert schema.canonical_eval_key("test_loss") == "val_test_loss"
    assert set(training) == set(schema._TRAIN_PREFIXES)
    assert all(schema.canonical_step_key(prefix + "loss") == "loss" for prefix in training)
    assert set(qualifiers) == set(schema._LOSS_QUALIFIERS)
    for name in _backticked(names):
        assert schema.is_loss_name(name) and all(schema.is_loss_name(q + name) for q in qualifiers), name


# -- the format documents, table by table -------------------------------------------------------


def _table_rows(body: str) -> list[list[str]]:
    """The cells of each row of the tables in ``body`` that names something (`...`), headers left out."""
    lines = body.splitlines()
    headers = {i - 1 for i, line in enumerate(lines) if re.match(r"^\|\s*-+", line)}
    return [line.split(" | ") for i, line in enumerate(lines) if line.startswith("| `") and i not in headers]


def doc_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Each heading's table: every backticked name of a row's first cell, with that row's other cells."""
    tables: dict[str, dict[str, list[str]]] = {}
    for heading, body in re.findall(r"^#+ (.+?)\n(.*?)(?=^#+ |\Z)", text, flags=re.MULTILINE | re.DOTALL):
        tables[heading] = {name: row[1:] for row in _table_rows(body) for name in re.findall(r"`([^`]+)`", row[0])}
    return tables


def _documented_once(text: str, heading: str) -> set[str]:
    """The names the table under ``heading`` documents, each in one row only."""
    body = re.split(r"^#+ ", text.split(f"\n{heading}\n", 1)[1], flags=re.MULTILINE)[0]
    names = [name for row in _table_rows(body) for name in re.findall(r"`([^`]+)`", row[0])]
    assert len(names) == len(set(names)), f"{heading}: a name documented twice"
    return set(names)


def test_run_format_tables_document_each_declared_key_of_their_kind_once() -> None:
    from diagnose.runfile import schema

    doc = DOCS["run-format.md"]
    assert _documented_once(doc, "### `meta`: the first record of a session") == set(schema.META_FIELDS) - {"kind"}
    assert _documented_once(doc, "### `step`: one per optimizer step") == set(schema.STEP_FIELDS)
    assert _documented_once(doc, "### `layer`: one per module per sampled step") == set(schema.LAYER_FIELDS)
    events = doc_tables(doc)["`event`: something happened"]
    assert set(events) == set(schema.EVENTS) | set(schema.PREFLIGHT_EXPERIMENTS)
    for name, event in schema.EVENTS.items():
        keys = set(re.findall(r"`([^`]+)`", events[name][0]))
        if name != schema.EV_PREFLIGHT:  # its measurements have a table of their own, per experiment
            assert set(event.fields) <= keys, name


def test_report_schema_tables_are_the_json_schema_objects() -> None:
    from diagnose.report.schema import JSON_SCHEMA

    doc = DOCS["report-schema.md"]
    run = JSON_SCHEMA["properties"]["runs"]["items"]["properties"]
    objects = {
        "## Top level": JSON_SCHEMA,
        "## verdict": JSON_SCHEMA["properties"]["verdict"],
        "## run": JSON_SCHEMA["properties"]["runs"]["items"],
        "## summary": run["summary"],
        "## read": run["read"],
        "## finding": run["findings"]["items"],
        "## root cause": run["root_causes"]["items"],
    }
    for heading, schema in objects.items():
        assert _documented_once(doc, heading) == set(schema["properties"]), heading


# -- the Python a reader copies, run on a tiny classifier ----------------------------------------


def python_block(starting: str) -> str:
    (body,) = [body for language, body in code_blocks(README) if language == "python" and body.startswith(starting)]
    return body


def _tiny_classifier():
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10)), x, y


def test_the_quick_start_records_a_run_that_reads_back(tmp_path, monkeypatch) -> None:
    import torch
    from torch import nn

    import diagnose

    monkeypatch.chdir(tmp_path)
    model, x, y = _tiny_classifier()
    criterion = nn.CrossEntropyLoss()
    names = {
        "model": model,
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
        "criterion": criterion,
        "epochs": 2,
        "loader": [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)],
        "evaluate": lambda m: criterion(m(x), y).item(),
        "acc": 0.1,
    }
    exec(python_block("import diagnose\n\nwith diagnose.watch("), names)
    analysis = diagnose.analyze(diagnose.load("runs/exp1.jsonl"))
    assert analysis.run.series("loss").size == 8 and analysis.run.series("val_loss").size == 2
    assert isinstance(analysis.root_causes, list)


def test_the_live_policy_options_are_accepted(tmp_path, monkeypatch) -> None:
    import torch

    import diagnose

    monkeypatch.chdir(tmp_path)
    model, _, _ = _tiny_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    exec(
        python_block('with diagnose.watch(model, optimizer, "run.jsonl",'),
        {"model": model, "optimizer": optimizer, "send": print, "diagnose": diagnose},
    )
    assert (tmp_path / "run.jsonl").is_file()


def test_the_sinks_send_a_finding(tmp_path, monkeypatch) -> None:
    import sys
    import types
    import urllib.request

    import diagnose

    monkeypatch.chdir(tmp_path)
    sent = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: sent.append(request.full_url))
    levels = types.SimpleNamespace(ERROR="error", WARN="warn")
    monkeypatch.setitem(
        sys.modules, "wandb", types.SimpleNamespace(alert=lambda **k: sent.append(k), AlertLevel=levels)
    )
    names = {"WEBHOOK_URL": "http://chat.invalid/hook"}
    exec(python_block("import json, urllib.request"), names)
    (finding, *_) = diagnose.analyze(diagnose.load(ROOT / "sample_runs" / "examples" / "NF001" / "bad.jsonl"))
    for sink in ("to_chat", "to_wandb", "to_tensorboard"):
        names[sink](finding)
    names["tb"].close()  # its writer thread would write into "tb" after the test has left the folder
    assert sent[0] == "http://chat.invalid/hook" and sent[1]["level"] == "error"


def test_the_preflight_call_returns_an_analysis_of_its_run_file(tmp_path, monkeypatch) -> None:
    import torch
    from torch import nn

    import diagnose

    monkeypatch.chdir(tmp_path)
    model, x, y = _tiny_classifier()
    names = {
        "diagnose": diagnose,
        "torch": torch,
        "model": model,
        "loss_fn": nn.CrossEntropyLoss(),
        "x": x,
        "y": y,
    }
    exec(python_block("analysis = diagnose.preflight("), names)
    assert names["analysis"].run.meta["preflight"] is True
    assert (tmp_path / "diagnose-preflight.jsonl").is_file()


def test_every_file_and_python_name_the_readme_and_docs_point_to_exists() -> None:
    import importlib

    text = README + "".join(DOCS.values())
    paths = set(re.findall(r"`((?:diagnose|tests|benchmarks|sample_runs|docs)/[^`\s]*)`", text))
    assert paths
    assert [p for p in sorted(paths) if not re.search(r"[<*]", p) and not (ROOT / p).exists()] == []
    missing = []
    for name in sorted(set(re.findall(r"`(diagnose(?:\.\w+)+)`", text)) - {"diagnose.xml"}):  # the JUnit file
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
                for attribute in parts[split:]:
                    found = getattr(found, attribute)
                break
            except (ImportError, AttributeError):
                continue
        else:
            missing.append(name)
    assert missing == []
