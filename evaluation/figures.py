"""Figures 3-4 of Huang et al. 2022: image quality versus privacy, Grad-CAM (Figure 2: convergence.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.bench import Workbench, open_workbench
from evaluation.gradcam import cam_correlation, cam_entropy, grad_cam, overlay
from evaluation.obfuscation import OBFUSCATIONS, gaussian_noise
from evaluation.options import EvalOptions
from evaluation.protocol import make_attack_for
from evaluation.report import (
    PAPER_FIGURE3,
    Written,
    markdown_table,
    pct,
    pyplot,
    save_figure,
    write_csv,
    write_markdown,
)
from privacy.attacks.base import budget_levels
from privacy.metrics import psnr
from retrieval.core.codes import hamming
from retrieval.core.config import Config

log = logging.getLogger(__name__)
ADVERSARIAL = "adversarial (RNM-P2S)"


def _on_grid(x: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits: what the server decodes from the PNG a user would upload."""
    return (x.clamp(0, 1) * 255).round() / 255


def _obfuscate(name: str, x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    if name not in OBFUSCATIONS:
        raise ValueError(f"unknown obfuscation {name!r}; choose from {sorted(OBFUSCATIONS)}")
    y = (
        gaussian_noise(x, strength, seed=seed)
        if name == "gaussian_noise"
        else OBFUSCATIONS[name](x, strength)
    )
    return _on_grid(y)


def _encode(wb: Workbench, bits: int, x: torch.Tensor) -> np.ndarray:
    model = wb.bench(bits).model
    return np.concatenate([model.encode(b.to(wb.device)) for b in x.split(wb.options.batch_size)])


def figure3(
    cfg: Config, out_dir: Path, options: EvalOptions | None = None, *, workbench: Workbench | None = None
) -> Written:
    """Figure 3: PSNR and MAP (own labels) of obfuscations and of adversarial protection."""
    wb, out = open_workbench(cfg, out_dir, options, workbench, "figure3")
    bits = cfg.model.hash_bits
    bench = wb.bench(bits)
    x = bench.images
    rows = [
        {
            "method": "original",
            "strength": None,
            "psnr_db": None,
            "map": wb.map_own(bits, bench.codes).map,
            "paper_psnr_db": None,
            "paper_map": 0.91,
        }
    ]
    for name, strengths in tqdm(wb.options.obfuscations, desc="figure 3", unit="obfuscation"):
        for s in strengths:
            y = _obfuscate(name, x, s, wb.options.seed)
            paper = PAPER_FIGURE3.get(name)
            rows.append(
                {
                    "method": name,
                    "strength": s,
                    "psnr_db": float(psnr(y, x).mean()),
                    "map": wb.map_own(bits, _encode(wb, bits, y)).map,
                    "paper_psnr_db": paper and paper[0],
                    "paper_map": paper and paper[1] / 100,
                }
            )
    for eps in wb.options.figure3_eps:
        o = wb.protect(bits, "rnm", "p2s", eps)
        paper = PAPER_FIGURE3.get(f"adversarial eps={eps:g}")
        rows.append(
            {
                "method": ADVERSARIAL,
                "strength": eps,
                "psnr_db": float(o.psnr.mean()),
                "map": wb.map_own(bits, o.codes).map,
                "paper_psnr_db": paper and paper[0],
                "paper_map": paper and paper[1] / 100,
            }
        )

    def num(v, spec):
        return "-" if v is None else format(v, spec)

    table = markdown_table(
        ["Method", "Strength", "PSNR (dB)", "MAP (%)", "Paper PSNR (dB)", "Paper MAP (%)"],
        [
            (
                r["method"],
                num(r["strength"], "g"),
                num(r["psnr_db"], ".2f"),
                pct(r["map"]),
                num(r["paper_psnr_db"], ".2f"),
                pct(r["paper_map"]),
            )
            for r in rows
        ],
    )
    md = write_markdown(
        out / "figure3.md",
        f"Figure 3: image quality versus privacy ({bits} bits)",
        table,
        [
            wb.provenance(),
            "Strength: mosaic block (pixels), brightness factor, transparency alpha, noise sigma, blur "
            "sigma (pixels), adversarial eps (pixels). Every image is rounded to 8 bits, as uploaded.",
            "Budget actually used by the adversarial rows (whole grey levels, rounded down): "
            + ", ".join(f"eps {e:g} = {budget_levels(e)}/255" for e in wb.options.figure3_eps)
            + ".",
            "MAP against each query's own labels: lower protects more. The paper does not give the "
            "strengths of its traditional methods; its one point per method is shown beside every strength.",
            f"Adversarial = RNM ('{cfg.privacy.rnm_variant}') toward the P2S anchor of another label, "
            f"{wb.rnm_steps} steps (the client's semantic mode).",
        ],
    )
    _scatter(out / "figure3.png", rows, bits)
    return Written(
        "figure3", md, [write_csv(out / "figure3.csv", rows), out / "figure3.md", out / "figure3.png"]
    )


def _scatter(path: Path, rows: list[dict], bits: int) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "original"))
    for i, m in enumerate(methods):
        mine = [r for r in rows if r["method"] == m]
        ax.scatter([r["psnr_db"] for r in mine], [100 * r["map"] for r in mine], color=f"C{i}", label=m)
        for r in mine:
            ax.annotate(f"{r['strength']:g}", (r["psnr_db"], 100 * r["map"]), fontsize=6)
        papers = {(r["paper_psnr_db"], r["paper_map"]) for r in mine if r["paper_psnr_db"] is not None}
        for p_db, p_map in papers:
            ax.scatter([p_db], [100 * p_map], facecolors="none", edgecolors=f"C{i}", marker="s")
    ax.axhline(100 * rows[0]["map"], color="grey", ls="--", lw=1, label="original (ours)")
    ax.scatter([], [], facecolors="none", edgecolors="grey", marker="s", label="paper")
    ax.set(xlabel="PSNR (dB)", ylabel="MAP (%)", ylim=(0, 100), title=f"Quality versus privacy, {bits} bits")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def figure4(
    cfg: Config, out_dir: Path, options: EvalOptions | None = None, *, workbench: Workbench | None = None
) -> Written:
    """Figure 4: Grad-CAM of the original, each obfuscation and the protected image, as a grid.

    The score is C(x) . sign(C(x)) (each image's own code); heatmaps come from the backbone's
    last conv layer. The table puts numbers on the picture: code change, heatmap correlation
    with the original's and heatmap spread (normalised entropy).
    """
    wb, out = open_workbench(cfg, out_dir, options, workbench, "figure4")
    bits, p = cfg.model.hash_bits, cfg.privacy
    bench = wb.bench(bits)
    n = min(wb.options.figure4_images, len(wb.sample().index))
    x = bench.images[:n].to(wb.device)
    variants = [("original", x)]
    variants += [
        (f"{name} {s[0]:g}", _obfuscate(name, x, s[0], wb.options.seed))
        for name, s in wb.options.obfuscations
    ]
    attack = make_attack_for("rnm", bench.model, p, eps=wb.eps, steps=wb.rnm_steps, seed=wb.options.seed)
    protected = attack(x, bench.targets["p2s"][:n]).images
    variants.append((f"protected {wb.eps * 255:.0f}/255", protected))
    cams = {
        name: grad_cam(bench.model, imgs) for name, imgs in tqdm(variants, desc="figure 4", unit="variant")
    }
    codes = {name: bench.model.encode(imgs) for name, imgs in variants}
    rows = []
    for name, imgs in variants:
        dist = hamming(codes[name], codes["original"]).diagonal()
        corr, spread = cam_correlation(cams[name], cams["original"]), cam_entropy(cams[name])
        quality = psnr(imgs.cpu(), x.cpu())
        rows += [
            {
                "image": int(wb.sample().index[i]),
                "variant": name,
                "hamming_to_original": int(dist[i]),
                "cam_correlation": float(corr[i]),
                "cam_entropy": float(spread[i]),
                "psnr_db": None if name == "original" else float(quality[i]),
            }
            for i in range(n)
        ]
    summary = []
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        mean_psnr = "-" if name == "original" else f"{np.mean([r['psnr_db'] for r in mine]):.2f}"
        summary.append(
            (
                name,
                f"{np.mean([r['hamming_to_original'] for r in mine]):.2f}",
                f"{np.mean([r['cam_correlation'] for r in mine]):.3f}",
                f"{np.mean([r['cam_entropy'] for r in mine]):.3f}",
                mean_psnr,
            )
        )
    table = markdown_table(
        [
            "Variant",
            "Hamming to original code",
            "Heatmap correlation with original",
            "Heatmap spread (entropy)",
            "PSNR (dB)",
        ],
        summary,
    )
    md = write_markdown(
        out / "figure4.md",
        f"Figure 4: Grad-CAM heatmaps ({bits} bits)",
        table,
        [
            wb.provenance(),
            f"{n} query images; heatmaps of C(x) . sign(C(x)) at the backbone's last conv layer; grid in figure4.png.",
            "Paper (qualitative): only mosaic moves the heatmap among traditional methods; adversarial "
            "examples disperse it.",
        ],
    )
    _cam_grid(out / "figure4.png", variants, cams)
    return Written(
        "figure4", md, [write_csv(out / "figure4.csv", rows), out / "figure4.md", out / "figure4.png"]
    )


def _cam_grid(path: Path, variants: list[tuple[str, torch.Tensor]], cams: dict[str, torch.Tensor]) -> None:
    plt = pyplot()
    n, cols = variants[0][1].shape[0], len(variants)
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.6 * cols, 3.2 * n), squeeze=False)
    for j, (name, imgs) in enumerate(variants):
        for i in range(n):
            axes[2 * i][j].imshow(imgs[i].detach().cpu().permute(1, 2, 0).numpy())
            axes[2 * i + 1][j].imshow(overlay(imgs[i], cams[name][i]))
        axes[0][j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    save_figure(fig, path)
