"""Change the indexed collection without a rebuild: ``hashveil add`` and ``hashveil remove``."""

from __future__ import annotations

import click

from hashveil.group import config_of, guard, main

RELOAD_NOTE = "a running `hashveil serve` on this work_dir swaps in the new set at its next request"


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--layout", help="data.layout the index was built with: auto | csv | classes | flat")
@click.pass_context
def add(ctx: click.Context, paths: tuple[str, ...], layout: str | None) -> None:
    """Index image files (or the images in folders) that lie inside the indexed folder.

    Labels come from the folder as a build reads it (labels.csv row or class folder). Index,
    store and manifest change together; a crash midway leaves the old set or the new one.
    """
    from index_builder.update import add_images

    cfg = config_of(ctx, data={"layout": layout})
    result = guard(add_images, cfg, list(paths))
    for image_id, path in result.added:
        click.echo(f"  added id {image_id}  {path}")
    for image_id, path in result.already:
        click.echo(f"  already indexed as id {image_id}  {path}")
    skipped = ", ".join(f"{why}: {n}" for why, n in sorted(result.skipped.items()))
    click.echo(
        f"added {len(result.added)} images ({len(result.already)} already indexed"
        + (f"; skipped {sum(result.skipped.values())} files: {skipped}" if skipped else "")
        + f"); the index holds {result.manifest.count}"
    )
    if result.added:
        click.echo(RELOAD_NOTE)


@main.command()
@click.argument("ids", nargs=-1, required=True, type=int)
@click.pass_context
def remove(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Take database images out of the index and the store, by id (their files stay where they are)."""
    from index_builder.update import remove_images

    cfg = config_of(ctx)
    result = guard(remove_images, cfg, list(ids))
    click.echo(f"removed {len(result.removed)} images; the index holds {result.manifest.count}")
    click.echo(RELOAD_NOTE)
