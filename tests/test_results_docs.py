"""Every number in docs/ comes from a command: each table in docs/results/ names the `hashveil
evaluate` command that wrote it (a valid command line that runs that experiment into that
folder), every file there belongs to such a table, and every table in docs/results.md is a copy
of one of them, not a hand edit."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hashveil.cli import main

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
OTHERS = ("attackers", "decoys")  # written by benchmarks/attackers.py, which names itself
COMMAND = re.compile(r"Written by `(hashveil [^`]+)`")


def _tables() -> list[Path]:
    return sorted(p for p in RESULTS.glob("*.md") if not p.stem.startswith(OTHERS))


def _parse(command: str) -> dict:
    """The params of `hashveil evaluate` as click parses the command line (nothing runs)."""
    words = shlex.split(command)
    assert words[0] == "hashveil"
    group = main.make_context("hashveil", words[1:], resilient_parsing=True)
    rest = [*group._protected_args, *group.args]
    assert rest and rest[0] == "evaluate", command
    sub = main.get_command(group, "evaluate")
    return sub.make_context("evaluate", rest[1:], parent=group).params


def test_there_are_tables() -> None:
    assert {p.stem for p in _tables()} >= {"table1", "table2", "table3", "figure2", "figure3", "figure4"}


@pytest.mark.parametrize(
    "table", sorted(p for p in RESULTS.glob("*.md") if p.stem.startswith(OTHERS)), ids=str
)
def test_each_benchmark_table_names_its_benchmark(table: Path) -> None:
    found = re.findall(r"Written by `python -m benchmarks\.(\w+) [^`]*`", table.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{table.name} must name the one benchmark command that wrote it"
    assert (ROOT / "benchmarks" / f"{found[0]}.py").is_file(), found[0]
    assert (RESULTS / f"{table.stem}.csv").is_file(), f"{table.stem}.csv is missing"


@pytest.mark.parametrize("table", _tables(), ids=lambda p: p.name)
def test_each_table_names_the_command_that_wrote_it(table: Path) -> None:
    found = COMMAND.findall(table.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{table.name} must name the one command that wrote it"
    params = _parse(found[0])
    assert not params["names"] or table.stem in params["names"], (table.name, params["names"])
    assert params["out_dir"] == "docs/results", f"{table.name}: written by a command into {params['out_dir']}"
    assert (RESULTS / f"{table.stem}.csv").is_file(), f"{table.stem}.csv is missing"


def test_every_result_file_belongs_to_a_table() -> None:
    stems = sorted((p.stem for p in _tables()), key=len, reverse=True)
    for path in RESULTS.iterdir():
        if path.name.startswith(OTHERS):
            continue
        assert any(path.name == f"{s}{path.suffix}" or path.name.startswith(f"{s}_") for s in stems), (
            f"docs/results/{path.name} was written by no command named in a table"
        )


def _markdown_tables(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_results_page_copies_tables_verbatim() -> None:
    written = "\n".join(p.read_text(encoding="utf-8") for p in RESULTS.glob("*.md"))
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    tables = _markdown_tables(page)
    assert tables
    for block in tables:
        assert block in written, f"docs/results.md has a table that no command wrote:\n{block[:300]}"
    for image in re.findall(r"\]\((results/[^)]+)\)", page):
        assert (ROOT / "docs" / image).is_file(), image


def test_the_command_check_reads_what_evaluate_writes() -> None:
    """The CLI records its canonical command line (evaluate_command); the check parses it back."""
    from hashveil.evaluate_command import evaluate_command

    group = main.make_context("hashveil", ["--config", "my config.toml", "evaluate"], resilient_parsing=True)
    sub = main.get_command(group, "evaluate").make_context("evaluate", [], parent=group)
    given = {"queries": 7, "bits": (16, 24), "scale_factors": (10.0,), "tanh_steps": 2000, "batch_size": 50}
    line = evaluate_command(sub, False, ("table1", "figure2"), "docs/results", given)
    assert line.startswith("hashveil --config 'my config.toml' evaluate --queries 7")
    params = _parse(line)
    assert {k: params[k] for k in given} == given
    assert params["names"] == ("table1", "figure2") and params["out_dir"] == "docs/results"
    with pytest.raises(Exception, match="table9"):
        _parse("hashveil evaluate --experiment table9")


def test_the_cli_offers_every_experiment() -> None:
    from evaluation.run import EXPERIMENTS
    from hashveil.evaluate_command import EXPERIMENT_NAMES

    assert set(EXPERIMENT_NAMES) == set(EXPERIMENTS)
