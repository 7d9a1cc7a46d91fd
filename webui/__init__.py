"""hashveil's web pages: the service's search page and attacker's view, and the user's privacy client.

Two sides, kept apart as in the rest of hashveil:

- :func:`mount_service_pages` adds the service's HTML pages to the app of
  ``retrieval.server.create_app`` (the JSON API's app), for ``hashveil serve``.
- :func:`create_client_app` builds the user's own local app that protects images on the user's
  machine and sends only the protected image to a server, for ``hashveil client --server URL``.

Pages are Jinja templates with plain JavaScript (no build step); every computation is a call to
the library (retrieval, privacy), never torch code here.
"""

from webui.client import create_client_app
from webui.service import mount_service_pages

__all__ = ["create_client_app", "mount_service_pages"]
