"""The dataset a scale run sends: generated once per (n, seed), reused by sha256, or a user's file.

Generated files live in a cache directory beside an `.info.json` that records their sha256, size and
mtime; a file whose size or mtime moved is hashed again, and regenerated unless the hash matches.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import generators
from harness.driver.checkpoint import dataset_ids
from harness.errors import UserError
from harness.rundir import write_json_atomic

BATCH_FORMAT = "openai-batch"


@dataclass(frozen=True)
class Dataset:
    """A dataset file with its identity: what a manifest records and a resume re-checks."""

    path: Path
    sha256: str
    format: str
    n: int

    def manifest(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "format": self.format, "n": self.n}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def generated(
    n: int,
    seed: int,
    cache_dir: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[Dataset, bool]:
    """The cached OpenAI Batch file of n candidates (generated if missing); reused or not."""
    path = Path(cache_dir).resolve() / f"candidates-batch-{n}-seed{seed}.openai-batch.jsonl"
    info_path = path.with_name(path.name + ".info.json")
    cached = _reusable(path, info_path)
    if cached is not None:
        return cached, True
    try:
        info = generators.write_dataset(
            path,
            n,
            fmt=BATCH_FORMAT,
            seed=seed,
            workers=min(os.cpu_count() or 1, 8) if n >= 2000 else 1,
            progress=progress,
        )
    except generators.GenerationError as exc:
        raise UserError(str(exc)) from None
    dataset = Dataset(path, info.sha256, BATCH_FORMAT, n)
    stat = path.stat()
    write_json_atomic(
        info_path,
        {
            **dataset.manifest(),
            "seed": seed,
            "generator_version": generators.GENERATOR_VERSION,
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        },
    )
    return dataset, False


def _reusable(path: Path, info_path: Path) -> Dataset | None:
    try:
        info = orjson.loads(info_path.read_bytes())
        stat = path.stat()
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if info.get("generator_version") != generators.GENERATOR_VERSION:
        return None
    dataset = Dataset(path, info["sha256"], info["format"], info["n"])
    if (stat.st_size, stat.st_mtime_ns) == (info.get("bytes"), info.get("mtime_ns")):
        return dataset
    if stat.st_size == info.get("bytes") and sha256_file(path) == info["sha256"]:
        write_json_atomic(info_path, {**info, "mtime_ns": stat.st_mtime_ns})
        return dataset  # touched, not changed
    return None


def from_file(path: str | os.PathLike[str], *, limit: int | None = None) -> Dataset:
    """A user's dataset file (any format `harness gen` writes, also .gz), counted and hashed.

    With a limit, counting stops after `limit` requests (n is then at most limit), so a
    `--limit 2000` run of a 1.4 GB document reads only the records it sends.
    """
    path = Path(path)
    if generators.split_member(path)[1] is not None:
        raise UserError(
            f"--dataset {path}: extract the member first (tar -xzf), so that --resume can "
            "check its sha256; harness validate reads archive members directly"
        )
    try:
        fmt = generators.detect_format(path)
        ids = dataset_ids(path) if fmt == BATCH_FORMAT else generators.iter_requests(path)
        n = sum(1 for _ in itertools.islice(ids, limit))
    except generators.DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None
    except (orjson.JSONDecodeError, KeyError) as exc:
        raise UserError(
            f"--dataset {path}: not a dataset file ({exc}); make one with harness gen"
        ) from None
    if n == 0:
        raise UserError(f"--dataset {path} holds no requests; make one with harness gen --n N")
    return Dataset(path.resolve(), sha256_file(path), fmt, n)


def as_batch_file(dataset: Dataset, cache_dir: str | os.PathLike[str]) -> Dataset:
    """The dataset as an OpenAI Batch file (what the Batch API takes), converted once, cached."""
    if dataset.format == BATCH_FORMAT:
        return dataset
    path = Path(cache_dir) / f"converted-{dataset.sha256[:16]}.openai-batch.jsonl"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            for custom_id, body in generators.iter_requests(dataset.path):
                out.write(
                    orjson.dumps(
                        {
                            "custom_id": custom_id,
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": body,
                        }
                    )
                    + b"\n"
                )
        os.replace(tmp, path)
    return Dataset(path, sha256_file(path), BATCH_FORMAT, dataset.n)


def check_unchanged(recorded: dict[str, Any]) -> Dataset:
    """The dataset a run recorded in its manifest, if its bytes are unchanged (for --resume)."""
    path = Path(recorded["path"])
    if not path.exists():
        raise UserError(
            f"the run's dataset {path} is gone; restore it (sha256 {recorded['sha256'][:16]}...) "
            "to resume, or start a new run"
        )
    digest = sha256_file(path)
    if digest != recorded["sha256"]:
        raise UserError(
            f"the run's dataset {path} changed since the run started (sha256 {digest[:16]}... "
            f"!= {recorded['sha256'][:16]}...); restore it to resume, or start a new run"
        )
    return Dataset(path, digest, recorded["format"], int(recorded["n"]))
