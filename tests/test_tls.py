"""The user's side against a real HTTPS server (Werkzeug with a certificate from a throwaway CA made
by `openssl`): it verifies the certificate against the CA bundle it is given, and refuses the server
without it (requests' default bundle does not know the CA) or with another CA."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from hashveil.cli import main
from privacy.client import connect
from privacy.remote import RemoteService
from retrieval.core.config import override
from retrieval.service.search import open_searcher
from retrieval.service.server import create_app
from testkit.data import write_config
from testkit.service import CLIENT_BASE, build_tiny_service, opened_client
from testkit.tls import make_certificates, tls_server
from webui.client import create_client_app


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    cfg = build_tiny_service(tmp_path_factory.mktemp("tls-service"))
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    other = make_certificates(tmp_path_factory.mktemp("other-ca"))
    with tls_server(create_app(cfg), certs) as url:
        yield {"cfg": cfg, "url": url, "ca": certs.ca, "other_ca": other.ca}


def test_client_verifies_the_server_against_the_given_ca(https, tmp_path) -> None:
    truth = dict(open_searcher(https["cfg"]).store.label_counts())
    assert RemoteService(https["url"], verify=str(https["ca"])).labels() == truth
    protector, server = connect(
        https["url"], https["cfg"].privacy, tmp_path / "cache", verify=str(https["ca"])
    )
    assert server.url.startswith("https://") and protector is not None  # model downloaded over TLS
    for verify in (True, str(https["other_ca"])):
        with pytest.raises(requests.exceptions.SSLError, match="--ca-bundle FILE"):
            RemoteService(https["url"], verify=verify).labels()
    with pytest.raises(FileNotFoundError, match="CA bundle not found"):
        RemoteService(https["url"], verify=str(tmp_path / "missing.pem"))


def test_query_command_takes_a_ca_bundle(https, tmp_path) -> None:
    config = write_config(tmp_path / "config.toml", override(https["cfg"], paths={"work_dir": tmp_path}))
    image = https["cfg"].work_dir / "images" / "000.png"
    base = ["--config", str(config), "query", str(image), "--server", https["url"]]
    ok = CliRunner().invoke(main, [*base, "--ca-bundle", str(https["ca"])])
    assert ok.exit_code == 0, ok.output
    assert "results within radius 2" in ok.output
    refused = CliRunner().invoke(main, base)
    assert refused.exit_code == 1
    *_, line = refused.output.strip().splitlines()  # the error is one line, after the command's first
    assert line.startswith("Error: cannot reach the server: the TLS certificate of https://127.0.0.1:")
    assert "--ca-bundle FILE" in line
    # the config key does what the flag does
    keyed = write_config(
        tmp_path / "keyed.toml",
        override(https["cfg"], paths={"work_dir": tmp_path}, client={"ca_bundle": str(https["ca"])}),
    )
    ok = CliRunner().invoke(main, ["--config", str(keyed), *base[2:]])
    assert ok.exit_code == 0, ok.output


def test_client_app_reaches_an_https_server_only_with_its_ca(https) -> None:
    labels = sorted(open_searcher(https["cfg"]).store.label_counts())
    for ca, reachable in ((str(https["ca"]), True), ("", False)):
        cfg = override(https["cfg"], client={"ca_bundle": ca})
        app = create_client_app(https["url"], cfg)
        page = opened_client(app).get("/", base_url=CLIENT_BASE).get_data(as_text=True)
        assert all((f'value="{name}"' in page) == reachable for name in labels), ca
        assert ("--ca-bundle FILE" in page) != reachable


def test_ca_bundle_in_config_is_relative_to_the_config_file(tmp_path) -> None:
    from retrieval.core.config import load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.toml").write_text('[client]\nca_bundle = "certs/ca.pem"\n')
    cfg = load_config(tmp_path / "conf" / "c.toml")
    assert Path(cfg.client.ca_bundle) == tmp_path / "conf" / "certs" / "ca.pem"
    assert cfg.client.verify() == cfg.client.ca_bundle
