"""The user's and the auditor's verbs: protect, query, audit (``client``: client_command.py; ``evaluate``:
evaluate_command.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hashveil.formats import encoding_of, file_check, format_options, kilobytes
from hashveil.group import ca_bundle_option, config_of, guard, main
from hashveil.ladder_command import ladder_options, run_ladder_cli
from hashveil.options import config_of_section, protection_options, trust_options
from retrieval.core.config import Config


def _protector(cfg: Config, server_url: str | None):
    """A Protector on the server's model (downloaded, sha256-checked) or on the local one."""
    from hashveil.local import local_protector
    from privacy.client import connect

    if server_url:
        return guard(
            connect,
            server_url,
            cfg.privacy,
            cfg.work_dir / "client-cache",
            cfg.model.device,
            verify=cfg.client.verify(),
        )
    protector = guard(
        local_protector, cfg.work_dir / "model", cfg.db_url, cfg.privacy, cfg.model.device, cfg.server.radius
    )
    return protector, None


def _seed_note(cfg: Config) -> str:
    seed = cfg.privacy.seed
    return (
        f"seed {seed}: targets and anchors repeat exactly (experiments only)"
        if seed >= 0
        else "targets and anchors drawn from fresh OS entropy"
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@protection_options
@trust_options
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="output folder (default: beside each input)"
)
@click.option("--server", "server_url", help="use this server's model and anchors (default: the local ones)")
@click.option("--overwrite", is_flag=True, help="protect again files that already have an output")
@format_options
@click.pass_context
def protect(ctx, inputs, out_dir, server_url, overwrite, fmt, quality, protection, trust) -> None:
    """Protect images (files or folders) before they go anywhere; writes NAME.protected.png (or --format)."""
    from privacy.batch import protect_files

    cfg = trust.apply(ctx, protection.apply(ctx))
    encoding = encoding_of(fmt, quality)
    protector, _ = _protector(cfg, server_url)
    click.echo(
        f"Outputs are {encoding.describe()} at the original resolution, EXIF orientation applied, and "
        f"ALL metadata (EXIF, GPS, ICC, text) removed; {_seed_note(cfg)}."
    )
    done = skipped = failed = 0
    for outcome in guard(
        lambda: list(
            protect_files(
                protector,
                list(inputs),
                mode=protection.mode,
                out_dir=Path(out_dir) if out_dir else None,
                target_label=protection.target_label,
                private=Path(protection.private) if protection.private else None,
                overwrite=overwrite,
                encoding=encoding,
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
            size = f"{kilobytes(outcome.input_bytes)}) -> {outcome.output} ({kilobytes(len(outcome.encoded.data))}"
            click.echo(
                f"{outcome.source} ({size}): {_protected_line(outcome.protected)}; {file_check(outcome.encoded)}"
            )
    click.echo(f"{done} protected, {skipped} skipped, {failed} failed")
    if failed:
        ctx.exit(1)


def _protected_line(p) -> str:
    line = (
        f"{p.iterations} iterations, Hamming to target {p.distance}, PSNR {p.psnr:.1f} dB, "
        f"L_inf {p.linf * 255:.1f}/255" + (f", target label {p.target_label}" if p.target_label else "")
    )
    if p.holds is not None:
        held = [name for name, ok in p.holds.items() if ok]
        lost = [name for name, ok in p.holds.items() if not ok]
        line += f"; holds after {', '.join(held) or 'none of the checks'}"
        line += f", NOT after {', '.join(lost)} (raise --steps or --eps)" if lost else ""
    return line


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--server", "server_url", required=True, help="search server URL, e.g. http://127.0.0.1:5000")
@click.option(
    "--protect", "do_protect", is_flag=True, help="protect locally and send only the protected image"
)
@protection_options
@trust_options
@click.option(
    "--decoys",
    type=click.IntRange(min=1),
    help="send K uploads, all carriers cut from the decoy photos: one retrieves IMAGE's results (IMAGE is "
    "never sent), K-1 point at other labels; shows only IMAGE's results (implies --protect)",
)
@click.option(
    "--decoy-dir",
    type=click.Path(exists=True, file_okay=False),
    help="photos the carriers are cut from (privacy.decoy_dir; default: photos bundled with installed packages)",
)
@click.option("--radius", type=int, help="Hamming threshold, inclusive")
@click.option("--k", type=int, help="at most k results")
@format_options
@click.pass_context
def query(
    ctx, image, server_url, do_protect, decoys, decoy_dir, radius, k, fmt, quality, protection, trust
) -> None:
    """Query a server with IMAGE; with --protect only a protected version leaves this machine."""
    from privacy.send import QueryOptions
    from retrieval.core.imaging import load_image, to_tensor
    from retrieval.core.votes import majority_of

    cfg = trust.apply(ctx, protection.apply(ctx))
    encoding = encoding_of(fmt, quality)
    pixels = guard(lambda: to_tensor(load_image(image)))
    mode = "carrier" if decoys else protection.mode
    opts = QueryOptions(mode, protection.target_label, radius, k, cfg.model.device, cfg.client.verify())
    if decoys:
        _check_decoy_flags(ctx, protection)
        cfg = config_of_section(ctx, cfg, decoy_dir=decoy_dir)
        sent = _query_decoys(cfg, pixels, server_url, encoding, opts, decoys)
    else:
        sent = _query_one(cfg, pixels, server_url, encoding, opts, protection.private, do_protect)
    p, answer = sent.protected, sent.answer
    if p is not None:
        mode = "carrier" if decoys else protection.mode
        click.echo(f"protected ({mode}): {_protected_line(p)}; {file_check(sent.encoded)}")
    click.echo(
        f"sent {kilobytes(len(sent.data))} ({encoding.describe()}; the file was {kilobytes(Path(image).stat().st_size)})"
    )
    click.echo(f"code {answer['code']}: {answer['count']} results within radius {answer['radius']}")
    votes = answer.get("label_votes", {})
    if votes:
        label = majority_of(votes)
        click.echo(f"the label the server would infer: {label} ({votes[label]} of {answer['count']} items)")
    if sent.server_agrees is False:
        click.echo(
            f"WARNING: the server's code differs from {sent.encoded.summary()['file_code']}, computed here from the same file"
        )
    for r in answer["results"][:20]:
        click.echo(f"  id {r['id']:>7}  distance {r['distance']:>2}  {', '.join(r['labels'])}")


def _query_one(cfg: Config, pixels, server_url, encoding, opts, private: str | None, do_protect: bool):
    """One upload: IMAGE as it is, or protected in the chosen mode."""
    from privacy.send import query_encoded
    from retrieval.core.imaging import load_image, to_tensor

    private_px = guard(lambda: to_tensor(load_image(private))) if private else None
    click.echo(
        f"protecting locally ({_seed_note(cfg)}); only the protected image will be sent"
        if do_protect
        else "sending the image as it is (no protection)"
    )
    privacy = cfg.privacy if do_protect else None
    cache = cfg.work_dir / "client-cache"
    return guard(query_encoded, pixels, server_url, privacy, encoding, cache, opts, private_px)


def _check_decoy_flags(ctx: click.Context, protection) -> None:
    from click.core import ParameterSource

    explicit_mode = ctx.get_parameter_source("mode") == ParameterSource.COMMANDLINE
    if protection.private or protection.target_label or (explicit_mode and protection.mode != "carrier"):
        raise click.UsageError(
            "--decoys sends carriers cut from the decoy photos, pushed to IMAGE's code: "
            "it takes no --private, --target-label or --mode other than carrier"
        )


def _query_decoys(cfg: Config, pixels, server_url: str, encoding, opts, decoys: int):
    """K carrier uploads in random order, one for IMAGE's results and K-1 decoys (privacy.decoys)."""
    from privacy.decoys import decoy_photos
    from privacy.send import query_decoys

    photos = guard(decoy_photos, cfg.privacy.decoy_dir)
    click.echo(
        f"protecting {decoys} carriers locally ({_seed_note(cfg)}): one retrieves what IMAGE would (IMAGE is "
        f"never sent), {decoys - 1} are decoys; carriers cut from {len(photos)} decoy photo(s)"
    )
    cache = cfg.work_dir / "client-cache"
    sent = guard(query_decoys, pixels, server_url, cfg.privacy, encoding, cache, opts, decoys, photos)
    labels = ", ".join(str(label) for label in sent.decoys) or "none"
    click.echo(
        f"sent {decoys} uploads in random order (decoys pointing at: {labels}); IMAGE's results follow"
    )
    return sent


@main.command()
@click.option("--server", "server_url", help="read the query log from this server's admin API")
@click.option("--token", envvar="HASHVEIL_ADMIN_TOKEN", help="admin token (or HASHVEIL_ADMIN_TOKEN)")
@ca_bundle_option
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
@ladder_options
@click.pass_context
def audit(
    ctx,
    server_url,
    token,
    ca_bundle,
    db_url,
    limit,
    labels_file,
    original,
    sent,
    radius,
    json_out,
    html_out,
    ladder,
) -> None:
    """What an attacker holding the server's query log learns (or compare --original with --sent)."""
    from audit import logs, replay, report, report_html
    from retrieval.core.imaging import load_image, to_tensor
    from retrieval.service.search import open_searcher

    cfg = config_of(ctx, client={"ca_bundle": ca_bundle})
    searcher = guard(open_searcher, cfg)
    if bool(original) != bool(sent):
        raise click.UsageError("--original and --sent go together")
    if original and ladder.attackers:
        raise click.UsageError("--attackers reads a query log; it does not combine with --original/--sent")
    if original:
        o, s = (guard(lambda p: to_tensor(load_image(p)), p) for p in (original, sent))
        result = guard(replay.audit_pair, None, searcher, o, s, radius=radius or cfg.server.radius, k=10)
        html = lambda: report_html.pair_html(result, searcher, o, s)
    else:
        if server_url and not token:
            raise click.UsageError("--server needs --token (or HASHVEIL_ADMIN_TOKEN)")
        rows = (
            guard(logs.read_log_http, server_url, token, limit=limit, verify=cfg.client.verify())
            if server_url
            else guard(logs.read_log_store, db_url or cfg.db_url, limit=limit)
        )
        truth = guard(logs.read_true_labels, labels_file) if labels_file else None
        result = guard(replay.audit_log, searcher, rows, radius=radius, true_labels=truth)
        html = lambda: report_html.log_html(result, searcher, rows)
    click.echo(report.format_summary(result))
    ladder_json = None
    if ladder.attackers and not original:
        ladder_json = run_ladder_cli(ctx, cfg, searcher, rows, truth, ladder, radius)
    if json_out:
        Path(json_out).write_text(
            report.to_json(result)
            if ladder_json is None
            else json.dumps({"audit": json.loads(report.to_json(result)), "ladder": ladder_json}, indent=2)
        )
    if html_out:
        Path(html_out).write_text(html())
        click.echo(f"HTML report: {html_out}")
