"""Memory cgroup of a process (v2 or v1): usage, effective limit, the kernel's OOM-kill counters.

Containers enforce memory limits through cgroups; reading them tells a sampler how close the target
is to being killed and tells the supervisor whether a SIGKILL was the kernel's OOM killer.
Everything here is best effort: unreadable means None, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded 2**63 - 1


@dataclass(frozen=True)
class MemoryCgroup:
    """The memory cgroup directory of one process and how to read it."""

    path: Path
    version: int
    limit_bytes: int | None  # effective limit (tightest of it and its ancestors); None: unlimited

    @property
    def usage_path(self) -> Path:
        return self.path / ("memory.current" if self.version == 2 else "memory.usage_in_bytes")

    def usage_bytes(self) -> int | None:
        return _read_int(self.usage_path)

    def oom_kills(self) -> int | None:
        """The cgroup's count of processes the kernel OOM-killed in it (None: not offered)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _read_key(self.path / name, "oom_kill")


def memory_cgroup(pid: int | None = None) -> MemoryCgroup | None:
    """The memory cgroup of pid (default: this process), or None when there is none to read."""
    try:
        lines = Path(f"/proc/{pid or 'self'}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2_path = v1_path = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    mounts = _cgroup_mounts()
    if v2_path is not None and "cgroup2" in mounts:
        directory = _resolve(mounts["cgroup2"], v2_path)
        if directory is not None and (directory / "memory.current").exists():
            return MemoryCgroup(directory, 2, _v2_limit(directory, mounts["cgroup2"][0]))
    if v1_path is not None and "memory" in mounts:
        directory = _resolve(mounts["memory"], v1_path)
        if directory is not None and (directory / "memory.usage_in_bytes").exists():
            return MemoryCgroup(directory, 1, _v1_limit(directory))
    return None


def system_oom_kills() -> int | None:
    """Processes the kernel has OOM-killed since boot, machine-wide (/proc/vmstat, Linux 4.13+)."""
    return _read_key(Path("/proc/vmstat"), "oom_kill")


def _cgroup_mounts() -> dict[str, tuple[Path, str]]:
    """{"cgroup2": (mount point, mount root), "memory": (...)} from /proc/self/mountinfo."""
    mounts: dict[str, tuple[Path, str]] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return mounts
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        fstype, options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        root, mount_point = fields[3], fields[4]
        if fstype == "cgroup2":
            mounts.setdefault("cgroup2", (Path(mount_point), root))
        elif fstype == "cgroup" and "memory" in options.split(","):
            mounts.setdefault("memory", (Path(mount_point), root))
    return mounts


def _resolve(mount: tuple[Path, str], cgroup_path: str) -> Path | None:
    """The directory of cgroup_path under its mount; a container sees its own cgroup at the root."""
    mount_point, root = mount
    relative = cgroup_path
    if root != "/" and relative.startswith(root):
        relative = relative[len(root) :]
    candidate = mount_point / relative.lstrip("/")
    if candidate.is_dir():
        return candidate
    return mount_point if mount_point.is_dir() else None


def _v2_limit(directory: Path, mount_point: Path) -> int | None:
    limits = []
    current = directory
    while True:
        value = _read_int(current / "memory.max")
        if value is not None:
            limits.append(value)
        if current == mount_point or current.parent == current:
            break
        current = current.parent
    return min(limits) if limits else None


def _v1_limit(directory: Path) -> int | None:
    limit = _read_key(directory / "memory.stat", "hierarchical_memory_limit")
    if limit is None:
        limit = _read_int(directory / "memory.limit_in_bytes")
    return None if limit is None or limit >= _UNLIMITED else limit


def _read_int(path: Path) -> int | None:
    """An integer file; "max" (v2's no limit) and unreadable files are None."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_key(path: Path, key: str) -> int | None:
    """The value of one "key value" line (memory.events, memory.stat, /proc/vmstat)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    prefix = key.encode() + b" "
    for line in data.splitlines():
        if line.startswith(prefix):
            try:
                return int(line[len(prefix) :])
            except ValueError:
                return None
    return None
