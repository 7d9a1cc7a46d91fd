"""hashveil installed from a wheel works from any folder: no repository, no config.toml needed."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retrieval.core.config import Config, load_config, override, to_toml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel and unpacked: a folder that holds only what pip would install."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "results", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("hashveil-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The wheel's `hashveil` console script, run in ``cwd`` with only the wheel's files importable
    ahead of the dependencies (the repository is neither the cwd nor on the path)."""
    (entry,) = site.glob("hashveil-*.dist-info/entry_points.txt")
    entry_points = configparser.ConfigParser()
    entry_points.read(entry)
    target = entry_points["console_scripts"]["hashveil"]
    module, func = target.split(":")
    script = (
        f"import sys, {module} as m; assert m.__file__.startswith({str(site)!r}), m.__file__; "
        f"sys.argv[0] = 'hashveil'; sys.exit(m.{func}())"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_wheel_carries_the_package_data(installed) -> None:
    assert (installed / "retrieval" / "service" / "openapi.json").is_file()
    assert (installed / "webui" / "templates" / "webui" / "client.html").is_file()
    assert (installed / "webui" / "static" / "style.css").is_file()


def test_installed_command_searches_from_an_empty_folder(
    installed, tiny_trained, tiny_data, tmp_path
) -> None:
    cfg, _ = tiny_trained
    image = tiny_data / "img" / "0005.png"
    out = run_installed(installed, tmp_path, "--work-dir", str(cfg.work_dir), "search", str(image), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"results"' in out.stdout and str(image) in out.stdout


def test_without_a_config_file_the_built_in_defaults_apply(installed, tmp_path) -> None:
    out = run_installed(installed, tmp_path, "config")
    assert out.returncode == 0, out.stderr[-2000:]
    printed = tmp_path / "printed.toml"
    printed.write_text(out.stdout)
    # the built-in defaults (test_config keeps them equal to the repository's config.toml)
    assert load_config(printed) == override(Config(), paths={"work_dir": tmp_path / "var"})
    missing = run_installed(installed, tmp_path, "--config", "nowhere.toml", "config")
    assert missing.returncode != 0 and "config file not found: nowhere.toml" in missing.stderr


def test_to_toml_round_trips_every_value(tmp_path) -> None:
    from dataclasses import replace

    cfg = Config()
    cfg = replace(
        cfg,
        privacy=replace(cfg.privacy, eps=3 / 255, margin=1.5),
        server=replace(cfg.server, admin_token='quote " and \\ backslash'),
    )
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == replace(cfg, paths=replace(cfg.paths, work_dir=tmp_path / "var"))
