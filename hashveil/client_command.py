"""`hashveil client`: the user's privacy client as a local web app, reachable only with its launch URL."""

from __future__ import annotations

import click

from hashveil.group import config_of, guard, main
from hashveil.options import trust_options


@main.command()
@click.option("--server", "server_url", required=True, help="the search server, e.g. http://127.0.0.1:5000")
@click.option("--port", type=int, help="local port of the client app (client.port, default 5001; 0 = any)")
@trust_options
@click.pass_context
def client(ctx, server_url: str, port: int | None, trust) -> None:
    """The privacy client as a local web app (localhost only): protect, then send only the protected image.

    It prints the URL to open, with a token that is new at every launch: the client answers only
    the browser that shows it (other users of this machine reach 127.0.0.1 too).
    """
    from waitress.server import create_server

    from webui.client import create_client_app
    from webui.launch import launch_url

    cfg = trust.apply(ctx, config_of(ctx, client={"port": port}))
    app = guard(create_client_app, server_url, cfg)
    try:
        server = create_server(app, host="127.0.0.1", port=cfg.client.port, threads=4)
    except OSError as e:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{cfg.client.port}: {e}") from None
    click.echo(
        f"hashveil privacy client for {server_url}. Open this URL in your browser (Ctrl+C stops it):\n\n"
        f"    {launch_url(app, server.effective_port)}\n\n"
        "The token in it is this launch's key: the client refuses requests without it.",
    )
    server.run()  # until Ctrl+C
