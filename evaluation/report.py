"""Writing results: CSV, Markdown tables, matplotlib figures (Agg), and the paper's numbers.

The paper's figures are kept here as published (percent, Huang et al. 2022, Tables 1-3 and the
caption of Figure 3) so that each of our tables can print them beside our values.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

DATASETS = ("flickr25k", "nuswide")
_B = (16, 24, 32, 48)

# Table 1: t-MAP (%) of targeted protection; "Original" is the MAP (%) of the clean queries.
PAPER_TABLE1: dict[str, dict[str, dict[int, float]]] = {
    name: {"flickr25k": dict(zip(_B, f)), "nuswide": dict(zip(_B, n))}
    for name, f, n in (
        ("Noise", (0.76, 0.57, 1.31, 0.29), (0.57, 0.57, 0.61, 0.96)),
        ("Tanh-P2P", (83.22, 84.39, 85.25, 85.92), (73.97, 76.10, 76.66, 77.49)),
        ("Tanh-P2S", (85.79, 88.44, 88.76, 89.18), (78.05, 79.53, 80.18, 81.10)),
        ("RNM-P2P", (83.95, 84.32, 83.22, 85.26), (74.02, 76.03, 76.93, 77.25)),
        ("RNM-P2S", (85.92, 88.45, 88.89, 89.49), (77.96, 79.60, 80.30, 81.33)),
        ("Original", (78.88, 80.69, 81.01, 81.48), (70.94, 73.01, 73.61, 74.11)),
    )
}
# Table 2: t-MAP (%) versus eps, NUS-WIDE, 24 bits (the caption's setting; the text says 32).
PAPER_TABLE2: dict[str, dict[float, float]] = {
    "Noise": dict(zip((0.01, 0.02, 0.03, 0.04, 0.05), (1.24, 2.78, 1.31, 1.25, 1.14))),
    "Tanh-P2P": dict(zip((0.01, 0.02, 0.03, 0.04, 0.05), (54.95, 63.11, 75.24, 75.90, 77.23))),
    "RNM-P2P": dict(zip((0.01, 0.02, 0.03, 0.04, 0.05), (52.44, 67.03, 76.19, 76.13, 76.95))),
}
# Table 3: MAP (%) under non-targeted protection (lower is better).
PAPER_TABLE3: dict[str, dict[str, dict[int, float]]] = {
    name: {"flickr25k": dict(zip(_B, f)), "nuswide": dict(zip(_B, n))}
    for name, f, n in (
        ("Noise", (74.16, 76.54, 78.47, 80.36), (70.08, 70.25, 71.48, 72.02)),
        ("Tanh-P2P", (1.92, 3.54, 3.15, 2.01), (9.74, 7.26, 6.97, 9.50)),
        ("RNM-P2P", (1.69, 2.42, 3.32, 1.90), (9.65, 6.47, 5.59, 9.75)),
    )
}
# Figure 3 caption: (PSNR dB, MAP %) per protection; the original images had MAP 91 %.
PAPER_FIGURE3: dict[str, tuple[float, float]] = {
    "original": (math.inf, 91.0),
    "mosaic": (16.66, 23.0),
    "brightness": (13.02, 89.0),
    "transparency": (18.28, 88.0),
    "gaussian_noise": (24.53, 90.0),
    "adversarial eps=0.01": (44.45, 20.0),
    "adversarial eps=0.02": (43.51, 19.0),
    "adversarial eps=0.03": (43.32, 17.0),
    "adversarial eps=0.04": (43.22, 16.0),
}


@dataclass(frozen=True)
class Written:
    """What one experiment wrote: its Markdown section (also in ``files``) and every file."""

    name: str
    markdown: str
    files: list[Path] = field(default_factory=list)


def paper_value(
    table: dict[str, dict[str, dict[int, float]]], method: str, dataset: str, bits: int
) -> float | None:
    """A published value as a fraction, or None where the paper has none."""
    value = table.get(method, {}).get(dataset, {}).get(bits)
    return None if value is None else value / 100


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; '-' where there is no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows of one schema (the first row's keys, in order) as CSV; None becomes an empty cell."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, title: str, table: str, notes: Sequence[str] = ()) -> str:
    """A section: heading, table, notes as a list. Written to ``path`` and returned."""
    text = f"## {title}\n\n{table}\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, **kw: Any) -> Path:
    """Write a matplotlib figure as PNG (tight layout, 120 dpi) and free it."""
    if "bbox_inches" not in kw:
        fig.tight_layout()
    fig.savefig(path, dpi=120, **kw)
    pyplot().close(fig)
    return path


def bar_chart(
    path: Path, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (fractions -> %)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.4 * len(groups)), 3.6))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [100 * v for v in values], width, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return save_figure(fig, path, bbox_inches="tight")
