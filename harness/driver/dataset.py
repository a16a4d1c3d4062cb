"""The dataset a scale run sends: generated once per (n, seed), reused by sha256, or a user's file.

Generated files live in a cache directory beside an `.info.json` that records their sha256, size and
mtime; a file whose size or mtime moved is hashed again, and regenerated unless the hash matches.

A user's file is hashed on a thread while the run sends (`HashInBackground`), not before its first
request: hashing 1.4 GB takes seconds. Its fingerprint (size, mtime and the sha256 of sampled
blocks, a millisecond's work) is recorded at once, so a run killed before the hash was done still
resumes only against the same file, checked by the fingerprint.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import generators
from harness.driver.payloads import dataset_ids
from harness.errors import UserError
from harness.rundir import write_json_atomic

BATCH_FORMAT = "openai-batch"
_SAMPLED_BLOCKS = 16  # blocks the fingerprint hashes, evenly spread, the first and last included
_SAMPLED_BLOCK_BYTES = 1 << 16


@dataclass(frozen=True)
class Dataset:
    """A dataset file with its identity: what a manifest records and a resume re-checks."""

    path: Path
    sha256: str | None  # None until hashed (a user's file is hashed while the run sends)
    format: str
    n: int
    fingerprint: dict[str, Any] | None = None  # size, mtime and sampled blocks: see fingerprint()

    def manifest(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format": self.format,
            "n": self.n,
            **(self.fingerprint or {}),
        }


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a file without reading it all: its size, its mtime, and the sha256 of
    16 blocks of 64 KiB spread evenly over it (the first and the last among them)."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        size = stat.st_size
        digest = hashlib.sha256(str(size).encode())
        last = max(0, size - _SAMPLED_BLOCK_BYTES)
        for offset in sorted({last * i // (_SAMPLED_BLOCKS - 1) for i in range(_SAMPLED_BLOCKS)}):
            digest.update(os.pread(handle.fileno(), _SAMPLED_BLOCK_BYTES, offset))
    return {"bytes": size, "mtime_ns": stat.st_mtime_ns, "sampled_sha256": digest.hexdigest()}


class HashInBackground:
    """The sha256 of a dataset, computed on a thread while the run goes on; on_done(digest) is
    called on that thread when it is ready (hashlib releases the GIL, so sending goes on)."""

    def __init__(self, dataset: Dataset, on_done: Callable[[str], None]) -> None:
        self.dataset = dataset
        self.sha256: str | None = None
        self.error: OSError | None = None
        self._on_done = on_done
        self._thread = threading.Thread(target=self._run, name="harness-dataset-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.sha256 = sha256_file(self.dataset.path)
        except OSError as exc:  # the file went away: the resume check says so
            self.error = exc
            return
        self._on_done(self.sha256)

    def wait(self, timeout: float | None = None) -> str | None:
        """The digest once done (None when the file could not be read, or on timeout)."""
        self._thread.join(timeout)
        return self.sha256


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


def dataset_format(path: str | os.PathLike[str]) -> str:
    """The format of a user's dataset file, from a bounded prefix; UserError when it is none we
    read (a check that costs milliseconds, before anything starts)."""
    path = Path(path)
    if generators.split_member(path)[1] is not None:
        raise UserError(
            f"--dataset {path}: extract the member first (tar -xzf), so that --resume can "
            "check its sha256; harness validate reads archive members directly"
        )
    try:
        return generators.detect_format(path)
    except generators.DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None


def from_file(
    path: str | os.PathLike[str], *, limit: int | None = None, hashed: bool = True
) -> Dataset:
    """A user's dataset file (any format `harness gen` writes, also .gz), counted, fingerprinted
    and, unless hashed=False (the caller hashes it later, e.g. with HashInBackground), hashed.

    With a limit, counting stops after `limit` requests (n is then at most limit), so a
    `--limit 2000` run of a 1.4 GB document reads only the records it sends.
    """
    path = Path(path)
    fmt = dataset_format(path)
    try:
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
    digest = sha256_file(path) if hashed else None
    return Dataset(path.resolve(), digest, fmt, n, fingerprint(path))


def as_batch_file(dataset: Dataset, cache_dir: str | os.PathLike[str]) -> Dataset:
    """The dataset as an OpenAI Batch file (what the Batch API takes), converted once, cached."""
    if dataset.format == BATCH_FORMAT:
        return dataset
    digest = dataset.sha256 or sha256_file(dataset.path)  # the cache key: the bytes converted
    path = Path(cache_dir) / f"converted-{digest[:16]}.openai-batch.jsonl"
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
    return Dataset(path, None, BATCH_FORMAT, dataset.n)  # a cache file: only its path is used


def check_unchanged(recorded: dict[str, Any]) -> Dataset:
    """The dataset a run recorded in its manifest, if its bytes are unchanged (for --resume).

    By its sha256; when the run stopped before its hash was done, by its fingerprint (size,
    mtime, sampled blocks), and the Dataset comes back with sha256 None for the caller to say so
    and hash it now.
    """
    path = Path(recorded["path"])
    identity = (
        f"sha256 {recorded['sha256'][:16]}..."
        if recorded.get("sha256")
        else f"{recorded.get('bytes', '?')} bytes"
    )
    if not path.exists():
        raise UserError(
            f"the run's dataset {path} is gone; restore it ({identity}) to resume, or start a "
            "new run"
        )
    now = fingerprint(path)
    if not recorded.get("sha256"):
        fields = ("bytes", "mtime_ns", "sampled_sha256")
        if "sampled_sha256" not in recorded or any(now[k] != recorded.get(k) for k in fields):
            raise UserError(
                f"the run's dataset {path} changed since the run started (its size, mtime or "
                f"sampled content differ; the run stopped before its full sha256 was recorded); "
                "restore it to resume, or start a new run"
            )
        return Dataset(path, None, recorded["format"], int(recorded["n"]), now)
    digest = sha256_file(path)
    if digest != recorded["sha256"]:
        raise UserError(
            f"the run's dataset {path} changed since the run started (sha256 {digest[:16]}... "
            f"!= {recorded['sha256'][:16]}...); restore it to resume, or start a new run"
        )
    return Dataset(path, digest, recorded["format"], int(recorded["n"]), now)
