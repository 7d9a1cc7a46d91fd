"""The option groups that several user commands share, each stated once.

``protect`` and ``query`` take the same protection flags, and they and ``client`` the same trust
flags (``--seed``, ``--model-sha256``, ``--ca-bundle``). Each group is a decorator that adds its click options and
hands the command one frozen object (``protection`` or ``trust``) instead of a dozen arguments;
the object turns itself into the config the library functions take.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace

import click

from hashveil.group import ca_bundle_option, config_of
from privacy.presets import MODES, STRENGTHS, apply_strength
from retrieval.core.config import Config, override


@dataclass(frozen=True)
class TrustFlags:
    """Where the protection's randomness comes from, and which model and certificate the client accepts."""

    seed: int | None
    model_sha256: str | None
    ca_bundle: str | None

    def apply(self, ctx: click.Context, cfg: Config | None = None) -> Config:
        cfg = config_of_section(ctx, cfg, seed=self.seed, model_sha256=self.model_sha256)
        return override(cfg, client={"ca_bundle": self.ca_bundle})


@dataclass(frozen=True)
class ProtectionFlags:
    """What to hide and how hard: mode, target, strength preset and its overrides."""

    mode: str
    target_label: str | None
    strength: str | None
    eps: float | None
    steps: int | None
    method: str | None
    variant: str | None
    margin: float | None
    robust: bool | None
    ensemble: bool | None
    private: str | None

    def apply(self, ctx: click.Context, cfg: Config | None = None) -> Config:
        """The config with the preset laid over it; flags given explicitly win over the preset."""
        cfg = config_of(ctx) if cfg is None else cfg
        try:
            cfg = replace(cfg, privacy=apply_strength(cfg.privacy, self.strength))
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        return config_of_section(
            ctx,
            cfg,
            eps=self.eps,
            steps=self.steps,
            method=self.method,
            rnm_variant=self.variant,
            margin=self.margin,
            robust=self.robust,
            ensemble=self.ensemble,
        )


def config_of_section(ctx: click.Context, cfg: Config | None, **privacy) -> Config:
    """``cfg`` (default: the group's) with privacy keys replaced; bad values are usage errors."""
    try:
        return override(config_of(ctx) if cfg is None else cfg, privacy=privacy)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e)) from None


def group_options(name: str, cls: type, options: list):
    """A decorator adding ``options`` whose values reach the command as one ``cls`` named ``name``."""
    names = [f.name for f in fields(cls)]

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kw):
            return f(*args, **{name: cls(**{n: kw.pop(n) for n in names})}, **kw)

        for opt in reversed(options):
            command = opt(command)
        return command

    return decorate


trust_options = group_options(
    "trust",
    TrustFlags,
    [
        click.option(
            "--seed",
            type=click.IntRange(0, 2**63 - 1),
            help="repeat the target and anchor draws exactly (experiments only; default: fresh OS "
            "entropy for every protection, privacy.seed = -1)",
        ),
        click.option(
            "--model-sha256",
            help="refuse any server model whose weights have another sha256 (privacy.model_sha256)",
        ),
        ca_bundle_option,
    ],
)

protection_options = group_options(
    "protection",
    ProtectionFlags,
    [
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default="semantic",
            show_default=True,
            help="what to hide (see README)",
        ),
        click.option(
            "--target-label",
            help="semantic mode: the label to point at (default: drawn from the label prior, never the image's own)",
        ),
        click.option(
            "--strength",
            type=click.Choice(list(STRENGTHS)),
            help="preset for --eps/--steps (robust: --robust too)",
        ),
        click.option("--eps", type=float, help="L_inf budget in pixels [0, 1] (privacy.eps)"),
        click.option("--steps", type=int, help="most PGD steps (privacy.steps)"),
        click.option("--method", type=click.Choice(["rnm", "tanh", "noise"]), help="privacy.method"),
        click.option(
            "--variant",
            type=click.Choice(["margin", "proximal", "literal"]),
            help="privacy.rnm_variant (literal = the paper's eq. 12 as written)",
        ),
        click.option("--margin", type=float, help="privacy.margin: keep bits this far past 0"),
        click.option(
            "--robust/--no-robust",
            default=None,
            help="privacy.robust: hold the target after the server re-encodes (privacy.robust_checks: JPEG 60, WebP 80, 0.5x resize)",
        ),
        click.option(
            "--ensemble/--no-ensemble",
            default=None,
            help="privacy.ensemble: mislead a surrogate model too, trained once here on the anchor "
            "pool's images (see README: it did not transfer to a held-out model on the demo)",
        ),
        click.option(
            "--private",
            type=click.Path(exists=True, dir_okay=False),
            help="carrier mode: the private image whose results the carrier should retrieve",
        ),
    ],
)
