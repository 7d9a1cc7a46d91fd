"""Speed of the paper's configuration: VGG-11 DPSH at 224 px, on the CPU or a GPU.

Times, per image, the three things a deployment pays for: hashing (forward), a DPSH training
step (forward + backward + Adam) and protection (RNM PGD steps, forward + backward on the
input). Pixels are random: speed does not depend on content, and nothing downloads
(--pretrained names a local torchvision VGG-11 state_dict if you want its weights loaded).

    python -m benchmarks.paper_config [--device auto] [--bits 32] [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from index_builder.dpsh import dpsh_loss
from privacy.attacks import make_attack
from retrieval.core.config import ModelConfig
from retrieval.core.model import HashNet, resolve_device


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32, help="images per batch for every stage")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps timed for protection")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pretrained", default="", help="local torchvision vgg11 state_dict (optional)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="vgg11",
        hash_bits=args.bits,
        image_size=224,
        freeze_backbone=False,
        pretrained=args.pretrained,
    )
    model = HashNet(cfg, load_pretrained=bool(args.pretrained)).to(device)
    x = torch.rand(args.batch, 3, 224, 224, device=device)
    print(
        f"VGG-11 DPSH, {args.bits} bits, 224 px, batch {args.batch}, on {device} ({name}), "
        f"torch {torch.__version__}"
    )

    model.eval()
    hash_s = timed(lambda: model.encode(x), device, args.repeats)

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    bank = torch.sign(torch.randn(512, args.bits, device=device))
    similar = (torch.rand(args.batch, 512, device=device) < 0.2).float()

    def train_step() -> None:
        opt.zero_grad()
        dpsh_loss(model(x), bank, similar, eta=0.1).backward()
        opt.step()

    train_s = timed(train_step, device, args.repeats)

    model.eval()
    attack = make_attack(
        "rnm", model, eps=8 / 255, steps=args.steps, step_size=8 / 255, step_rule="scaled", early_stop=False
    )
    targets = np.packbits(np.random.default_rng(0).integers(0, 2, (args.batch, args.bits)) > 0, axis=1)
    protect_s = timed(lambda: attack(x, targets), device, max(1, args.repeats - 1))

    per = args.batch
    print(f"hashing:    {per / hash_s:8.1f} images/s  ({1000 * hash_s / per:.1f} ms per image)")
    print(f"training:   {per / train_s:8.1f} images/s  ({1000 * train_s / per:.1f} ms per image per step)")
    per_step = protect_s / per / args.steps
    print(
        f"protection: {1000 * per_step:8.2f} ms per image per PGD step; "
        f"{per_step * 10:.2f} s per image for 10 steps, {per_step * 100:.2f} s for 100 (privacy.steps)"
    )


if __name__ == "__main__":
    main()
