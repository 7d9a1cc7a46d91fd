"""How much of the paper's protocol an evaluation runs: the paper's profile or a quick one."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.core.codes import SUPPORTED_BITS
from retrieval.core.config import Config

PAPER_BITS = (16, 24, 32, 48)
PAPER_EPS = (0.01, 0.02, 0.03, 0.04, 0.05)
DEFAULT_OBFUSCATIONS = (
    ("mosaic", (4.0, 8.0)),
    ("brightness", (0.4, 1.8)),
    ("transparency", (0.5, 0.7)),
    ("gaussian_noise", (0.05, 0.1)),
    ("blur", (1.0, 2.0)),
)


@dataclass(frozen=True)
class EvalOptions:
    """How much of the paper's protocol to run. ``None`` fields resolve against the config.

    ``bits`` None: the paper's 16/24/32/48 (quick: the trained length only); ``rnm_steps`` None:
    privacy.steps; ``eps`` None: privacy.eps (Tables 1 and 3, Figures 2 and 4); ``table2_bits``
    None: the trained length (the paper used 24 bits on NUS-WIDE). ``tanh_steps`` is Tanh's
    horizon (DHTA's 2000; Figure 2 and the convergence experiment run every method that long,
    without early stop). ``scale_factors``: the output scales of the convergence-versus-scale
    experiment; ``small_cnn_epochs``: epochs of its end-to-end small CNN. ``command``: the
    command line that ran the evaluation, written into every table (provenance).
    """

    queries: int = 500
    bits: tuple[int, ...] | None = None
    seed: int = 0
    rnm_steps: int | None = None
    tanh_steps: int = 2000
    eps: float | None = None
    eps_list: tuple[float, ...] = PAPER_EPS
    table2_bits: int | None = None
    figure2_queries: int = 100
    scale_factors: tuple[float, ...] = (10.0, 30.0)
    small_cnn_epochs: int = 10
    figure3_eps: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04)
    obfuscations: tuple[tuple[str, tuple[float, ...]], ...] = DEFAULT_OBFUSCATIONS
    figure4_images: int = 4
    batch_size: int = 32
    device: str | None = None
    quick: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        for name in (
            "queries",
            "tanh_steps",
            "figure2_queries",
            "small_cnn_epochs",
            "figure4_images",
            "batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if self.rnm_steps is not None and (not isinstance(self.rnm_steps, int) or self.rnm_steps < 1):
            raise ValueError(f"rnm_steps must be an int >= 1; got {self.rnm_steps!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {self.seed!r}")
        for b in (self.bits or ()) + ((self.table2_bits,) if self.table2_bits else ()):
            if b not in SUPPORTED_BITS:
                raise ValueError(f"bit lengths must be in {SUPPORTED_BITS}; got {b!r}")
        for e in (self.eps,) * (self.eps is not None) + self.eps_list + self.figure3_eps:
            if not 0 < e <= 1:
                raise ValueError(f"eps values must be in (0, 1] (pixels); got {e!r}")
        for f in self.scale_factors:
            if not (isinstance(f, (int, float)) and f > 0):
                raise ValueError(f"scale factors must be > 0; got {f!r}")

    @classmethod
    def quick_profile(cls, **changes) -> "EvalOptions":
        """Few queries and steps, one bit length: every experiment runs end to end in seconds."""
        base = dict(
            queries=8,
            rnm_steps=10,
            tanh_steps=20,
            figure2_queries=8,
            scale_factors=(10.0,),
            small_cnn_epochs=2,
            figure4_images=2,
            eps_list=PAPER_EPS,
            figure3_eps=(0.01, 0.04),
            batch_size=16,
            quick=True,
            obfuscations=tuple((name, s[:1]) for name, s in DEFAULT_OBFUSCATIONS),
        )
        return cls(**{**base, **changes})

    def resolved_bits(self, cfg: Config) -> tuple[int, ...]:
        if self.bits:
            return tuple(self.bits)
        return (cfg.model.hash_bits,) if self.quick else PAPER_BITS
