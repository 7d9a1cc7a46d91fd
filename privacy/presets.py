"""The protection's user-facing choices, stated once: modes and named strengths.

Every front end (the CLI's ``protect`` and ``query --protect``, the web client, the Python API)
takes its choices and their checks from here.
"""

from __future__ import annotations

from dataclasses import replace

from retrieval.core.config import PrivacyConfig

# semantic: mislead the server's model about the image's label; untargeted: away from its own
# code; carrier: an innocuous image retrieves what a private image would (the private one stays here)
MODES = ("semantic", "carrier", "untargeted")

# Named strengths: L_inf budget in pixels and the most PGD steps (and, for "robust", protection
# that holds after the server re-encodes: see README). Early stopping means most images use far
# fewer steps than the cap; the budget bounds the visible change.
STRENGTHS: dict[str, dict[str, float | int | bool]] = {
    "low": {"eps": 4 / 255, "steps": 50},
    "mid": {"eps": 8 / 255, "steps": 100},
    "high": {"eps": 16 / 255, "steps": 300},
    "robust": {"eps": 8 / 255, "steps": 200, "step_size": 6 / 255, "robust": True},
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return mode


def apply_strength(cfg: PrivacyConfig, strength: str | None) -> PrivacyConfig:
    """``cfg`` with a named strength's settings laid over it (None keeps ``cfg`` as it is)."""
    if strength is None:
        return cfg
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {sorted(STRENGTHS)}; got {strength!r}")
    return replace(cfg, **STRENGTHS[strength])
