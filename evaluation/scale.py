"""Does RNM's lead over Tanh grow with the size of the relaxed outputs C? (convergence-vs-scale)

Huang et al. 2022 report RNM reaching the target about 20x sooner than Tanh, and explain Tanh's
slowness by tanh(0.1 C) saturating where |C| is large (Sec. 3.2: a useful gradient only for C
in [-40, 40]). Our default model's outputs are small, and its ratio is small. This experiment
tests the explanation instead of assuming it: on models whose outputs differ in size it
measures the distribution of |C| on the clean query images and runs Figure 2's protocol
(``evaluation.convergence``) on each:

- the trained model, and the same model with its last layer multiplied by 10 and 30
  (``scale_factors``): identical codes, only |C| changes, so any change in the ratio is the
  scale's doing (the controlled test);
- the same recipe trained with eta = 0 (no quantisation term, which is what keeps |C| near 1);
- a small CNN trained end to end with DPSH at 32 px (a whole network trained for hashing, as
  the paper's VGG-11 is, at a size this CPU trains in minutes).

VGG-11 at 224 px trained end to end, the paper's model, is out of reach of a 2-core CPU (hours
per epoch); with a local torchvision state_dict and a GPU it is ``model.backbone = "vgg11"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.bench import Workbench, open_workbench
from evaluation.convergence import curve_axes, fmt, protocol_note, ratio, runs, stats
from evaluation.models import ModelVariant
from evaluation.options import EvalOptions
from evaluation.report import Written, markdown_table, pyplot, save_figure, write_csv, write_markdown
from retrieval.core.config import Config

NAME = "convergence-vs-scale"


def scale_variants(cfg: Config, options: EvalOptions) -> list[ModelVariant]:
    """The models compared (module docstring); "default" is the trained model itself."""
    variants = [ModelVariant("default", "the trained model")]
    variants += [
        ModelVariant(f"default-x{f:g}", f"the trained model, last layer x{f:g} (same codes)", scale=f)
        for f in options.scale_factors
    ]
    variants.append(ModelVariant("eta0", "the same recipe with eta = 0", {"train": {"eta": 0.0}}))
    small = {"backbone": "small_cnn", "image_size": 32, "freeze_backbone": False}
    variants.append(
        ModelVariant(
            "small-cnn-e2e",
            f"small_cnn trained end to end at 32 px ({options.small_cnn_epochs} epochs, lr 1e-3)",
            {"model": small, "train": {"epochs": options.small_cnn_epochs, "lr": 1e-3}},
            own_data=(cfg.model.backbone, cfg.model.image_size) != ("small_cnn", 32),
        )
    )
    return variants


def output_sizes(wb: Workbench, key: int | str) -> np.ndarray:
    """|C| of every bit of every clean query image of the sample. Shape: (n * K,)."""
    bench = wb.bench(key)
    with torch.no_grad():
        c = torch.cat([bench.model(b.to(wb.device)).cpu() for b in bench.images.split(wb.options.batch_size)])
    return c.abs().flatten().numpy()


def convergence_vs_scale(
    cfg: Config, out_dir: Path, options: EvalOptions | None = None, *, workbench: Workbench | None = None
) -> Written:
    """|C| and the Tanh/RNM ratio of iterations to the target, per model (module docstring)."""
    wb, out = open_workbench(cfg, out_dir, options, workbench, NAME)
    steps = wb.options.tanh_steps
    n = min(wb.options.figure2_queries, len(wb.sample().index))
    rows, curves, sizes = [], {}, {}
    for v in tqdm(scale_variants(cfg, wb.options), desc=NAME, unit="model"):
        key = cfg.model.hash_bits if v.name == "default" else wb.add_variant(v)
        sizes[v.name] = output_sizes(wb, key)
        outcome = runs(wb, key, n)
        st = {m: stats(o, steps) for m, o in outcome.items()}
        clean_map = wb.map_own(key, wb.bench(key).codes).map
        for method, o in outcome.items():
            curves[v.name, method] = o.trace.mean(axis=1)
            rows.append(_row(v, method, sizes[v.name], clean_map, st))
    md = write_markdown(
        out / f"{NAME}.md",
        "Convergence versus the size of the relaxed outputs |C|",
        _table(rows),
        [
            wb.provenance(),
            protocol_note(wb, n),
            f"|C|: absolute relaxed outputs over every bit of the {len(wb.sample().index)} clean "
            "query images; MAP: those images' codes against the variant's own database codes.",
            "Models: "
            + "; ".join(f"{v.name} = {v.description}" for v in scale_variants(cfg, wb.options))
            + ".",
        ],
    )
    curve_rows = [
        {"model": name, "method": m, "iteration": i, "mean_distance": float(d)}
        for (name, m), curve in curves.items()
        for i, d in enumerate(curve)
    ]
    _plot(out / f"{NAME}.png", rows, curves, sizes, steps)
    files = [write_csv(out / f"{NAME}.csv", rows), write_csv(out / f"{NAME}_curves.csv", curve_rows)]
    return Written(NAME, md, files + [out / f"{NAME}.md", out / f"{NAME}.png"])


def _row(v: ModelVariant, method: str, size: np.ndarray, clean_map: float, st: dict) -> dict:
    return {
        "model": v.name,
        "method": method,
        "abs_c_mean": float(size.mean()),
        "abs_c_median": float(np.median(size)),
        "abs_c_p90": float(np.quantile(size, 0.9)),
        "clean_map": clean_map,
        **st[method],
        "tanh_over_rnm_mean": ratio(st["tanh"]["mean_iterations"], st["rnm"]["mean_iterations"]),
        "tanh_over_rnm_median": ratio(st["tanh"]["median_iterations"], st["rnm"]["median_iterations"]),
    }


def _table(rows: list[dict]) -> str:
    by = {(r["model"], r["method"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    body = []
    for m in models:
        r, t = by[m, "rnm"], by[m, "tanh"]
        body.append(
            (
                m,
                f"{r['abs_c_mean']:.2f}",
                f"{r['abs_c_median']:.2f}",
                f"{r['abs_c_p90']:.2f}",
                f"{100 * r['clean_map']:.2f}",
                f"{r['reached_ever']:.0%} / {t['reached_ever']:.0%}",
                f"{r['mean_iterations']:.1f} / {r['median_iterations']:.0f}",
                f"{t['mean_iterations']:.1f} / {t['median_iterations']:.0f}",
                fmt(r["tanh_over_rnm_mean"], ".1f"),
                fmt(r["tanh_over_rnm_median"], ".1f"),
            )
        )
    return markdown_table(
        [
            "Model",
            "mean abs C",
            "median abs C",
            "p90 abs C",
            "MAP (%)",
            "Ever reached RNM / Tanh",
            "RNM iterations mean / median",
            "Tanh iterations mean / median",
            "Tanh/RNM mean",
            "Tanh/RNM median",
        ],
        body,
    )


def _plot(path: Path, rows: list[dict], curves: dict, sizes: dict, steps: int) -> None:
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, size in sizes.items():
        xs = np.sort(np.clip(size, 1e-3, None))
        a.plot(xs, np.linspace(0, 1, len(xs)), label=name)
    a.set(
        xscale="log", xlabel="|C| (clean query images)", ylabel="share of outputs <= x", title="Output size"
    )
    a.legend(fontsize=6)
    tanh = [r for r in rows if r["method"] == "tanh"]
    for key, marker in (("mean", "o"), ("median", "s")):
        pts = [(r["abs_c_mean"], r[f"tanh_over_rnm_{key}"]) for r in tanh if r[f"tanh_over_rnm_{key}"]]
        if pts:
            b.plot(*zip(*pts), marker, label=f"ratio of {key}s")
    for r in tanh:
        b.annotate(r["model"], (r["abs_c_mean"], r["tanh_over_rnm_mean"] or 1), fontsize=6)
    b.axhline(1, color="grey", lw=0.5)
    b.axhline(20, color="red", lw=0.5, ls="--", label="paper: about 20x")
    b.set(xscale="log", yscale="log", xlabel="mean |C|", ylabel="Tanh / RNM iterations to target")
    b.xaxis.set_minor_formatter(NullFormatter())  # one label per decade, no overlapping minor labels
    b.yaxis.set_minor_formatter(NullFormatter())
    b.set_title("Ratio versus output size")
    b.legend(fontsize=6)
    for i, name in enumerate(sizes):
        c.plot(np.arange(steps + 1), curves[name, "rnm"], color=f"C{i}", label=f"{name} RNM")
        c.plot(np.arange(steps + 1), curves[name, "tanh"], color=f"C{i}", ls="--", label=f"{name} Tanh")
    curve_axes(c, steps)
    c.set_title("Mean distance (solid RNM, dashed Tanh)")
    c.legend(fontsize=5, ncol=2)
    save_figure(fig, path)
