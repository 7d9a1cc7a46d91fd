"""Reproduce the experiments of Huang et al. 2022 (Sec. 5) on this project's model and data.

Each experiment is a plain function ``name(cfg, out_dir, options) -> Written`` that writes
``<name>.csv``, ``<name>.md`` (our numbers beside the paper's where it has them, and the
command that wrote them) and ``<name>.png`` under ``out_dir``, plus ``<name>_queries.json``
(the seeded queries and targets):

- ``table1``: t-MAP of Noise, Tanh-P2P/P2S, RNM-P2P/P2S and the clean MAP per bit length;
- ``table2``: t-MAP versus eps in {0.01, ..., 0.05};
- ``table3``: MAP under non-targeted protection;
- ``figure2``: mean Hamming distance to the target per iteration, RNM versus Tanh;
- ``convergence-vs-scale``: the Tanh/RNM ratio of iterations to the target on models whose
  relaxed outputs differ in size (a test of the paper's 20x claim);
- ``figure3``: PSNR and MAP of obfuscations and adversarial protection (scatter plot);
- ``figure4``: Grad-CAM heatmaps of original, obfuscated and protected images (grid).

``run_all`` runs them on one shared :class:`Workbench` (models, codes and attack results are
computed once) and, when it runs all of them, writes ``results.md``. ``EvalOptions.quick_profile()`` runs everything in
seconds on a tiny model. Models for bit lengths other than the trained one are trained on first
use into work_dir/eval/models/<K>bits.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from evaluation.bench import Workbench
from evaluation.convergence import figure2
from evaluation.figures import figure3, figure4
from evaluation.options import EvalOptions
from evaluation.protocol import t_map
from evaluation.report import Written
from evaluation.scale import convergence_vs_scale
from evaluation.tables import table1, table2, table3
from retrieval.core.config import Config

log = logging.getLogger(__name__)

Experiment = Callable[..., Written]
EXPERIMENTS: dict[str, Experiment] = {
    "table1": table1,
    "table2": table2,
    "table3": table3,
    "figure2": figure2,
    "convergence-vs-scale": convergence_vs_scale,
    "figure3": figure3,
    "figure4": figure4,
}


def run_experiment(
    name: str,
    cfg: Config,
    out_dir: Path,
    options: EvalOptions | None = None,
    *,
    workbench: Workbench | None = None,
) -> Written:
    """Run one experiment by name (a key of EXPERIMENTS)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name](cfg, Path(out_dir), options, workbench=workbench)


def run_all(
    cfg: Config, out_dir: Path, options: EvalOptions | None = None, names: list[str] | None = None
) -> Path:
    """Run the experiments (all, or ``names``) on one workbench.

    Returns out_dir/results.md (every table in one file) when all ran, else out_dir.
    """
    everything = names is None
    names = list(EXPERIMENTS) if names is None else names
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {sorted(EXPERIMENTS)}")
    options = options or EvalOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wb = Workbench(cfg, options)
    sections = []
    for name in names:
        log.info("running %s", name)
        sections.append(run_experiment(name, cfg, out, workbench=wb).markdown)
    if not everything:
        return out
    profile = "quick" if options.quick else "full"
    header = (
        f"# hashveil: the experiments of Huang et al. 2022\n\n"
        f"Profile {profile}; {cfg.data.dataset}, {cfg.model.backbone}, bit lengths "
        f"{', '.join(map(str, options.resolved_bits(cfg)))}; written "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Percentages; the paper's "
        "columns are VGG-11 DPSH on FLICKR-25K / NUS-WIDE. Queries and targets: queries.json.\n"
    )
    path = out / "results.md"
    path.write_text(header + "\n" + "\n".join(sections), encoding="utf-8")
    return path


__all__ = [
    "EXPERIMENTS",
    "EvalOptions",
    "Workbench",
    "convergence_vs_scale",
    "Written",
    "figure2",
    "figure3",
    "figure4",
    "run_all",
    "run_experiment",
    "t_map",
    "table1",
    "table2",
    "table3",
]
