"""`hashveil audit --attackers ...`: the attacker ladder over a real query log, per query.

The options are one group (``ladder_options``) handed to the audit command as one object; the
work is ``audit.ladder.ladder_for_log``, a plain function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import click

from hashveil.group import guard
from hashveil.options import group_options
from retrieval.core.config import Config


@dataclass(frozen=True)
class LadderFlags:
    attackers: str | None
    groups: str | None
    inversion_per_label: int
    second_model_epochs: int
    attacker_seed: int | None


ladder_options = group_options(
    "ladder",
    LadderFlags,
    [
        click.option(
            "--attackers",
            help="run the attacker ladder on every logged upload: 'all' or a comma list of naive, jpeg95, "
            "jpeg90, jpeg75, jpeg60, webp80, resize0.5, pixel-knn, second-model, inversion",
        ),
        click.option(
            "--groups",
            type=click.Path(exists=True, dir_okay=False),
            help="which group each log id belongs to (CSV id,group or JSON), e.g. plain / semantic; "
            "detector AUCs compare 'plain' with the others",
        ),
        click.option(
            "--inversion-per-label",
            type=click.IntRange(1, 10_000),
            default=10,
            show_default=True,
            help="database items per label the knowing attacker protects itself",
        ),
        click.option(
            "--second-model-epochs",
            type=click.IntRange(1, 1000),
            default=10,
            show_default=True,
            help="epochs of the attacker's own small_cnn hash model",
        ),
        click.option("--attacker-seed", type=int, help="seed of the attackers' own draws (default: fresh)"),
    ],
)


def run_ladder_cli(
    ctx: click.Context, cfg: Config, searcher, rows, truth, flags: LadderFlags, radius
) -> dict:
    """Run the ladder, print it per query and as a table; returns its JSON for ``--json``."""
    from audit import ladder, ladder_report, logs
    from audit.attackers import LadderSettings, parse_names
    from audit.attackers.training import SecondModelSettings

    groups = guard(logs.read_groups, flags.groups) if flags.groups else None
    settings = guard(
        LadderSettings,
        names=guard(parse_names, flags.attackers),
        radius=radius if radius is not None else cfg.server.radius,
        second_model=SecondModelSettings(epochs=flags.second_model_epochs, seed=flags.attacker_seed or 0),
        inversion_per_label=flags.inversion_per_label,
        privacy=cfg.privacy,
        seed=flags.attacker_seed,
    )
    entries, summary = guard(
        ladder.ladder_for_log, searcher, rows, settings, cfg.work_dir / "attackers", truth, groups
    )
    if not entries:
        raise click.ClickException("the log holds no readable uploaded image for the attackers")
    click.echo("\nThe attacker ladder, per logged upload:")
    click.echo(ladder_report.per_query(entries))
    click.echo(
        "\nShare of uploads whose true label each attacker inferred (with --labels), and detector AUCs:"
    )
    click.echo(ladder_report.format_table(summary))
    return {"summary": asdict(summary), "entries": [asdict(e) for e in entries]}
