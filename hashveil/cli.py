"""The `hashveil` command: one verb per pipeline stage, each a thin shell over a Python function."""

from __future__ import annotations

import json
import logging
import sys
import time

from pathlib import Path

import click

from retrieval.config import Config, load_config, override

log = logging.getLogger("hashveil")


def _load(ctx: click.Context, **sections: dict) -> Config:
    cfg = ctx.obj["config"]
    try:
        return override(cfg, **sections)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e)) from None


@click.group()
@click.option("--config", "config_path", default="config.toml", show_default=True,
              type=click.Path(dir_okay=False), help="configuration file")
@click.option("--work-dir", type=click.Path(file_okay=False), help="override paths.work_dir")
@click.option("--device", help="override model.device: auto | cpu | cuda | cuda:N (every command)")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def main(ctx: click.Context, config_path: str, work_dir: str | None, device: str | None, verbose: bool) -> None:
    """hashveil: image hash retrieval with a privacy layer on the user's side."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(config_path)
        cfg = override(cfg, paths={"work_dir": work_dir}, model={"device": device})
    except (OSError, ValueError, TypeError) as e:
        raise click.ClickException(str(e)) from None
    ctx.obj = {"config": cfg}


def model_options(f):
    for opt in (
        click.option("--backbone", help="model.backbone"),
        click.option("--bits", "hash_bits", type=int, help="model.hash_bits"),
        click.option("--image-size", type=int, help="model.image_size"),
        click.option("--pretrained", help="model.pretrained: local torchvision state_dict"),
        click.option("--dataset", help="data.dataset"),
        click.option("--data-dir", help="data.data_dir"),
    ):
        f = opt(f)
    return f


def _model_sections(backbone=None, hash_bits=None, image_size=None, pretrained=None, dataset=None,
                    data_dir=None, **_) -> dict:
    return {"model": {"backbone": backbone, "hash_bits": hash_bits, "image_size": image_size,
                      "pretrained": pretrained},
            "data": {"dataset": dataset, "data_dir": data_dir}, "train": {}}


@main.command()
@model_options
@click.option("--epochs", type=int, help="train.epochs")
@click.pass_context
def train(ctx: click.Context, epochs: int | None, **kw) -> None:
    """Train the DPSH hashing model and print its MAP on the query split."""
    from index_builder.dpsh import train as run_train

    sections = _model_sections(**kw)
    sections["train"]["epochs"] = epochs
    cfg = _load(ctx, **sections)
    result = _guard(run_train, cfg)
    click.echo(f"trained {cfg.model.backbone} {cfg.model.hash_bits} bits: {_metrics(result.card)}")


@main.command("build-index")
@model_options
@click.option("--kind", help="index.kind: flat | hash | multihash")
@click.option("--db-url", help="index.db_url (SQLAlchemy URL)")
@click.option("--no-cache", is_flag=True, help="hash every image through the whole model")
@click.option("--shard", help="hash only shard I of N (e.g. 2/4) into work_dir/index/shards")
@click.option("--merge", is_flag=True, help="merge the shard files into the index and store")
@click.pass_context
def build_index(ctx: click.Context, kind: str | None, db_url: str | None, no_cache: bool,
                shard: str | None, merge: bool, **kw) -> None:
    """Hash the database split into the FAISS index and the metadata store.

    With --shard I/N, hash one contiguous id range only (resumable; on any machine), then
    --merge the shard files. A plain run merges by itself when a complete shard set is there.
    """
    from index_builder import shards
    from index_builder.build import build_index as run_build

    if shard is not None and merge:
        raise click.BadParameter("--shard and --merge exclude each other")
    sections = _model_sections(**kw)
    sections["index"] = {"kind": kind, "db_url": db_url}
    cfg = _load(ctx, **sections)
    if shard is not None:
        index, count = _guard(shards.parse_shard, shard)
        done = _guard(shards.build_shard, cfg, index, count, use_cache=not no_cache)
        verb = "already complete, skipped" if done.skipped else f"hashed in {done.hash_seconds:.1f} s"
        click.echo(f"shard {index}/{count}: {done.images} images {verb} -> {done.path}")
        return
    if merge or shards.shards_complete(cfg):
        result = _guard(shards.merge_shards, cfg)
        click.echo(f"merged the shards in {shards.shard_dir(cfg)}")
    else:
        result = _guard(run_build, cfg, use_cache=not no_cache)
    click.echo(f"indexed {result.images} images ({result.images_per_second:.0f} images/s hashing, "
               f"{result.total_seconds:.1f} s in all) into {cfg.work_dir / 'index'}")


@main.command()
@click.option("--host", help="server.host")
@click.option("--port", type=int, help="server.port")
@click.option("--threads", type=int, default=8, show_default=True, help="waitress worker threads")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, threads: int) -> None:
    """Run the search server (waitress) on the built index."""
    cfg = _load(ctx, server={"host": host, "port": port})
    _serve(cfg, threads)


def _serve(cfg: Config, threads: int = 8) -> None:
    import faiss
    import waitress

    from retrieval.server import create_app

    from webui import mount_service_pages

    app = _guard(create_app, cfg)
    mount_service_pages(app)
    faiss.omp_set_num_threads(1)  # one query per request thread: FAISS's own threads only contend
    click.echo(f"hashveil search server on http://{cfg.server.host}:{cfg.server.port}/  (Ctrl+C stops it)")
    waitress.serve(app, host=cfg.server.host, port=cfg.server.port, threads=threads,
                   max_request_body_size=int(cfg.server.max_upload_mb * 2**20) + 65536)


@main.command("prune-log")
@click.option("--days", type=int, help="server.log_retention_days (0 deletes every row)")
@click.pass_context
def prune_log(ctx: click.Context, days: int | None) -> None:
    """Delete query-log rows older than the retention period (the server also does this hourly)."""
    from retrieval.querylog import QueryLog
    from retrieval.store import Store

    cfg = _load(ctx, server={"log_retention_days": days})
    gone = _guard(QueryLog(Store(cfg.db_url), cfg.server.log_retention_days).prune)
    click.echo(f"deleted {gone} query-log rows older than {cfg.server.log_retention_days} days from {cfg.db_url}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--radius", type=int, help="Hamming threshold, inclusive (default server.radius)")
@click.option("--k", type=int, help="keep at most k nearest results")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def search(ctx: click.Context, images: tuple[str, ...], radius: int | None, k: int | None,
           as_json: bool) -> None:
    """Search the local index with image files (no server needed)."""
    from retrieval.codes import to_hex
    from retrieval.imaging import load_image, to_tensor
    from retrieval.search import open_searcher

    cfg = _load(ctx)
    searcher = _guard(open_searcher, cfg)
    radius = cfg.server.radius if radius is None else radius
    out = []
    for path in images:
        x = _guard(lambda p: to_tensor(load_image(p)), path).unsqueeze(0)
        codes, hits = _guard(searcher.search_images, x, radius, k)
        out.append({"image": path, "code": to_hex(codes[0]), "count": len(hits[0]),
                    "results": [{"id": h.id, "distance": h.distance, "labels": list(h.labels)}
                                for h in hits[0]]})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for item in out:
        click.echo(f"{item['image']}: code {item['code']}, {item['count']} results within radius {radius}")
        for r in item["results"][:20]:
            click.echo(f"  id {r['id']:>7}  distance {r['distance']:>2}  {', '.join(r['labels'])}")


@main.command()
@click.option("--port", type=int, help="server.port")
@click.option("--no-serve", is_flag=True, help="stop after training and indexing")
@click.pass_context
def demo(ctx: click.Context, port: int | None, no_serve: bool) -> None:
    """Train (unless a matching checkpoint exists), build the index (unless current), serve."""
    from index_builder.build import build_index as run_build, index_is_current
    from index_builder.dpsh import checkpoint_matches, train as run_train

    cfg = _load(ctx, server={"port": port})
    t0 = time.perf_counter()
    if checkpoint_matches(cfg):
        click.echo(f"reusing the trained model in {cfg.work_dir / 'model'}")
    else:
        result = _guard(run_train, cfg)
        click.echo(f"trained: {_metrics(result.card)}")
    if index_is_current(cfg):
        click.echo(f"reusing the index in {cfg.work_dir / 'index'}")
    else:
        built = _guard(run_build, cfg)
        click.echo(f"indexed {built.images} images")
    click.echo(f"ready in {time.perf_counter() - t0:.0f} s")
    if not no_serve:
        _serve(cfg)


def protection_options(f):
    for opt in (
        click.option("--mode", type=click.Choice(["semantic", "carrier", "untargeted"]), default="semantic",
                     show_default=True, help="what to hide (see README)"),
        click.option("--target-label", help="semantic mode: the label to point at (default: random other)"),
        click.option("--strength", type=click.Choice(["low", "mid", "high"]), help="preset for --eps/--steps"),
        click.option("--eps", type=float, help="L_inf budget in pixels [0, 1] (privacy.eps)"),
        click.option("--steps", type=int, help="most PGD steps (privacy.steps)"),
        click.option("--method", type=click.Choice(["rnm", "tanh", "noise"]), help="privacy.method"),
        click.option("--variant", type=click.Choice(["margin", "proximal", "literal"]),
                     help="privacy.rnm_variant (literal = the paper's eq. 12 as written)"),
        click.option("--margin", type=float, help="privacy.margin: keep bits this far past 0"),
        click.option("--private", type=click.Path(exists=True, dir_okay=False),
                     help="carrier mode: the private image whose results the carrier should retrieve"),
    ):
        f = opt(f)
    return f


def _privacy_config(ctx: click.Context, strength, eps, steps, method, variant, margin) -> Config:
    from privacy.client import apply_strength

    cfg = _load(ctx)
    try:
        preset = apply_strength(cfg.privacy, strength)  # flags given explicitly win over the preset
        return override(cfg, privacy={"eps": eps if eps is not None else preset.eps,
                                      "steps": steps if steps is not None else preset.steps,
                                      "method": method, "rnm_variant": variant, "margin": margin})
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e)) from None


def _protector(cfg: Config, server_url: str | None):
    """A Protector on the server's model (downloaded, sha256-checked) or on the local one."""
    from privacy.client import connect, local_protector

    if server_url:
        return _guard(connect, server_url, cfg.privacy, cfg.work_dir / "client-cache", cfg.model.device)
    return _guard(local_protector, cfg.work_dir / "model", cfg.db_url, cfg.privacy, cfg.model.device), None


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@protection_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="output folder (default: beside each input)")
@click.option("--server", "server_url", help="use this server's model and anchors (default: the local ones)")
@click.option("--overwrite", is_flag=True, help="protect again files that already have an output")
@click.pass_context
def protect(ctx, inputs, mode, target_label, strength, eps, steps, method, variant, margin, private,
            out_dir, server_url, overwrite) -> None:
    """Protect images (files or folders) before they go anywhere; writes NAME.protected.png."""
    from privacy.batch import protect_files

    cfg = _privacy_config(ctx, strength, eps, steps, method, variant, margin)
    protector, _ = _protector(cfg, server_url)
    click.echo("Outputs are PNG at the original resolution, EXIF orientation applied, and ALL metadata "
               "(EXIF, GPS, ICC, text) removed.")
    done = skipped = failed = 0
    for outcome in _guard(lambda: list(protect_files(
            protector, list(inputs), mode=mode, out_dir=Path(out_dir) if out_dir else None,
            target_label=target_label, private=Path(private) if private else None, overwrite=overwrite))):
        if outcome.error:
            failed += 1
            click.echo(f"FAILED {outcome.source}: {outcome.error}", err=True)
        elif outcome.protected is None:
            skipped += 1
            click.echo(f"skipped {outcome.source}: {outcome.output} exists (--overwrite redoes it)")
        else:
            done += 1
            p = outcome.protected
            click.echo(f"{outcome.source} -> {outcome.output}: {p.iterations} iterations, Hamming to target "
                       f"{p.distance}, PSNR {p.psnr:.1f} dB, L_inf {p.linf * 255:.1f}/255"
                       + (f", target label {p.target_label}" if p.target_label else ""))
    click.echo(f"{done} protected, {skipped} skipped, {failed} failed")
    if failed:
        ctx.exit(1)


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--server", "server_url", required=True, help="search server URL, e.g. http://127.0.0.1:5000")
@click.option("--protect", "do_protect", is_flag=True, help="protect locally and send only the protected image")
@protection_options
@click.option("--radius", type=int, help="Hamming threshold, inclusive")
@click.option("--k", type=int, help="at most k results")
@click.pass_context
def query(ctx, image, server_url, do_protect, mode, target_label, strength, eps, steps, method, variant,
          margin, private, radius, k) -> None:
    """Query a server with IMAGE; with --protect only a protected version leaves this machine."""
    from privacy.client import query as run_query
    from retrieval.imaging import load_image, to_tensor

    cfg = _privacy_config(ctx, strength, eps, steps, method, variant, margin)
    pixels = _guard(lambda: to_tensor(load_image(image)))
    private_px = _guard(lambda: to_tensor(load_image(private))) if private else None
    click.echo("protecting locally; only the protected image will be sent" if do_protect
               else "sending the image as it is (no protection)")
    answer, p = _guard(run_query, pixels, server_url, cfg.privacy if do_protect else None,
                       cache_dir=cfg.work_dir / "client-cache", mode=mode, target_label=target_label,
                       private=private_px, radius=radius, k=k, device=cfg.model.device)
    if p is not None:
        click.echo(f"protected ({mode}): {p.iterations} iterations, Hamming to target {p.distance}, "
                   f"PSNR {p.psnr:.1f} dB, L_inf {p.linf * 255:.1f}/255")
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

    from webui import create_client_app

    cfg = _load(ctx)
    app = _guard(create_client_app, server_url, cfg)
    click.echo(f"hashveil privacy client on http://127.0.0.1:{port}/ for {server_url}  (Ctrl+C stops it)")
    waitress.serve(app, host="127.0.0.1", port=port, threads=4)


@main.command()
@click.option("--quick", is_flag=True, help="a small profile (few queries and steps) that runs in seconds")
@click.option("--experiment", "names", multiple=True,
              type=click.Choice(["table1", "table2", "table3", "figure2", "figure3", "figure4"]),
              help="run only these (repeatable); default: all")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="results folder (default work_dir/results)")
@click.option("--queries", type=int, help="query sample size (default 500; --quick: 8)")
@click.option("--bits", type=int, multiple=True, help="bit lengths for table1/figure2 (repeatable)")
@click.option("--tanh-steps", type=int, help="Tanh iterations (default 2000, the paper's)")
@click.option("--rnm-steps", type=int, help="RNM iterations (default privacy.steps)")
@click.pass_context
def evaluate(ctx, quick, names, out_dir, queries, bits, tanh_steps, rnm_steps) -> None:
    """Reproduce the paper's tables and figures on the configured dataset and model."""
    import dataclasses

    from privacy.evaluation import EvalOptions, run_all

    cfg = _load(ctx)
    opts = EvalOptions.quick_profile() if quick else EvalOptions()
    changes = {"queries": queries, "bits": tuple(bits) or None, "tanh_steps": tanh_steps, "rnm_steps": rnm_steps}
    opts = _guard(dataclasses.replace, opts, **{k: v for k, v in changes.items() if v is not None})
    out = Path(out_dir) if out_dir else cfg.work_dir / "results"
    report = _guard(run_all, cfg, out, opts, names=list(names) or None)
    click.echo(f"results in {out} ({report})")


@main.command()
@click.option("--server", "server_url", help="read the query log from this server's admin API")
@click.option("--token", envvar="HASHVEIL_ADMIN_TOKEN", help="admin token (or HASHVEIL_ADMIN_TOKEN)")
@click.option("--db-url", help="read the query log from this database (default: the config's)")
@click.option("--limit", type=int, default=100, show_default=True, help="newest N logged queries")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False),
              help="true labels per query id (JSON or CSV id,labels), for the leakage score")
@click.option("--original", type=click.Path(exists=True, dir_okay=False), help="your original image")
@click.option("--sent", type=click.Path(exists=True, dir_okay=False), help="the image you sent instead")
@click.option("--radius", type=int, help="attacker's radius (default: as logged / server.radius)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the report as JSON")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="write an HTML report with thumbnails")
@click.pass_context
def audit(ctx, server_url, token, db_url, limit, labels_file, original, sent, radius, json_out, html_out) -> None:
    """What an attacker holding the server's query log learns (or compare --original with --sent)."""
    from privacy import audit as au, audit_html
    from retrieval.imaging import load_image, to_tensor
    from retrieval.search import open_searcher

    cfg = _load(ctx)
    searcher = _guard(open_searcher, cfg)
    if bool(original) != bool(sent):
        raise click.UsageError("--original and --sent go together")
    if original:
        o, s = (_guard(lambda p: to_tensor(load_image(p)), p) for p in (original, sent))
        result = _guard(au.audit_pair, None, searcher, o, s, radius=radius or cfg.server.radius, k=10)
        html = (lambda: audit_html.pair_html(result, searcher, o, s))
    else:
        if server_url and not token:
            raise click.UsageError("--server needs --token (or HASHVEIL_ADMIN_TOKEN)")
        rows = (_guard(au.read_log_http, server_url, token, limit=limit) if server_url
                else _guard(au.read_log_store, db_url or cfg.db_url, limit=limit))
        truth = _guard(au.read_true_labels, labels_file) if labels_file else None
        result = _guard(au.audit_log, searcher, rows, radius=radius, true_labels=truth)
        html = (lambda: audit_html.log_html(result, searcher, rows))
    click.echo(au.format_summary(result))
    if json_out:
        Path(json_out).write_text(au.to_json(result))
    if html_out:
        Path(html_out).write_text(html())
        click.echo(f"HTML report: {html_out}")


def _metrics(card) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in card.metrics.items())


def _guard(fn, *args, **kw):
    """Run a library call, turning the errors users can fix into a one-line message."""
    try:
        return fn(*args, **kw)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
