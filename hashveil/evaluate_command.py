"""`hashveil evaluate`: the paper's tables and figures, each written with the command that made it."""

from __future__ import annotations

from pathlib import Path

import click

from hashveil.group import config_of, guard, main

EXPERIMENT_NAMES = ("table1", "table2", "table3", "figure2", "convergence-vs-scale", "figure3", "figure4")


@main.command()
@click.option("--quick", is_flag=True, help="a small profile (few queries and steps) that runs in seconds")
@click.option(
    "--experiment",
    "names",
    multiple=True,
    type=click.Choice(EXPERIMENT_NAMES),
    help="run only these (repeatable); default: all",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="results folder (default work_dir/results)"
)
@click.option("--queries", type=int, help="query sample size (default 500; --quick: 8)")
@click.option("--bits", type=int, multiple=True, help="bit lengths for table1/figure2 (repeatable)")
@click.option("--tanh-steps", type=int, help="Tanh iterations (default 2000, DHTA's)")
@click.option("--rnm-steps", type=int, help="RNM iterations (default privacy.steps)")
@click.option("--figure2-queries", type=int, help="queries of figure2 and convergence-vs-scale (default 100)")
@click.option(
    "--scale-factor", "scale_factors", type=float, multiple=True, help="convergence-vs-scale output scales"
)
@click.option("--batch-size", type=int, help="images per attack batch (default 32)")
@click.pass_context
def evaluate(ctx, quick, names, out_dir, **given) -> None:
    """Reproduce the paper's tables and figures on the configured dataset and model."""
    import dataclasses

    from evaluation.run import EvalOptions, run_all

    cfg = config_of(ctx)
    opts = EvalOptions.quick_profile() if quick else EvalOptions()
    changes = {k: (tuple(v) or None) if isinstance(v, tuple) else v for k, v in given.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    command = evaluate_command(ctx, quick, names, out_dir, changes)
    opts = guard(dataclasses.replace, opts, command=command, **changes)
    out = Path(out_dir) if out_dir else cfg.work_dir / "results"
    report = guard(run_all, cfg, out, opts, names=list(names) or None)
    click.echo(f"results in {out} ({report})")


def evaluate_command(ctx, quick: bool, names, out_dir, changes: dict) -> str:
    """The canonical command line of an evaluation, written into every table it makes."""
    import shlex

    words = ["hashveil"]
    for flag, key in (("--config", "config_path"), ("--work-dir", "work_dir")):
        if ctx.parent is not None and ctx.parent.params.get(key):
            words += [flag, str(ctx.parent.params[key])]
    words += ["evaluate"] + ["--quick"] * bool(quick)
    for key, value in changes.items():
        flag = "--scale-factor" if key == "scale_factors" else "--" + key.replace("_", "-")
        for v in value if isinstance(value, tuple) else (value,):
            words += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
    for name in names:
        words += ["--experiment", name]
    if out_dir:
        words += ["--out", str(out_dir)]
    return shlex.join(words)
