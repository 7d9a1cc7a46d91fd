"""The user's and the auditor's verbs: protect, query, client, audit (evaluate: evaluate_command.py)."""

from __future__ import annotations

from pathlib import Path

import click

from hashveil.group import config_of, guard, main
from retrieval.core.config import Config, override


def protection_options(f):
    for opt in (
        click.option(
            "--mode",
            type=click.Choice(["semantic", "carrier", "untargeted"]),
            default="semantic",
            show_default=True,
            help="what to hide (see README)",
        ),
        click.option("--target-label", help="semantic mode: the label to point at (default: random other)"),
        click.option(
            "--strength", type=click.Choice(["low", "mid", "high"]), help="preset for --eps/--steps"
        ),
        click.option("--eps", type=float, help="L_inf budget in pixels [0, 1] (privacy.eps)"),
        click.option("--steps", type=int, help="most PGD steps (privacy.steps)"),
        click.option("--method", type=click.Choice(["rnm", "tanh", "noise"]), help="privacy.method"),
        click.option(
            "--variant",
            type=click.Choice(["margin", "proximal", "literal"]),
            help="privacy.rnm_variant (literal = the paper's eq. 12 as written)",
        ),
        click.option("--margin", type=float, help="privacy.margin: keep bits this far past 0"),
        click.option(
            "--private",
            type=click.Path(exists=True, dir_okay=False),
            help="carrier mode: the private image whose results the carrier should retrieve",
        ),
    ):
        f = opt(f)
    return f


def _privacy_config(ctx: click.Context, strength, eps, steps, method, variant, margin) -> Config:
    from privacy.presets import apply_strength

    cfg = config_of(ctx)
    try:
        preset = apply_strength(cfg.privacy, strength)  # flags given explicitly win over the preset
        return override(
            cfg,
            privacy={
                "eps": eps if eps is not None else preset.eps,
                "steps": steps if steps is not None else preset.steps,
                "method": method,
                "rnm_variant": variant,
                "margin": margin,
            },
        )
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e)) from None


def _protector(cfg: Config, server_url: str | None):
    """A Protector on the server's model (downloaded, sha256-checked) or on the local one."""
    from hashveil.local import local_protector
    from privacy.client import connect

    if server_url:
        return guard(connect, server_url, cfg.privacy, cfg.work_dir / "client-cache", cfg.model.device)
    return guard(local_protector, cfg.work_dir / "model", cfg.db_url, cfg.privacy, cfg.model.device), None


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@protection_options
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="output folder (default: beside each input)"
)
@click.option("--server", "server_url", help="use this server's model and anchors (default: the local ones)")
@click.option("--overwrite", is_flag=True, help="protect again files that already have an output")
@click.pass_context
def protect(
    ctx,
    inputs,
    mode,
    target_label,
    strength,
    eps,
    steps,
    method,
    variant,
    margin,
    private,
    out_dir,
    server_url,
    overwrite,
) -> None:
    """Protect images (files or folders) before they go anywhere; writes NAME.protected.png."""
    from privacy.batch import protect_files

    cfg = _privacy_config(ctx, strength, eps, steps, method, variant, margin)
    protector, _ = _protector(cfg, server_url)
    click.echo(
        "Outputs are PNG at the original resolution, EXIF orientation applied, and ALL metadata "
        "(EXIF, GPS, ICC, text) removed."
    )
    done = skipped = failed = 0
    for outcome in guard(
        lambda: list(
            protect_files(
                protector,
                list(inputs),
                mode=mode,
                out_dir=Path(out_dir) if out_dir else None,
                target_label=target_label,
                private=Path(private) if private else None,
                overwrite=overwrite,
            )
        )
    ):
        if outcome.error:
            failed += 1
            click.echo(f"FAILED {outcome.source}: {outcome.error}", err=True)
        elif outcome.protected is None:
            skipped += 1
            click.echo(f"skipped {outcome.source}: {outcome.output} exists (--overwrite redoes it)")
        else:
            done += 1
            p = outcome.protected
            click.echo(
                f"{outcome.source} -> {outcome.output}: {p.iterations} iterations, Hamming to target "
                f"{p.distance}, PSNR {p.psnr:.1f} dB, L_inf {p.linf * 255:.1f}/255"
                + (f", target label {p.target_label}" if p.target_label else "")
            )
    click.echo(f"{done} protected, {skipped} skipped, {failed} failed")
    if failed:
        ctx.exit(1)


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--server", "server_url", required=True, help="search server URL, e.g. http://127.0.0.1:5000")
@click.option(
    "--protect", "do_protect", is_flag=True, help="protect locally and send only the protected image"
)
@protection_options
@click.option("--radius", type=int, help="Hamming threshold, inclusive")
@click.option("--k", type=int, help="at most k results")
@click.pass_context
def query(
    ctx,
    image,
    server_url,
    do_protect,
    mode,
    target_label,
    strength,
    eps,
    steps,
    method,
    variant,
    margin,
    private,
    radius,
    k,
) -> None:
    """Query a server with IMAGE; with --protect only a protected version leaves this machine."""
    from privacy.client import query as run_query
    from retrieval.core.imaging import load_image, to_tensor

    cfg = _privacy_config(ctx, strength, eps, steps, method, variant, margin)
    pixels = guard(lambda: to_tensor(load_image(image)))
    private_px = guard(lambda: to_tensor(load_image(private))) if private else None
    click.echo(
        "protecting locally; only the protected image will be sent"
        if do_protect
        else "sending the image as it is (no protection)"
    )
    answer, p = guard(
        run_query,
        pixels,
        server_url,
        cfg.privacy if do_protect else None,
        cache_dir=cfg.work_dir / "client-cache",
        mode=mode,
        target_label=target_label,
        private=private_px,
        radius=radius,
        k=k,
        device=cfg.model.device,
    )
    if p is not None:
        click.echo(
            f"protected ({mode}): {p.iterations} iterations, Hamming to target {p.distance}, "
            f"PSNR {p.psnr:.1f} dB, L_inf {p.linf * 255:.1f}/255"
        )
    click.echo(f"code {answer['code']}: {answer['count']} results within radius {answer['radius']}")
    for r in answer["results"][:20]:
        click.echo(f"  id {r['id']:>7}  distance {r['distance']:>2}  {', '.join(r['labels'])}")


@main.command()
@click.option("--server", "server_url", required=True, help="the search server, e.g. http://127.0.0.1:5000")
@click.option("--port", type=int, default=5001, show_default=True, help="local port of the client app")
@click.pass_context
def client(ctx, server_url: str, port: int) -> None:
    """The privacy client as a local web app (localhost only): protect, then send only the protected image."""
    import waitress

    from webui.client import create_client_app

    cfg = config_of(ctx)
    app = guard(create_client_app, server_url, cfg)
    click.echo(f"hashveil privacy client on http://127.0.0.1:{port}/ for {server_url}  (Ctrl+C stops it)")
    waitress.serve(app, host="127.0.0.1", port=port, threads=4)


@main.command()
@click.option("--server", "server_url", help="read the query log from this server's admin API")
@click.option("--token", envvar="HASHVEIL_ADMIN_TOKEN", help="admin token (or HASHVEIL_ADMIN_TOKEN)")
@click.option("--db-url", help="read the query log from this database (default: the config's)")
@click.option("--limit", type=int, default=100, show_default=True, help="newest N logged queries")
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(exists=True, dir_okay=False),
    help="true labels per query id (JSON or CSV id,labels), for the leakage score",
)
@click.option("--original", type=click.Path(exists=True, dir_okay=False), help="your original image")
@click.option("--sent", type=click.Path(exists=True, dir_okay=False), help="the image you sent instead")
@click.option("--radius", type=int, help="attacker's radius (default: as logged / server.radius)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the report as JSON")
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="write an HTML report with thumbnails"
)
@click.pass_context
def audit(
    ctx, server_url, token, db_url, limit, labels_file, original, sent, radius, json_out, html_out
) -> None:
    """What an attacker holding the server's query log learns (or compare --original with --sent)."""
    from audit import logs, replay, report, report_html
    from retrieval.core.imaging import load_image, to_tensor
    from retrieval.service.search import open_searcher

    cfg = config_of(ctx)
    searcher = guard(open_searcher, cfg)
    if bool(original) != bool(sent):
        raise click.UsageError("--original and --sent go together")
    if original:
        o, s = (guard(lambda p: to_tensor(load_image(p)), p) for p in (original, sent))
        result = guard(replay.audit_pair, None, searcher, o, s, radius=radius or cfg.server.radius, k=10)
        html = lambda: report_html.pair_html(result, searcher, o, s)
    else:
        if server_url and not token:
            raise click.UsageError("--server needs --token (or HASHVEIL_ADMIN_TOKEN)")
        rows = (
            guard(logs.read_log_http, server_url, token, limit=limit)
            if server_url
            else guard(logs.read_log_store, db_url or cfg.db_url, limit=limit)
        )
        truth = guard(logs.read_true_labels, labels_file) if labels_file else None
        result = guard(replay.audit_log, searcher, rows, radius=radius, true_labels=truth)
        html = lambda: report_html.log_html(result, searcher, rows)
    click.echo(report.format_summary(result))
    if json_out:
        Path(json_out).write_text(report.to_json(result))
    if html_out:
        Path(html_out).write_text(html())
        click.echo(f"HTML report: {html_out}")
