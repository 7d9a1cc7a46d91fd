"""hashveil's web pages, two sides kept apart as in the rest of hashveil:

- ``webui.service.mount_service_pages`` adds the service's HTML pages (search, the attacker's
  view) to the app of ``retrieval.service.server.create_app``, for ``hashveil serve``;
- ``webui.client.create_client_app`` builds the user's own local app that protects images on the
  user's machine and sends only the protected image to a server, for ``hashveil client``. It
  never imports the service's code.

Pages are Jinja templates with plain JavaScript (no build step); every computation is a call to
the library, never torch code here. Both apps get ``retrieval.websecurity``'s Host allowlist and
headers (a CSP with no inline script or style: put both in ``static/``); the client also refuses
every request without its per-launch token (``webui.launch``).
"""
