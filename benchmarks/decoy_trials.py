"""The decoy rung of `benchmarks.attackers` (``--decoys K --decoy-trials N``): queries with decoys
sent to a real server, then the attacker who must name each query's real label.

N query-split images (balanced over labels, seeded) are each sent as the privacy client sends a
query with ``--decoys K``: K carriers cut from the configured decoy photos (``privacy.decoy_dir``,
default: the photos installed packages bundle), targets and order drawn by ``privacy.decoys``,
protected with the configured protection, encoded as PNG, sent with the configured random gaps.
Protections of several queries share one batch (the attack treats every image of a batch on its
own); each query's uploads are sent together, as the client does. The server's query log is read
back over the admin API, and the rung of ``audit.attackers.decoys`` runs on it. Writes
``decoys.csv`` and ``decoys.md`` (which names the command) beside the ladder's files.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audit.attackers.decoys import DecoyFeatures, DecoyGroup, best_strategy, chosen_on_half, decoy_rung
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.client import connect
from privacy.decoys import decoy_photos, plan_decoys, send_in_order
from privacy.encode import Encoding, encode_verified
from retrieval.core.config import Config
from retrieval.core.imaging import load_image, to_tensor
from retrieval.service.search import open_searcher
from testkit.servers import serve_with_log

QUERIES_PER_BATCH = 4  # 4 queries of K = 4 carriers: one batch of 16 protections


def run_decoys(args, cfg: Config) -> None:
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    sample = _sample(images, splits.query, args.decoy_trials, np.random.default_rng(args.seed))
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_with_log(Path(args.config), Path(tmp)) as (url, new_rows),
    ):
        sent, reals, facts = _send(cfg, url, images, sample, args, Path(tmp))
        rows = new_rows(len(sent) + 100)
    groups = _groups(rows, sent, reals, [tuple(images.label_sets([i])[0]) for i in sample])
    features = DecoyFeatures(open_searcher(cfg), cfg.server.radius)
    read = [features.of(g) for g in tqdm(groups, desc="decoy attacker", unit="query")]
    x, labels = [f for f, _ in read], [lab for _, lab in read]
    rows = decoy_rung(x, labels, groups, args.seed)
    facts["chosen_on_half"] = chosen_on_half(x, labels, groups, args.seed)
    command = "python -m benchmarks.attackers " + " ".join(sys.argv[1:])
    _report(Path(args.out), rows, facts, command, cfg)


def _sample(images, query: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` query-split images, as even over the (first) labels as ``n`` allows, in random order."""
    first = images.labels[query].argmax(axis=1)
    per_label = [rng.permutation(query[first == j]).tolist() for j in range(images.labels.shape[1])]
    out: list[int] = []
    while len(out) < n and any(per_label):
        out += [rows.pop() for rows in per_label if rows][: n - len(out)]
    return [out[i] for i in rng.permutation(len(out))]


def _send(cfg: Config, url: str, images, sample: list[int], args, tmp: Path):
    """Plan, protect (batched) and send every query; returns sha256 -> (query, position sent), the
    real upload's position per query, and facts."""
    protector, server = connect(url, replace(cfg.privacy, seed=args.seed), tmp / "client-cache")
    model, k, encoding = protector.model, args.decoys, Encoding()
    photos = decoy_photos(cfg.privacy.decoy_dir)
    sent: dict[str, tuple[int, int]] = {}
    reals: dict[int, int] = {}
    done_all, real_flags, protect_s = [], [], 0.0
    for start in tqdm(range(0, len(sample), QUERIES_PER_BATCH), desc="queries with decoys", unit="batch"):
        batch = sample[start : start + QUERIES_PER_BATCH]
        private = torch.stack([to_tensor(load_image(images.root / images.paths[i])) for i in batch])
        codes = model.encode(private)
        plans = [plan_decoys(protector.pool, c, k, photos, model.image_size, protector.rng) for c in codes]
        t0 = time.perf_counter()
        done = protector.protect_codes(
            torch.cat([p.carriers for p in plans]),
            np.concatenate([p.targets for p in plans]),
            [label for p in plans for label in p.labels],
        )
        protect_s += time.perf_counter() - t0
        for q, plan in enumerate(plans):
            mine = done[q * k : (q + 1) * k]
            files = [encode_verified(model, p.image, p.target_code, p.distance, encoding).data for p in mine]
            send_in_order(files, server.search, cfg.privacy.decoy_delay_s, protector.rng)
            sent.update({_sha(f): (start + q, pos) for pos, f in enumerate(files)})
            reals[start + q] = plan.real
            done_all += mine
            real_flags += [pos == plan.real for pos in range(k)]
    return sent, reals, _facts(done_all, np.array(real_flags), protect_s, len(photos), k, len(sample))


def _facts(done, real: np.ndarray, protect_s: float, n_photos: int, k: int, n: int) -> dict:
    def stats(rows) -> dict:
        return {
            "reached": float(np.mean([p.distance == 0 for p in rows])),
            "psnr_median": float(np.median([p.psnr for p in rows])),
            "iterations_median": float(np.median([p.iterations for p in rows])),
        }

    return {
        "k": k,
        "queries": n,
        "photos": n_photos,
        "real": stats([p for p, r in zip(done, real) if r]),
        "decoys": stats([p for p, r in zip(done, real) if not r]),
        "seconds_per_protection": protect_s / len(done),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _groups(rows, sent: dict, reals: dict[int, int], truths: list[tuple[str, ...]]) -> list[DecoyGroup]:
    """The logged uploads of each query in arrival (log id) order; checks that all arrived."""
    by_query: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: r.id):
        if r.upload is not None and _sha(r.upload) in sent:
            by_query.setdefault(sent[_sha(r.upload)][0], []).append(r)
    arrived = sum(len(v) for v in by_query.values())
    if arrived != len(sent) or len(by_query) != len(reals):
        raise SystemExit(f"the query log holds {arrived} of the {len(sent)} uploads sent")
    groups = []
    for q, logged in sorted(by_query.items()):
        positions = [sent[_sha(r.upload)][1] for r in logged]  # as sent, in arrival order
        times = tuple(r.created_at.timestamp() for r in logged)
        groups.append(
            DecoyGroup(tuple(r.upload for r in logged), times, truths[q], positions.index(reals[q]))
        )
    return groups


def _report(out: Path, rows, facts: dict, command: str, cfg: Config) -> None:
    best = best_strategy(rows)
    k, n = facts["k"], facts["queries"]
    table = [("strategy", "real label named", "real upload picked")] + [
        (r.name, f"{100 * r.named:.1f} %", f"{100 * r.picked:.1f} %") for r in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table))
    lines = [
        f"best strategy: {best.name}, real label named in {100 * best.named:.1f} % of {n} queries with K = {k} "
        f"(goal: at most {100 / k + 5:.0f} %); chosen on half the queries, scored on the other: "
        f"{100 * facts['chosen_on_half']:.1f} %",
        *(_protection_line(name, facts[name]) for name in ("real", "decoys")),
        f"protection time: {facts['seconds_per_protection']:.2f} s per carrier, batched "
        f"({QUERIES_PER_BATCH * k} per batch; wall time on a CPU shared with other jobs); carriers cut from {facts['photos']} photo(s)",
    ]
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "decoys.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["strategy", "named", "picked", "k", "queries"])
        writer.writerows([r.name, f"{r.named:.4f}", f"{r.picked:.4f}", k, n] for r in rows)
    md = [
        "# Queries with decoys: can the server name the real query's label?",
        f"Written by `{command}` ({cfg.data.dataset}, {cfg.model.backbone} {cfg.model.hash_bits} bits, radius "
        f"{cfg.server.radius}; {n} query-split images, each sent with `--decoys {k}`; the attacker is told which "
        f"{k} uploads form one query and names the label its retrieval gives the upload it picks).",
        "| strategy | real label named | real upload picked |\n|---|---|---|",
    ]
    md[-1] += "\n" + "\n".join(f"| {r.name} | {100 * r.named:.1f} % | {100 * r.picked:.1f} % |" for r in rows)
    md += ["\n".join(f"- {line}" for line in lines)]
    (out / "decoys.md").write_text("\n\n".join(md) + "\n")
    print(f"wrote {out / 'decoys.csv'} and {out / 'decoys.md'}")


def _protection_line(name: str, f: dict) -> str:
    return (
        f"{name} carriers: {100 * f['reached']:.0f} % reached their target code, median PSNR "
        f"{f['psnr_median']:.1f} dB, median {f['iterations_median']:.0f} iterations"
    )
