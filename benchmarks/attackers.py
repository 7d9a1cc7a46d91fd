"""The attacker ladder against a real server: plain and protected queries over HTTP, then every
attacker a server holding the query log can be.

Starts `hashveil serve` (a child process) on the configured demo with an admin token, sends N
query-split images per label as they are and, through the privacy client, protected in each
protection variant, reads the query log back over the admin API (uploads as the server received
them), and runs the ladder of `audit.attackers` on the logged uploads. Prints one table; writes
`docs/results/attackers.csv`, `docs/results/attackers.md` (which names this command) and
`webui/static/attackers.json` (what the privacy client shows beside its own estimate).

Everything random is seeded (`--seed`, printed): the images, the users' protections (seed S)
and the knowing attacker's own protections (seed S + 1).

    python -m benchmarks.attackers [--per-label 6] [--seed 0] [--protection semantic ...]
    python -m benchmarks.attackers --decoys 4 --decoy-trials 200 [--seed 0]   (the decoy rung only:
        benchmarks/decoy_trials.py; writes docs/results/decoys.csv and decoys.md)

A protection variant is a mode plus privacy settings, named in PROTECTIONS: add one there (e.g.
a robust mode) and pass `--protection NAME` to measure it on the same ladder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audit.attackers import ATTACKERS, LadderSettings, build_ladder, parse_names
from audit.attackers.training import SecondModelSettings
from audit.ladder import Upload, run_ladder, summarise
from audit.ladder_report import csv_rows, format_table, markdown, protects_from, summary_from_json, to_json
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.client import Protector, connect
from privacy.presets import STRENGTHS
from privacy.surrogate import cached_surrogate
from retrieval.core.config import Config, load_config
from retrieval.core.imaging import load_image, to_tensor
from retrieval.service.search import open_searcher
from testkit.servers import serve_with_log

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Protection:
    """A client setting to measure: the mode and the privacy keys it changes."""

    mode: str
    privacy: dict = field(default_factory=dict)


PROTECTIONS: dict[str, Protection] = {
    "semantic": Protection("semantic"),
    "untargeted": Protection("untargeted"),
    "carrier": Protection("carrier"),
    "semantic-high": Protection("semantic", STRENGTHS["high"]),
    "semantic-robust": Protection("semantic", STRENGTHS["robust"]),
    # robust protection with the checks it had before JPEG 60 and WebP 80 (README, Robust protection)
    "semantic-robust-former": Protection(
        "semantic",
        {**STRENGTHS["robust"], "robust_checks": ("jpeg90", "jpeg75", "resize0.5"), "step_size": 8 / 255},
    ),
    "semantic-jitter1": Protection("semantic", {"target_jitter": 1}),
    "semantic-jitter2": Protection("semantic", {"target_jitter": 2}),
    "semantic-ensemble": Protection("semantic", {"ensemble": True}),
}
DEFAULT_PROTECTIONS = ("semantic", "untargeted", "carrier", "semantic-robust")
BATCH = 16


def main() -> None:
    args = _args()
    cfg = load_config(args.config)
    if args.report_from:  # re-render the reports of a finished run, e.g. after a wording change
        saved = json.loads(Path(args.report_from).read_text())
        meta = {k: saved[k] for k in ("command", "per_label", "seed")}
        _report(args, cfg, summary_from_json(saved), saved["facts"], meta)
        return
    if args.decoys:  # the decoy rung instead of the ladder: its own queries, its own report
        from benchmarks.decoy_trials import run_decoys

        run_decoys(args, cfg)
        return
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    rng = np.random.default_rng(args.seed)
    sample, carriers = _sample(images, splits.query, args.per_label, rng)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_with_log(Path(args.config), Path(tmp)) as (url, new_rows),
    ):
        sent, facts = _send_all(cfg, url, images, sample, carriers, args, Path(tmp))
        rows = new_rows(len(sent) + 100)
    uploads = [
        Upload(r.id, r.upload, *sent[_sha(r.upload)]) for r in rows if r.upload and _sha(r.upload) in sent
    ]
    if len(uploads) != len(rows) or {_sha(u.data) for u in uploads} != set(sent):
        raise SystemExit(
            f"the query log holds {len(uploads)} of the {len(sent)} uploads sent ({len(rows)} new rows)"
        )
    searcher = open_searcher(cfg)
    settings = LadderSettings(
        names=args.attackers,
        radius=cfg.server.radius,
        pixel_size=args.pixel_size,
        second_model=SecondModelSettings(epochs=args.second_model_epochs, seed=args.seed),
        inversion_per_label=args.inversion_per_label,
        privacy=cfg.privacy,
        seed=args.seed + 1,
    )
    attackers = build_ladder(searcher, settings, cfg.work_dir / "attackers")
    entries = run_ladder(attackers, sorted(uploads, key=lambda u: u.id))
    summary = summarise(entries, attackers)
    command = "python -m benchmarks.attackers " + " ".join(sys.argv[1:])
    _report(args, cfg, summary, facts, {"command": command, "per_label": args.per_label, "seed": args.seed})


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.toml"))
    ap.add_argument("--per-label", type=int, default=6, help="query images per label and group")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protection", action="append", choices=sorted(PROTECTIONS), help="repeatable")
    ap.add_argument("--attackers", default="all", help=f"'all' or a comma list of {', '.join(ATTACKERS)}")
    ap.add_argument("--inversion-per-label", type=int, default=10, help="the knowing attacker's own images")
    ap.add_argument("--second-model-epochs", type=int, default=10)
    ap.add_argument("--pixel-size", type=int, default=28)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="folder of attackers.csv/.md")
    ap.add_argument("--client-json", default=str(ROOT / "webui" / "static" / "attackers.json"))
    ap.add_argument("--report-from", help="only rewrite the reports from a saved attackers.json")
    ap.add_argument("--decoys", type=int, help="run the decoy rung instead: queries sent with --decoys K")
    ap.add_argument("--decoy-trials", type=int, default=200, help="queries with decoys to send (--decoys)")
    ap.add_argument("--threads", type=int, help="torch threads (1 avoids oversubscription on a shared CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.attackers = parse_names(args.attackers)
    args.protection = tuple(args.protection or DEFAULT_PROTECTIONS)
    return args


def _sample(images, query: np.ndarray, per_label: int, rng: np.random.Generator):
    """``per_label`` query-split images per label (first label), and a carrier of another label for each."""
    first = images.labels[query].argmax(axis=1)
    sample: list[int] = []
    for j in range(images.labels.shape[1]):
        rows = query[(first == j) & images.labels[query].any(axis=1)]
        sample += rng.choice(rows, size=min(per_label, len(rows)), replace=False).tolist()
    rest = np.setdiff1d(query, sample)
    carriers = []
    for i in sample:
        others = rest[~images.labels[rest][:, images.labels[i].argmax()].astype(bool)]
        carriers.append(int(rng.choice(others)))
    return sample, carriers


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _send_all(cfg: Config, url: str, images, sample, carriers, args, tmp: Path):
    """Send the plain images and every protection variant; returns sha256 -> (group, truth) and facts."""
    privacy = replace(cfg.privacy, seed=args.seed)
    protector, server = connect(url, privacy, tmp / "client-cache", cfg.model.device)
    load = lambda i: to_tensor(load_image(images.root / images.paths[i]))  # noqa: E731
    truth = [tuple(images.label_sets([i])[0]) for i in sample]
    sent: dict[str, tuple[str, tuple[str, ...]]] = {}
    facts: dict[str, dict] = {}
    codes = set()
    for i, t in zip(sample, truth):
        data = (images.root / images.paths[i]).read_bytes()
        codes.add(server.search(data)["code"])
        sent[_sha(data)] = ("plain", t)
    facts["plain"] = {"n": len(sample), "distinct_codes": len(codes)}
    for name in tqdm(args.protection, desc="protect and send", unit="variant"):
        variant = PROTECTIONS[name]
        started = time.perf_counter()
        surrogate = _surrogate(protector, server, tmp) if variant.privacy.get("ensemble") else None
        trained = time.perf_counter() - started
        p = Protector(
            protector.model, replace(privacy, **variant.privacy), protector.pool, protector.rng, surrogate
        )
        started, done = time.perf_counter(), []
        for start in range(0, len(sample), BATCH):
            rows = range(start, min(start + BATCH, len(sample)))
            private = torch.stack([load(sample[r]) for r in rows]) if variant.mode == "carrier" else None
            x = torch.stack([load(carriers[r] if variant.mode == "carrier" else sample[r]) for r in rows])
            done += p.protect_batch(x, variant.mode, private=private)
        seconds = (time.perf_counter() - started) / len(done)
        for q, t in zip(done, truth):
            data = q.png()
            server.search(data)
            sent[_sha(data)] = (name, t)
        facts[name] = {**_facts(done, truth), "seconds_per_image": seconds}
        if surrogate is not None:
            facts[name]["surrogate_train_s"] = trained
            facts[name]["surrogate_reached"] = float(np.mean([q.surrogate_distance == 0 for q in done]))
    return sent, facts


def _surrogate(protector: Protector, server, tmp: Path):
    """The client's surrogate (ensemble protection), trained on the pool's images in this run's cache."""
    sha = server.get_json("/api/model")["sha256"]
    folder = tmp / "client-cache" / sha
    return cached_surrogate(protector.pool, server.image, protector.model.hash_bits, folder)


def _facts(done, truth) -> dict:
    """Reached share, distinct codes, PSNR and (semantic) the spread of target labels."""
    targets = Counter(q.target_label for q in done if q.target_label)
    return {
        "n": len(done),
        "reached": float(np.mean([q.distance == 0 for q in done])),
        "distinct_codes": len({q.code.tobytes() for q in done}),
        "distinct_targets": len({q.target_code.tobytes() for q in done}),
        "psnr_median": float(np.median([q.psnr for q in done])),
        "target_labels": dict(sorted(targets.items())),
        "target_is_true_label": int(sum(q.target_label in t for q, t in zip(done, truth))),
    }


def _report(args, cfg: Config, summary, facts: dict, meta: dict) -> None:
    command = meta["command"]
    table = format_table(summary)
    lines = [_fact_line(name, f) for name, f in facts.items()]
    print(table)
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "attackers.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows(summary)[0]))
        writer.writeheader()
        writer.writerows(csv_rows(summary))
    header = (
        f"Written by `{command}` ({cfg.data.dataset}, {cfg.model.backbone} {cfg.model.hash_bits} bits, "
        f"radius {cfg.server.radius}; {meta['per_label']} query-split images per label in each group, seed "
        f"{meta['seed']}; share of uploads whose true label each attacker inferred; detector AUC: plain "
        "uploads against that group)."
    )
    (out / "attackers.md").write_text(
        "\n\n".join(
            [
                "# The attacker ladder",
                header,
                markdown(summary),
                "## What each mode protects you from",
                protects_from(summary),
                "## The protections sent",
                "\n".join(f"- {line}" for line in lines),
            ]
        )
        + "\n"
    )
    extra = {**meta, "dataset": cfg.data.dataset, "facts": facts}
    Path(args.client_json).write_text(json.dumps(to_json(summary, **extra), indent=1) + "\n")
    print(f"wrote {out / 'attackers.csv'}, {out / 'attackers.md'} and {args.client_json}")


def _fact_line(name: str, f: dict) -> str:
    if name == "plain":
        return f"plain: {f['n']} uploads, {f['distinct_codes']} distinct codes"
    spread = ", ".join(f"{k} {v}" for k, v in f["target_labels"].items())
    return (
        f"{name}: {f['n']} protections, {f['reached']:.0%} reached their target code, {f['distinct_codes']} "
        f"distinct codes sent ({f['distinct_targets']} distinct target codes), median PSNR {f['psnr_median']:.1f} dB"
        + (f", {f['seconds_per_image']:.2f} s per image" if "seconds_per_image" in f else "")
        + (
            f"; surrogate trained in {f['surrogate_train_s']:.0f} s, its code at its target in "
            f"{f['surrogate_reached']:.0%}"
            if "surrogate_train_s" in f
            else ""
        )
        + (f"; target labels: {spread}; target = a true label: {f['target_is_true_label']}" if spread else "")
    )


if __name__ == "__main__":
    main()
