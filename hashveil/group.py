"""The `hashveil` command group and what every subcommand shares: config loading and error messages."""

from __future__ import annotations

import logging

import click
import requests

from retrieval.core.config import Config, load_config, override


def config_of(ctx: click.Context, **sections: dict) -> Config:
    """The group's config with a subcommand's flags laid over it (None = not given); bad values are usage errors."""
    cfg = ctx.obj["config"]
    try:
        return override(cfg, **sections)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e)) from None


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="configuration file (default: ./config.toml if there is one, else the built-in defaults)",
)
@click.option("--work-dir", type=click.Path(file_okay=False), help="override paths.work_dir")
@click.option("--device", help="override model.device: auto | cpu | cuda | cuda:N (every command)")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, work_dir: str | None, device: str | None, verbose: bool
) -> None:
    """hashveil: image hash retrieval with a privacy layer on the user's side."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg = load_config(config_path)
        cfg = override(cfg, paths={"work_dir": work_dir}, model={"device": device})
    except (OSError, ValueError, TypeError) as e:
        raise click.ClickException(str(e)) from None
    ctx.obj = {"config": cfg}


def metrics_text(card) -> str:
    """A model card's metrics on one line, e.g. "map@all 0.9098, map@all_untrained 0.2449"."""
    return ", ".join(f"{k} {v:.4f}" for k, v in card.metrics.items())


def ca_bundle_option(f):
    """``--ca-bundle FILE``: for the commands that talk to an https:// server as its user."""
    return click.option(
        "--ca-bundle",
        type=click.Path(exists=True, dir_okay=False),
        help="CA certificates (PEM) to check an https:// server's certificate against (client.ca_bundle)",
    )(f)


def guard(fn, *args, **kw):
    """Run a library call, turning the errors users can fix into a one-line message."""
    try:
        return fn(*args, **kw)
    except (FileNotFoundError, ValueError, TypeError, ConnectionError) as e:  # not a traceback
        raise click.ClickException(str(e)) from None
    except requests.RequestException as e:  # refused, timed out, an untrusted TLS certificate
        raise click.ClickException(f"cannot reach the server: {e}") from None


@main.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the effective configuration (file or built-in defaults, plus global flags) as TOML."""
    from retrieval.core.config import to_toml

    click.echo(to_toml(ctx.obj["config"]), nl=False)
