"""config.toml -> frozen dataclasses, read once at the entry point.

Each section is a dataclass; functions take the section they need. Overrides (from CLI
flags) go through :func:`override`, which validates them the same way as the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.core.codes import check_bits

BACKBONES = ("efficientnet_lite0", "vgg11", "alexnet", "resnet18", "small_cnn")
DATASETS = ("fashion_mnist", "flickr25k", "nuswide", "folder")
LAYOUTS = ("auto", "csv", "classes", "flat")  # how a "folder" dataset gives its labels (README)
INDEX_KINDS = ("flat", "hash", "multihash")
INDEX_BACKENDS = ("faiss", "milvus")
UNSET_SEED = -1  # privacy.seed: draw from fresh OS entropy
MAX_ANCHOR_POOL = 1000  # the server's cap on database codes per label in one anchor pool


@dataclass(frozen=True)
class PathsConfig:
    work_dir: Path = Path("var")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    hash_bits: int = 32
    image_size: int = 96
    freeze_backbone: bool = True
    pretrained: str = ""
    device: str = "auto"

    def __post_init__(self) -> None:
        _choice("model.backbone", self.backbone, BACKBONES)
        check_bits(self.hash_bits)
        _int_range("model.image_size", self.image_size, 16, 1024)
        if not (isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device)):
            raise ValueError(f"model.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion_mnist"
    data_dir: str = ""
    # Split sizes; 0 = sized to the data (index_builder.splits.split_sizes): query 10 % of the
    # images (1 to 1,000), database all the rest, train the database (at most 20,000).
    num_query: int = 0
    num_train: int = 0
    num_database: int = 0
    seed: int = 0
    redraw_splits: bool = False  # published split lists (flickr25k, nuswide) are used as they are
    layout: str = (
        "auto"  # folder datasets: auto (labels.csv, else class subfolders, else flat) | csv | classes | flat
    )

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _int_range("data.num_query", self.num_query, 0, 10**7)
        _int_range("data.num_train", self.num_train, 0, 10**7)
        _int_range("data.num_database", self.num_database, 0, 10**9)
        _choice("data.layout", self.layout, LAYOUTS)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-4
    eta: float = 0.1
    map_topk: int = 0

    def __post_init__(self) -> None:
        _int_range("train.epochs", self.epochs, 0, 10**5)
        _int_range("train.batch_size", self.batch_size, 2, 10**5)
        _int_range("train.map_topk", self.map_topk, 0, 10**9)


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "flat"
    db_url: str = ""
    batch_size: int = 256
    workers: int = 1
    backend: str = "faiss"
    milvus_uri: str = ""  # "" = a Milvus Lite file in work_dir/index; http(s)://host:port = a server
    milvus_token: str = ""
    milvus_collection: str = "hashveil_codes"

    def __post_init__(self) -> None:
        _choice("index.kind", self.kind, INDEX_KINDS)
        _int_range("index.batch_size", self.batch_size, 1, 10**5)
        _int_range("index.workers", self.workers, 0, 64)
        _choice("index.backend", self.backend, INDEX_BACKENDS)
        if self.backend == "milvus" and self.kind != "flat":
            raise ValueError(
                f"index.kind must be 'flat' with backend 'milvus' (BIN_FLAT, the exact "
                f"Milvus index for binary codes); got {self.kind!r}"
            )
        # at most 200 characters: builds name their collections <this>_<generation> (Milvus: 255)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", self.milvus_collection):
            raise ValueError(
                f"index.milvus_collection must be at most 200 letters, digits and underscores, "
                f"not starting with a digit; got {self.milvus_collection!r}"
            )

    def milvus_secret(self) -> str:
        """The Milvus token: index.milvus_token, else HASHVEIL_MILVUS_TOKEN; "" for Milvus Lite."""
        return self.milvus_token or os.environ.get("HASHVEIL_MILVUS_TOKEN", "")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    radius: int = 2
    max_k: int = 1000
    max_upload_mb: float = 8.0  # a float default, so that 0.5 in config.toml is accepted
    admin_token: str = ""
    # Days a query-log row (with its upload) is kept; 0 = no query log at all. 30 by default:
    # long enough to investigate abuse or a user's report about last week, short enough that
    # uploads, the thing the privacy layer guards, do not pile up for ever.
    log_retention_days: int = 30
    # Host names answered besides the loopback names (DNS rebinding, Host-header attacks); () with a
    # host that is not loopback also answers IP addresses (retrieval.websecurity.server_host_rule).
    allowed_hosts: tuple[str, ...] = ()
    # Address of a TLS-terminating proxy whose X-Forwarded-Proto/-Host/-For/-Port waitress trusts.
    trusted_proxy: str = ""
    # How often (seconds) a running server looks for a new build's manifest; 0 = never.
    reload_seconds: float = 2.0
    page_size: int = 100  # hits per /api/search answer unless the request sets limit; at most max_k
    batch_max: int = 16  # uploads hashed in one forward
    batch_wait_ms: int = 2  # how long a batch's first upload waits for others

    def __post_init__(self) -> None:
        _int_range("server.port", self.port, 0, 65535)
        for name in self.allowed_hosts:
            if not re.fullmatch(r"\*|\.?[A-Za-z0-9_.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", name):
                raise ValueError(
                    f"server.allowed_hosts entries must be host names, host:port, [ipv6] or *; got {name!r}"
                )
        if not 0 <= self.reload_seconds <= 86400:
            raise ValueError(f"server.reload_seconds must be in [0, 86400]; got {self.reload_seconds!r}")
        _int_range("server.log_retention_days", self.log_retention_days, 0, 36500)
        if not 0 < self.max_upload_mb <= 4096:
            raise ValueError(f"server.max_upload_mb must be in (0, 4096]; got {self.max_upload_mb!r}")
        _int_range("server.radius", self.radius, 0, 64)
        _int_range("server.max_k", self.max_k, 1, 10**6)
        _int_range("server.page_size", self.page_size, 0, 10**6)
        _int_range("server.batch_max", self.batch_max, 1, 1024)
        _int_range("server.batch_wait_ms", self.batch_wait_ms, 0, 1000)

    def admin_secret(self) -> str:
        """The admin token: server.admin_token, else HASHVEIL_ADMIN_TOKEN; "" = admin routes off."""
        return self.admin_token or os.environ.get("HASHVEIL_ADMIN_TOKEN", "")


@dataclass(frozen=True)
class PrivacyConfig:
    method: str = "rnm"
    rnm_variant: str = "proximal"
    eps: float = 8 / 255
    steps: int = 100
    step_size: float = 8 / 255
    step_rule: str = "scaled"
    margin: float = 0.0
    n_anchor: int = 9
    # -1 = unset: the target label, the anchor items and any noise come from fresh OS entropy for
    # every protection. A seed >= 0 makes protections reproducible (experiments only): an attacker
    # who knows it can predict every target.
    seed: int = UNSET_SEED
    anchor_pool: int = 256  # database codes per label fetched once (and cached); anchors are drawn from them
    target_jitter: int = 0  # bits of a semantic target flipped at random, so protected codes do not collide
    model_sha256: str = ""  # "" = trust the server's model card; else refuse any other model
    # robust protection: optimise over a server's re-encodings and stop only when the code is at the
    # target in the upload as sent and after each of robust_checks (real Pillow transformations)
    robust: bool = False
    robust_checks: tuple[str, ...] = ("jpeg60", "webp80", "resize0.5")
    # ensemble protection: mislead a surrogate model trained here on the anchor pool's images too
    ensemble: bool = False
    decoy_dir: str = ""  # photos decoy carriers are cut from; "" = photos bundled with installed packages
    decoy_delay_s: float = 0.5  # decoy queries: the most seconds between two of a query's uploads

    def __post_init__(self) -> None:
        _choice("privacy.method", self.method, ("rnm", "tanh", "noise"))
        _choice("privacy.rnm_variant", self.rnm_variant, ("margin", "proximal", "literal"))
        _choice("privacy.step_rule", self.step_rule, ("sign", "scaled"))
        if not 0 < self.eps <= 1:
            raise ValueError(f"privacy.eps must be in (0, 1] (pixels in [0, 1]); got {self.eps}")
        _int_range("privacy.steps", self.steps, 1, 10**5)
        _int_range("privacy.n_anchor", self.n_anchor, 1, 10**4)
        _int_range("privacy.seed", self.seed, UNSET_SEED, 2**63 - 1)
        _int_range("privacy.anchor_pool", self.anchor_pool, 1, MAX_ANCHOR_POOL)
        _int_range("privacy.target_jitter", self.target_jitter, 0, 64)
        if self.n_anchor > self.anchor_pool:
            raise ValueError(
                f"privacy.n_anchor ({self.n_anchor}) must be <= privacy.anchor_pool ({self.anchor_pool}): "
                "anchors are drawn from the pool"
            )
        if self.ensemble and self.method == "noise":
            raise ValueError("privacy.ensemble needs a gradient method (rnm or tanh); got 'noise'")
        if self.robust and self.method != "rnm":
            raise ValueError(f"privacy.robust needs privacy.method = 'rnm'; got {self.method!r}")
        if not 0 <= self.decoy_delay_s <= 60:
            raise ValueError(f"privacy.decoy_delay_s must be in [0, 60] seconds; got {self.decoy_delay_s}")
        if self.model_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.model_sha256):
            raise ValueError(
                f"privacy.model_sha256 must be 64 lowercase hex digits or empty; got {self.model_sha256!r}"
            )


@dataclass(frozen=True)
class ClientConfig:
    """The user's side talking to a server: ``hashveil client``, ``query`` and ``protect --server``."""

    port: int = 5001  # the local client app's port on 127.0.0.1 (0 = any free port)
    ca_bundle: str = ""  # CA certificates (PEM) that sign an https:// server's; "" = requests' bundle

    def __post_init__(self) -> None:
        _int_range("client.port", self.port, 0, 65535)

    def verify(self) -> bool | str:
        """requests' ``verify``: the CA bundle file, or True for the default bundle."""
        return self.ca_bundle or True


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    client: ClientConfig = field(default_factory=ClientConfig)

    @property
    def work_dir(self) -> Path:
        return self.paths.work_dir

    @property
    def db_url(self) -> str:
        return self.index.db_url or f"sqlite:///{self.work_dir / 'hashveil.sqlite'}"


DEFAULT_CONFIG_FILE = "config.toml"


def load_config(path: str | Path | None = None) -> Config:
    """Read a config.toml into a :class:`Config`; relative paths resolve against its folder.

    ``path`` None looks for ``config.toml`` in the current folder and, when there is none, uses
    the built-in defaults (the same values as the repository's config.toml) with work_dir
    relative to the current folder. A named file that does not exist is an error.
    """
    if path is None:
        if not Path(DEFAULT_CONFIG_FILE).is_file():
            return override(Config(), paths={"work_dir": Path.cwd() / PathsConfig().work_dir})
        path = DEFAULT_CONFIG_FILE
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    cfg = from_dict(raw)
    here = path.resolve().parent
    if not cfg.paths.work_dir.is_absolute():
        cfg = override(cfg, paths={"work_dir": here / cfg.paths.work_dir})
    if cfg.client.ca_bundle and not Path(cfg.client.ca_bundle).is_absolute():
        cfg = override(cfg, client={"ca_bundle": str(here / cfg.client.ca_bundle)})
    if cfg.privacy.decoy_dir and not Path(cfg.privacy.decoy_dir).is_absolute():
        cfg = override(cfg, privacy={"decoy_dir": str(here / cfg.privacy.decoy_dir)})
    return cfg


def to_toml(cfg: Config) -> str:
    """The whole config as TOML that :func:`load_config` reads back to an equal Config."""
    lines = []
    for section in dataclasses.fields(cfg):
        lines.append(f"[{section.name}]")
        for key, value in dataclasses.asdict(getattr(cfg, section.name)).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (e.g. parsed TOML); unknown keys are errors."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = set(raw) - set(sections)
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)}")
    return override(Config(), **raw)


def override(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return ``cfg`` with some keys replaced, e.g. ``override(cfg, model={"hash_bits": 16})``.

    None values are skipped, so CLI options left unset keep the config's value.
    """
    changes = {}
    for name, values in sections.items():
        current = getattr(cfg, name, None)
        if current is None or not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config section: {name!r}")
        known = {f.name: f for f in dataclasses.fields(current)}
        clean = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown config key: {name}.{key}")
            if value is None:
                continue
            clean[key] = _coerce(f"{name}.{key}", value, getattr(current, key))
        changes[name] = dataclasses.replace(current, **clean)
    return dataclasses.replace(cfg, **changes)


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, Path):
        return Path(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false; got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{name} must be a list of strings; got {value!r}")
        return tuple(value)
    if type(value) is not type(default):
        raise TypeError(f"{name} must be {type(default).__name__}; got {value!r}")
    return value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def _int_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}]; got {value!r}")
