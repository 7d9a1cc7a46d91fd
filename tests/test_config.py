from pathlib import Path

import pytest

from retrieval.core.config import Config, load_config, override

ROOT = Path(__file__).resolve().parents[1]


def test_repository_config_loads_and_resolves_work_dir():
    cfg = load_config(ROOT / "config.toml")
    assert cfg.model.hash_bits == 32
    assert cfg.work_dir == ROOT / "var"
    assert cfg.db_url == f"sqlite:///{ROOT / 'var' / 'hashveil.sqlite'}"


def test_override_validates_and_skips_none():
    cfg = override(Config(), model={"hash_bits": 16, "backbone": None})
    assert cfg.model.hash_bits == 16 and cfg.model.backbone == "efficientnet_lite0"
    with pytest.raises(ValueError, match="hash_bits must be one of"):
        override(Config(), model={"hash_bits": 20})
    with pytest.raises(ValueError, match=r"server.radius must be an int in \[0, 64\]; got 70"):
        override(Config(), server={"radius": 70})
    with pytest.raises(ValueError, match="unknown config key: model.colour"):
        override(Config(), model={"colour": "red"})
    with pytest.raises(TypeError, match="model.freeze_backbone must be true or false"):
        override(Config(), model={"freeze_backbone": "yes"})


def test_unknown_section_in_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[serverr]\nport = 1\n")
    with pytest.raises(ValueError, match="unknown config sections"):
        load_config(path)


def test_model_device_is_validated():
    assert Config().model.device == "auto"
    assert override(Config(), model={"device": "cuda:1"}).model.device == "cuda:1"
    for bad in ("gpu", "cuda:x", "", "CUDA"):
        with pytest.raises(ValueError, match="model.device must be auto, cpu, cuda or cuda:N"):
            override(Config(), model={"device": bad})


def test_config_toml_states_every_default():
    """config.toml is where defaults are read; the dataclass defaults must say the same."""
    import dataclasses

    from_file, built_in = load_config(ROOT / "config.toml"), Config()
    for section in dataclasses.fields(Config):
        if section.name == "paths":  # work_dir is resolved against the file's folder
            continue
        a, b = getattr(from_file, section.name), getattr(built_in, section.name)
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            same = x == pytest.approx(y, rel=1e-9) if isinstance(x, float) else x == y
            assert same, f"{section.name}.{f.name}: config.toml {x!r}, built-in {y!r}"


def test_readme_documents_every_config_key():
    """README.md's configuration table names every key of config.toml (as `section.key` or in a
    `section.a` / `b` group)."""
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    table = table[: table.index("\n## ", 1)]
    documented = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", table, flags=re.M):
        names = re.findall(r"`([a-z0-9_.]+)`", cell)
        section = names[0].split(".")[0]
        documented |= {n if "." in n else f"{section}.{n}" for n in names}
    raw = tomllib.loads((ROOT / "config.toml").read_text())
    keys = {f"{section}.{key}" for section, values in raw.items() for key in values}
    assert keys - documented == set()
