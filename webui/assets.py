"""The templates and static files shared by the service's pages and the privacy client."""

from __future__ import annotations

from flask import Blueprint, Flask

assets = Blueprint(
    "webui_assets",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/ui/static",
)


def register_assets(app: Flask) -> None:
    """Serve webui's templates and static files from ``app`` (once, however often it is called)."""
    if assets.name not in app.blueprints:
        app.register_blueprint(assets)
