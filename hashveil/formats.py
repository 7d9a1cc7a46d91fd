"""``--format`` / ``--quality``: the file a protection writes or sends, and how it is reported."""

from __future__ import annotations

import click

from privacy.encode import DEFAULT_QUALITY, FORMATS, Encoded, Encoding


def format_options(f):
    for opt in (
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default="png",
            show_default=True,
            help="protected file format: png is exact; jpeg/webp are smaller, checked after encoding",
        ),
        click.option(
            "--quality",
            type=click.IntRange(1, 100),
            default=DEFAULT_QUALITY,
            show_default=True,
            help="jpeg/webp quality",
        ),
    ):
        f = opt(f)
    return f


def encoding_of(fmt: str, quality: int) -> Encoding:
    try:
        return Encoding(fmt, quality)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def file_check(encoded: Encoded) -> str:
    """What the server will compute from the file, in words."""
    e, what = encoded, f"{encoded.encoding.describe()} file"
    if e.at_target:
        return f"{what}: code at the target"
    if e.protected_distance == 0:
        return (
            f"{what}: NOT at the target after encoding (Hamming {e.distance}; --format png keeps it exactly)"
        )
    return f"{what}: Hamming {e.distance} to the target ({e.protected_distance} before encoding: the protection stopped short)"


def kilobytes(n: int) -> str:
    return f"{n / 1000:.0f} KB" if n >= 10_000 else f"{n / 1000:.1f} KB"
