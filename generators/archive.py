"""Presets (the team's production sizes) and the complete, compressed test-data archive."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from generators.schema import SCHEMA_VERSION
from generators.writers import GENERATOR_VERSION, DatasetInfo, GenerationError

PRESETS: dict[str, tuple[int, ...]] = {
    "10k": (10_000,),
    "50k": (50_000,),
    "170k": (170_000,),
    "production": (10, 100, 1_000, 5_000, 10_000, 50_000, 170_000),
}
ARCHIVE_NAME = "inference-test-data-complete.tar.gz"
MANIFEST_NAME = "manifest.json"


def dataset_manifest(datasets: Sequence[DatasetInfo], **extra: Any) -> dict[str, Any]:
    """files, counts, bytes, sha256, seed, schema and generator versions of a set of datasets."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generator_version": GENERATOR_VERSION,
        "seed": datasets[0].seed if datasets else None,
        "locale": datasets[0].locale if datasets else None,
        "files": [
            {
                "name": info.path.name,
                "format": info.format,
                "candidates": info.count,
                "bytes": info.bytes,
                "sha256": info.sha256,
            }
            for info in datasets
        ],
        "total_candidates": sum(info.count for info in datasets),
        "total_bytes": sum(info.bytes for info in datasets),
        **extra,
    }


def write_archive(
    directory: str | os.PathLike[str],
    datasets: Sequence[DatasetInfo],
    manifest: dict[str, Any],
    compresslevel: int = 6,
) -> tuple[Path, str]:
    """Pack manifest.json and the datasets into directory/ARCHIVE_NAME atomically.

    Returns (path, sha256 of the archive).
    """
    directory = Path(directory)
    target = directory / ARCHIVE_NAME
    manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{ARCHIVE_NAME}.", suffix=".part", dir=directory)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=compresslevel) as tar:
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(manifest_bytes)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(manifest_bytes))
            for dataset in datasets:
                tar.add(dataset.path, arcname=dataset.path.name, recursive=False)
        digest = hashlib.sha256()
        with open(tmp, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GenerationError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target, digest.hexdigest()
