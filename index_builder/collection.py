"""Which of the files named to ``hashveil add`` are new images of an indexed collection.

A file qualifies as it would for a build: it lies inside the indexed folder and the folder's
layout reads it as an image with labels (a labelled collection) or as an image (a flat one).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from index_builder.folders import is_image_file, scan_images
from index_builder.imagelist import ImageList

NOT_IN_LAYOUT = "not read by the layout (no labels.csv row, no class folder)"


def check_new_images(
    images: ImageList, paths: list[str | Path], indexed: dict[str, int]
) -> tuple[list[int], list[tuple[int, str]], dict[str, int]]:
    """Positions in ``images`` of the new images among ``paths`` (files, or folders searched
    recursively), the named images already indexed (id, path), and counts of the files skipped
    inside folders. A file named on its own that does not qualify is an error that says why.

    ``indexed`` maps the stored paths (relative to the root) to their ids.
    """
    root = images.root.resolve()
    position = {p: i for i, p in enumerate(images.paths)}
    new: dict[int, None] = {}  # ordered set
    already: list[tuple[int, str]] = []
    skipped: Counter = Counter()
    for given in map(Path, paths):
        if given.is_dir():
            found = scan_images(given)
            skipped.update(found.skipped)
            candidates, strict = [given / rel for rel in found.paths], False
        elif given.is_file():
            candidates, strict = [given], True
        else:
            raise ValueError(f"no such file or folder: {given}")
        for path in candidates:
            rel = _relative(path, root)
            if rel in indexed:
                already.append((indexed[rel], rel))
            elif rel in position:
                new[position[rel]] = None
            elif strict:
                why = is_image_file(path, root) or NOT_IN_LAYOUT
                raise ValueError(f"{given} cannot be added: {why}")
            else:
                skipped[NOT_IN_LAYOUT] += 1
    return list(new), already, dict(skipped)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the indexed folder, as the store keeps it; ValueError when outside."""
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix()
    raise ValueError(f"{path} is not inside the indexed folder {root}: put it there first, then add it")
