"""The OpenAPI description against a real server: schemathesis generates valid and invalid
requests for every operation, admin routes included, and every answer must conform to the
description (status code, content type, headers, body schema) with no 5xx.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import requests
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from retrieval.core.config import override
from retrieval.service.server import api, create_app
from testkit.servers import live_server
from testkit.service import build_tiny_service

TOKEN = "openapi-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 12  # per operation and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    cfg = override(build_tiny_service(tmp_path_factory.mktemp("openapi")), server={"admin_token": TOKEN})
    with live_server(create_app(cfg)) as url:
        png = (cfg.work_dir / "images" / "000.png").read_bytes()
        # one logged upload, so that the admin routes have a row to show
        requests.post(url + "/api/search", files={"image": ("q.png", png)}, timeout=30).raise_for_status()
        yield url


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live + "/api/openapi.json")


def _described(rule: str) -> str:
    """A Flask rule in OpenAPI's spelling: '/images/<int(max=9):image_id>' -> '/images/{image_id}'."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_served_description_is_the_packaged_file_and_covers_every_route(live) -> None:
    served = requests.get(live + "/api/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
    packaged = json.loads(resources.files("retrieval.service").joinpath("openapi.json").read_text())
    assert served.json() == packaged and packaged["openapi"].startswith("3.")
    app = Flask("rules")
    app.register_blueprint(api)
    routes = {
        (_described(r.rule), m.lower())
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("api.")
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == {(path, method) for path, ops in packaged["paths"].items() for method in ops}


# (path, method, mode); negative requests only where there is an input to get wrong
OPERATIONS = [
    (path, method, mode)
    for path, ops in json.loads(resources.files("retrieval.service").joinpath("openapi.json").read_text())[
        "paths"
    ].items()
    for method, op in ops.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or "parameters" in op or "requestBody" in op
]


@pytest.mark.parametrize("path, method, mode", OPERATIONS, ids=lambda v: getattr(v, "value", v))
def test_every_operation_conforms_and_never_5xx(api_schema, live, path, method, mode) -> None:
    """Valid (positive) and invalid (negative) requests, sent with the admin token."""
    operation = api_schema[path][method.upper()]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(base_url=live, headers=AUTH, timeout=30)
        case.validate_response(response, checks=CHECKS)

    check()
