"""Protect files and folders: what `hashveil protect` does, with progress and skipping.

Outputs are PNG (lossless, so the perturbation survives as computed) at the input's
resolution, upright (EXIF orientation applied) and with no metadata at all: EXIF, GPS, ICC
and text chunks of the original are dropped on purpose.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from privacy.client import Protected, Protector
from retrieval.core.imaging import load_image, to_tensor

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
PROTECTED_SUFFIX = ".protected.png"


@dataclass(frozen=True)
class FileOutcome:
    source: Path
    output: Path
    protected: Protected | None  # None when skipped
    error: str | None = None


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given plus the images inside folders (recursively), sorted; already-protected
    outputs are never inputs."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(
                p
                for p in sorted(item.rglob("*"))
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(PROTECTED_SUFFIX)
            )
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"no such file or folder: {item}")
    return files


def output_path(source: Path, out_dir: Path | None) -> Path:
    folder = out_dir if out_dir is not None else source.parent
    return folder / (source.stem + PROTECTED_SUFFIX)


def protect_files(
    protector: Protector,
    inputs: list[str | Path],
    *,
    mode: str,
    out_dir: Path | None,
    target_label: str | None = None,
    private: Path | None = None,
    overwrite: bool = False,
) -> Iterator[FileOutcome]:
    """Protect every image under ``inputs``; yields one outcome per file, as it finishes.

    Files whose output already exists are skipped unless ``overwrite``. A file that cannot
    be read is reported and the batch goes on. Each output is written atomically, with a
    JSON sidecar holding the protection report.
    """
    files = expand_inputs(inputs)
    private_image = to_tensor(load_image(private)) if private is not None else None
    for source in tqdm(files, desc=f"protect ({mode})", unit="image"):
        out = output_path(source, out_dir)
        if out.exists() and not overwrite:
            yield FileOutcome(source, out, None)
            continue
        try:
            image = to_tensor(load_image(source))
        except ValueError as e:
            yield FileOutcome(source, out, None, str(e))
            continue
        result = protector.protect(image, mode, target_label=target_label, private=private_image)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(result.png())
        os.replace(tmp, out)
        out.with_suffix(".json").write_text(json.dumps({"source": str(source), **result.summary()}))
        yield FileOutcome(source, out, result)
