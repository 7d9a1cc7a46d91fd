"""Protect files and folders: what `hashveil protect` does, with progress and skipping.

Outputs keep the input's resolution, upright (EXIF orientation applied) and with no metadata at
all: EXIF, GPS, ICC and text chunks of the original are dropped on purpose. PNG (the default) is
lossless, so the file is exactly the protected image; JPEG and WebP are smaller, and every output
is decoded and hashed again to report whether its code is still at the target (privacy.encode).
The JSON report beside each output names its source by file name only: the path as given can
name a person or a private folder.
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
from privacy.encode import Encoded, Encoding, encode_verified
from retrieval.core.imaging import load_image, to_tensor

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
PROTECTED_MARK = ".protected"  # NAME.protected.png / .jpg / .webp
PROTECTED_SUFFIX = PROTECTED_MARK + ".png"  # the default output's ending


@dataclass(frozen=True)
class FileOutcome:
    source: Path
    output: Path
    protected: Protected | None  # None when skipped or failed
    error: str | None = None
    encoded: Encoded | None = None  # the file written, as a server would hash it
    input_bytes: int = 0


def is_protected_output(path: Path) -> bool:
    return path.stem.endswith(PROTECTED_MARK)


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given plus the images inside folders (recursively), sorted; already-protected
    outputs are never inputs."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(
                p
                for p in sorted(item.rglob("*"))
                if p.suffix.lower() in IMAGE_SUFFIXES and not is_protected_output(p)
            )
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"no such file or folder: {item}")
    return files


def output_path(source: Path, out_dir: Path | None, encoding: Encoding = Encoding()) -> Path:
    folder = out_dir if out_dir is not None else source.parent
    return folder / (source.stem + PROTECTED_MARK + encoding.suffix)


def sidecar_path(output: Path) -> Path:
    """NAME.protected.json beside NAME.protected.EXT."""
    return output.with_suffix(".json")


def protect_files(
    protector: Protector,
    inputs: list[str | Path],
    *,
    mode: str,
    out_dir: Path | None,
    target_label: str | None = None,
    private: Path | None = None,
    overwrite: bool = False,
    encoding: Encoding = Encoding(),
) -> Iterator[FileOutcome]:
    """Protect every image under ``inputs``; yields one outcome per file, as it finishes.

    Files whose output already exists are skipped unless ``overwrite``. A file that cannot
    be read is reported and the batch goes on. Each output is written atomically, in
    ``encoding``, with a JSON sidecar holding the protection report.
    """
    files = expand_inputs(inputs)
    private_image = to_tensor(load_image(private)) if private is not None else None
    for source in tqdm(files, desc=f"protect ({mode})", unit="image"):
        out = output_path(source, out_dir, encoding)
        if out.exists() and not overwrite:
            yield FileOutcome(source, out, None)
            continue
        try:
            image = to_tensor(load_image(source))
        except ValueError as e:
            yield FileOutcome(source, out, None, str(e))
            continue
        result = protector.protect(image, mode, target_label=target_label, private=private_image)
        encoded = encode_verified(
            protector.model, result.image, result.target_code, result.distance, encoding
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(encoded.data)
        os.replace(tmp, out)
        size = source.stat().st_size
        report = {"source": source.name, "source_bytes": size, **result.summary(), **encoded.summary()}
        sidecar_path(out).write_text(json.dumps(report))
        yield FileOutcome(source, out, result, encoded=encoded, input_bytes=size)
