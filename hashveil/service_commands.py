"""The service provider's verbs: train, build-index, serve, prune-log, search, demo (add / remove:
collection_commands.py)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from hashveil.group import config_of, guard, main, metrics_text
from retrieval.core.config import Config, ServerConfig

if TYPE_CHECKING:
    from retrieval.service.manifest import Manifest


def model_options(f):
    for opt in (
        click.option("--backbone", help="model.backbone"),
        click.option("--bits", "hash_bits", type=int, help="model.hash_bits"),
        click.option("--image-size", type=int, help="model.image_size"),
        click.option("--pretrained", help="model.pretrained: local torchvision state_dict"),
        click.option("--dataset", help="data.dataset"),
        click.option("--data-dir", help="data.data_dir"),
        click.option("--layout", help="data.layout of a folder: auto | csv | classes | flat"),
        click.option("--num-query", type=int, help="data.num_query (0: 10 %, at most 1,000)"),
        click.option("--num-train", type=int, help="data.num_train (0: the database, at most 20,000)"),
        click.option("--num-database", type=int, help="data.num_database (0: all the rest)"),
    ):
        f = opt(f)
    return f


def _model_sections(
    backbone=None,
    hash_bits=None,
    image_size=None,
    pretrained=None,
    dataset=None,
    data_dir=None,
    layout=None,
    num_query=None,
    num_train=None,
    num_database=None,
    **_,
) -> dict:
    return {
        "model": {
            "backbone": backbone,
            "hash_bits": hash_bits,
            "image_size": image_size,
            "pretrained": pretrained,
        },
        "data": {
            "dataset": dataset,
            "data_dir": data_dir,
            "layout": layout,
            "num_query": num_query,
            "num_train": num_train,
            "num_database": num_database,
        },
        "train": {},
    }


@main.command()
@model_options
@click.option("--epochs", type=int, help="train.epochs")
@click.pass_context
def train(ctx: click.Context, epochs: int | None, **kw) -> None:
    """Train the DPSH hashing model and print its MAP on the query split."""
    from index_builder.dpsh import train as run_train

    sections = _model_sections(**kw)
    sections["train"]["epochs"] = epochs
    cfg = config_of(ctx, **sections)
    result = guard(run_train, cfg)
    click.echo(f"trained {cfg.model.backbone} {cfg.model.hash_bits} bits: {metrics_text(result.card)}")


@main.command("build-index")
@model_options
@click.option("--kind", help="index.kind: flat | hash | multihash")
@click.option("--db-url", help="index.db_url (SQLAlchemy URL)")
@click.option("--no-cache", is_flag=True, help="hash every image through the whole model")
@click.option("--shard", help="hash only shard I of N (e.g. 2/4) into work_dir/index/shards")
@click.option("--merge", is_flag=True, help="merge the shard files into the index and store")
@click.pass_context
def build_index(
    ctx: click.Context,
    kind: str | None,
    db_url: str | None,
    no_cache: bool,
    shard: str | None,
    merge: bool,
    **kw,
) -> None:
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
    cfg = config_of(ctx, **sections)
    if shard is not None:
        index, count = guard(shards.parse_shard, shard)
        done = guard(shards.build_shard, cfg, index, count, use_cache=not no_cache)
        verb = "already complete, skipped" if done.skipped else f"hashed in {done.hash_seconds:.1f} s"
        click.echo(f"shard {index}/{count}: {done.images} images {verb} -> {done.path}")
        return
    if merge or guard(shards.shards_complete, cfg):
        result = guard(shards.merge_shards, cfg)
        m = result.manifest
        where = m.milvus_collection if m.index_backend == "milvus" else shards.shard_dir(cfg)
        click.echo(f"merged the shards in {where}")
        click.echo(f"indexed {result.images} images ({result.total_seconds:.1f} s) into {_index_of(cfg, m)}")
        return
    result = guard(run_build, cfg, use_cache=not no_cache)
    click.echo(
        f"indexed {result.images} images ({result.images_per_second:.0f} images/s hashing, "
        f"{result.total_seconds:.1f} s in all) into {_index_of(cfg, result.manifest)}"
    )


def _index_of(cfg: Config, m: Manifest) -> str:
    """Where a build put its index, for the closing line."""
    if m.index_backend == "milvus":
        return f"Milvus collection {m.milvus_collection} at {m.milvus_uri} (manifest in {cfg.work_dir / 'index'})"
    return str(cfg.work_dir / "index")


@main.command()
@click.option("--host", help="server.host")
@click.option("--port", type=int, help="server.port")
@click.option(
    "--threads", type=int, default=16, show_default=True, help="waitress worker threads (>= server.batch_max)"
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, threads: int) -> None:
    """Run the search server (waitress) on the built index."""
    cfg = config_of(ctx, server={"host": host, "port": port})
    _serve(cfg, threads)


def _serve(cfg: Config, threads: int = 16) -> None:
    import faiss
    import waitress

    from index_builder.update import recover
    from retrieval.service.server import create_app
    from webui.service import mount_service_pages

    done = guard(recover, cfg)  # an interrupted `hashveil add` / `remove`
    if done:
        click.echo(f"{done} in {cfg.work_dir / 'index'}")
    app = guard(create_app, cfg)
    mount_service_pages(app)
    faiss.omp_set_num_threads(1)  # one query per request thread: FAISS's own threads only contend
    click.echo(f"hashveil search server on http://{cfg.server.host}:{cfg.server.port}/  (Ctrl+C stops it)")
    click.echo(f"answering the host names {host_names(cfg.server)}")
    waitress.serve(app, **waitress_options(cfg, threads))


def host_names(server: ServerConfig) -> str:
    """server.allowed_hosts in words, for the start-up line."""
    from retrieval.websecurity import server_host_rule

    rule = server_host_rule(server.host, server.allowed_hosts)
    return ", ".join(rule.names) + (
        " and IP addresses (list the names you serve in server.allowed_hosts)" if rule.any_ip else ""
    )


def waitress_options(cfg: Config, threads: int = 16) -> dict:
    """waitress.serve's keywords for ``[server]``: where to listen, how much body to read (so that
    over-limit bodies get the app's JSON 413), and the proxy to trust."""
    from retrieval.service.server import wsgi_body_limit

    server = cfg.server
    options = {
        "host": server.host,
        "port": server.port,
        "threads": threads,
        "max_request_body_size": wsgi_body_limit(cfg),
    }
    if server.trusted_proxy:  # behind a TLS-terminating proxy: its scheme, host and client address
        options["trusted_proxy"] = server.trusted_proxy
        options["trusted_proxy_headers"] = {
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-for",
        }
        options["clear_untrusted_proxy_headers"] = True
    return options


@main.command("prune-log")
@click.option("--days", type=int, help="server.log_retention_days (0 deletes every row)")
@click.pass_context
def prune_log(ctx: click.Context, days: int | None) -> None:
    """Delete query-log rows older than the retention period (the server also does this hourly)."""
    from retrieval.service.querylog import QueryLog
    from retrieval.service.store import Store

    cfg = config_of(ctx, server={"log_retention_days": days})
    gone = guard(QueryLog(Store(cfg.db_url), cfg.server.log_retention_days).prune)
    click.echo(
        f"deleted {gone} query-log rows older than {cfg.server.log_retention_days} days from {cfg.db_url}"
    )


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--radius", type=int, help="Hamming threshold, inclusive (default server.radius)")
@click.option("--k", type=int, help="keep at most k nearest results")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def search(
    ctx: click.Context, images: tuple[str, ...], radius: int | None, k: int | None, as_json: bool
) -> None:
    """Search the local index with image files (no server needed)."""
    from retrieval.core.codes import to_hex
    from retrieval.core.imaging import load_image, to_tensor
    from retrieval.service.search import open_searcher

    cfg = config_of(ctx)
    searcher = guard(open_searcher, cfg)
    radius = cfg.server.radius if radius is None else radius
    out = []
    for path in images:
        x = guard(lambda p: to_tensor(load_image(p)), path).unsqueeze(0)
        codes, hits = guard(searcher.search_images, x, radius, k)
        out.append(
            {
                "image": path,
                "code": to_hex(codes[0]),
                "count": len(hits[0]),
                "results": [{"id": h.id, "distance": h.distance, "labels": list(h.labels)} for h in hits[0]],
            }
        )
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
    from index_builder.build import build_index as run_build
    from index_builder.build import index_is_current
    from index_builder.dpsh import checkpoint_matches
    from index_builder.dpsh import train as run_train

    cfg = config_of(ctx, server={"port": port})
    t0 = time.perf_counter()
    if checkpoint_matches(cfg):
        click.echo(f"reusing the trained model in {cfg.work_dir / 'model'}")
    else:
        result = guard(run_train, cfg)
        click.echo(f"trained: {metrics_text(result.card)}")
    if index_is_current(cfg):
        click.echo(f"reusing the index in {cfg.work_dir / 'index'}")
    else:
        built = guard(run_build, cfg)
        click.echo(f"indexed {built.images} images")
    click.echo(f"ready in {time.perf_counter() - t0:.0f} s")
    if not no_serve:
        _serve(cfg)
