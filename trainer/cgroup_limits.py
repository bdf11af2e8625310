"""CPU and memory load relative to the container's cgroup limits.

In a container the node's figures mislead the load gate: a pod limited to one
core and 2 GiB on a 32-core node is full long before ``psutil`` says so. This
module finds the limits that apply to this process (cgroup v2 ``cpu.max`` and
``memory.max``; cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` and
``memory.limit_in_bytes``), keeps each one only when it is tighter than the
node, and reads the load as a percentage of what is applied.

The parsing functions are pure (text in, numbers out); ``find_cgroups``
resolves the process's cgroup directories from ``/proc/self/cgroup`` and
``/proc/self/mountinfo`` under a root path (``/`` in production, a fake tree
in tests); ``LoadReader`` is the small stateful reader the sampler calls.

A limit set on an ancestor cgroup (a pod above its container) binds too, so
every level from the process's cgroup up to the mount's root is read and the
tightest wins; usage is read at the level whose limit applies.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping

import psutil

log = logging.getLogger(__name__)

# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX rounded to
# the page size, 9223372036854771712 on x86-64); anything this big is unlimited.
V1_UNLIMITED_BYTES = 1 << 60


class LimitSource(enum.Enum):
    """Where an applied limit comes from."""

    NODE = "node"
    CGROUP_V1 = "cgroup v1"
    CGROUP_V2 = "cgroup v2"


@dataclasses.dataclass(frozen=True)
class LoadLimits:
    """The CPU and memory the load percentages are relative to."""

    cpu_cores: float
    cpu_source: LimitSource
    memory_bytes: int
    memory_source: LimitSource

    def describe(self) -> str:
        return (
            f"cpu {self.cpu_cores:g} cores ({self.cpu_source.value}), "
            f"memory {self.memory_bytes / 2**30:.2f} GiB ({self.memory_source.value})"
        )


@dataclasses.dataclass(frozen=True)
class Mount:
    """One cgroup mount from /proc/self/mountinfo."""

    root: str  # the cgroup path mounted here ("/" unless the mount is of a sub-tree)
    mount_point: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # super options: the v1 controllers ("cpu", "cpuacct", "memory", ...)


@dataclasses.dataclass(frozen=True)
class CgroupDirs:
    """The directories of this process's cgroups, each as a chain from the
    process's own cgroup up to its mount point (leaf first); empty where the
    controller is not mounted."""

    v2: tuple[pathlib.Path, ...] = ()
    v1_cpu: tuple[pathlib.Path, ...] = ()
    v1_cpuacct: tuple[pathlib.Path, ...] = ()
    v1_memory: tuple[pathlib.Path, ...] = ()


# -- pure parsing ----------------------------------------------------------------


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> cgroup path; the v2 entry
    (``0::/path``) is under the key ``""``. ``name=systemd`` style entries keep
    their name."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
            continue
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep < 5 or len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(fields[sep + 3].split(","))
        mounts.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fstype, options))
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` ("QUOTA PERIOD", QUOTA may be "max") in cores; None when unlimited."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota = int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100_000
    return quota / period if quota > 0 and period > 0 else None


def parse_v1_cpu_quota(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in cores; None when
    unlimited (quota -1)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def parse_memory_max(text: str) -> int | None:
    """cgroup v2 ``memory.max`` in bytes; None for "max"."""
    value = text.strip()
    return None if value == "max" or not value else int(value)


def parse_v1_memory_limit(text: str) -> int | None:
    """cgroup v1 ``memory.limit_in_bytes``; None for its huge "unlimited" value."""
    value = int(text.strip())
    return None if value <= 0 or value >= V1_UNLIMITED_BYTES else value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A "key value" per line file (``cpu.stat``, ``memory.stat``)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def working_set(usage_bytes: int, stat: Mapping[str, int], version: int) -> int:
    """Memory in use less the inactive file cache the kernel can drop at once
    (what kubelet calls the working set): cache must not look like load."""
    inactive = stat.get("inactive_file" if version == 2 else "total_inactive_file", 0)
    return max(0, usage_bytes - inactive)


def _chain(mount: Mount, cgroup_path: str, root: pathlib.Path) -> tuple[pathlib.Path, ...]:
    """The directories from the cgroup ``cgroup_path`` up to ``mount``'s mount point."""
    base = root / mount.mount_point.lstrip("/")
    mount_root = mount.root.rstrip("/")
    if mount.root == "/":
        relative = cgroup_path.strip("/")
    elif cgroup_path == mount_root or cgroup_path.startswith(mount_root + "/"):
        # A mount of a sub-tree (a container without a cgroup namespace):
        # the process's path includes the mounted root.
        relative = cgroup_path[len(mount_root) :].strip("/")
    else:
        relative = ""  # outside the mounted tree: the mount point is all we see
    if ".." in relative.split("/"):
        relative = ""
    parts = [p for p in relative.split("/") if p]
    dirs = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return tuple(d for d in dirs if d.is_dir())


def find_cgroups(proc_cgroup: str, mountinfo: str, root: pathlib.Path = pathlib.Path("/")) -> CgroupDirs:
    """This process's cgroup directories (under ``root``) for v2 and the v1 controllers used here."""
    paths = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    found: dict[str, tuple[pathlib.Path, ...]] = {}
    for mount in mounts:
        if mount.fstype == "cgroup2" and "" in paths and "v2" not in found:
            found["v2"] = _chain(mount, paths[""], root)
        elif mount.fstype == "cgroup":
            for controller in ("cpu", "cpuacct", "memory"):
                if controller in mount.options and controller in paths and controller not in found:
                    found[controller] = _chain(mount, paths[controller], root)
    return CgroupDirs(
        v2=found.get("v2", ()),
        v1_cpu=found.get("cpu", ()),
        v1_cpuacct=found.get("cpuacct", ()),
        v1_memory=found.get("memory", ()),
    )


# -- reading a tree ----------------------------------------------------------------


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _tightest(
    dirs: Iterable[pathlib.Path], limit_of: Callable[[pathlib.Path], float | int | None]
) -> tuple[float | int, pathlib.Path] | None:
    """The smallest limit along a chain and the directory that sets it."""
    best = None
    for d in dirs:
        try:
            value = limit_of(d)
        except ValueError:
            value = None
        if value is not None and (best is None or value < best[0]):
            best = (value, d)
    return best


def _v2_cpu(d: pathlib.Path) -> float | None:
    text = _read(d / "cpu.max")
    return parse_cpu_max(text) if text is not None else None


def _v1_cpu(d: pathlib.Path) -> float | None:
    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    return parse_v1_cpu_quota(quota, period) if quota is not None and period is not None else None


def _v2_memory(d: pathlib.Path) -> int | None:
    text = _read(d / "memory.max")
    return parse_memory_max(text) if text is not None else None


def _v1_memory(d: pathlib.Path) -> int | None:
    text = _read(d / "memory.limit_in_bytes")
    return parse_v1_memory_limit(text) if text is not None else None


@dataclasses.dataclass(frozen=True)
class _CpuSource:
    source: LimitSource
    cores: float
    usage_file: pathlib.Path  # cpu.stat (v2, usage_usec) or cpuacct.usage (v1, ns)

    def usage_seconds(self) -> float | None:
        text = _read(self.usage_file)
        if text is None:
            return None
        if self.source is LimitSource.CGROUP_V2:
            usec = parse_flat_keyed(text).get("usage_usec")
            return usec / 1e6 if usec is not None else None
        try:
            return int(text.strip()) / 1e9
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True)
class _MemorySource:
    source: LimitSource
    limit: int
    directory: pathlib.Path

    def used_bytes(self) -> int | None:
        v2 = self.source is LimitSource.CGROUP_V2
        text = _read(self.directory / ("memory.current" if v2 else "memory.usage_in_bytes"))
        if text is None:
            return None
        stat = parse_flat_keyed(_read(self.directory / "memory.stat") or "")
        return working_set(int(text.strip()), stat, 2 if v2 else 1)


def _cpu_source(dirs: CgroupDirs, node_cpus: float) -> _CpuSource | None:
    v2 = _tightest(dirs.v2, _v2_cpu)
    if v2 is not None and v2[0] < node_cpus and (v2[1] / "cpu.stat").is_file():
        return _CpuSource(LimitSource.CGROUP_V2, float(v2[0]), v2[1] / "cpu.stat")
    v1 = _tightest(dirs.v1_cpu, _v1_cpu)
    if v1 is not None and v1[0] < node_cpus:
        # cpuacct may be mounted apart from cpu: read it at the same level.
        usage = _same_level(v1[1], dirs.v1_cpu, dirs.v1_cpuacct) / "cpuacct.usage"
        if usage.is_file():
            return _CpuSource(LimitSource.CGROUP_V1, float(v1[0]), usage)
    return None


def _same_level(
    d: pathlib.Path, chain: tuple[pathlib.Path, ...], other: tuple[pathlib.Path, ...]
) -> pathlib.Path:
    if d in chain and other:
        level = len(chain) - 1 - chain.index(d)  # 0: the mount point
        if level < len(other):
            return other[len(other) - 1 - level]
        return other[0]
    return d


def _memory_source(dirs: CgroupDirs, node_bytes: int) -> _MemorySource | None:
    v2 = _tightest(dirs.v2, _v2_memory)
    if v2 is not None and v2[0] < node_bytes and (v2[1] / "memory.current").is_file():
        return _MemorySource(LimitSource.CGROUP_V2, int(v2[0]), v2[1])
    v1 = _tightest(dirs.v1_memory, _v1_memory)
    if v1 is not None and v1[0] < node_bytes and (v1[1] / "memory.usage_in_bytes").is_file():
        return _MemorySource(LimitSource.CGROUP_V1, int(v1[0]), v1[1])
    return None


def node_limits() -> LoadLimits:
    """The node's CPU count and memory (no cgroup limit applied)."""
    return LoadLimits(
        float(psutil.cpu_count() or 1), LimitSource.NODE, psutil.virtual_memory().total, LimitSource.NODE
    )


class LoadReader:
    """CPU and memory load as percentages of the applied limits.

    Each resource uses the cgroup's limit and usage when the cgroup is tighter
    than the node, else the node's own percentage from psutil. ``read`` returns
    the CPU use since its previous call (the first call returns 0.0 and sets
    the baseline, as ``psutil.cpu_percent(interval=None)`` does).
    """

    def __init__(
        self,
        cpu: _CpuSource | None,
        memory: _MemorySource | None,
        node: LoadLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cpu = cpu
        self._memory = memory
        self._clock = clock
        self.limits = LoadLimits(
            cpu.cores if cpu is not None else node.cpu_cores,
            cpu.source if cpu is not None else LimitSource.NODE,
            memory.limit if memory is not None else node.memory_bytes,
            memory.source if memory is not None else LimitSource.NODE,
        )
        self._last: tuple[float, float] | None = None

    @classmethod
    def detect(
        cls,
        root: str | pathlib.Path = "/",
        node: LoadLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> LoadReader:
        """The reader for this process, from ``<root>/proc/self/{cgroup,mountinfo}``;
        node figures from psutil unless given. Unreadable cgroup files mean the node's."""
        root = pathlib.Path(root)
        node = node if node is not None else node_limits()
        proc_cgroup = _read(root / "proc/self/cgroup")
        mountinfo = _read(root / "proc/self/mountinfo")
        cpu = memory = None
        if proc_cgroup is not None and mountinfo is not None:
            try:
                dirs = find_cgroups(proc_cgroup, mountinfo, root)
                cpu = _cpu_source(dirs, node.cpu_cores)
                memory = _memory_source(dirs, node.memory_bytes)
            except (OSError, ValueError) as exc:  # a strange tree: the node's figures still work
                log.warning("cgroup limits not readable (%s); using the node's", exc)
        return cls(cpu, memory, node, clock)

    def read(self) -> tuple[float, float]:
        """(cpu percent, memory percent) of the applied limits, each 0..100."""
        return self._cpu_percent(), self._memory_percent()

    def _cpu_percent(self) -> float:
        if self._cpu is None:
            return psutil.cpu_percent(interval=None)
        now, used = self._clock(), self._cpu.usage_seconds()
        if used is None:  # the file went away: the node's reading beats none
            return psutil.cpu_percent(interval=None)
        last, self._last = self._last, (now, used)
        if last is None or now <= last[0]:
            return 0.0
        percent = 100.0 * (used - last[1]) / (now - last[0]) / self._cpu.cores
        return min(100.0, max(0.0, percent))

    def _memory_percent(self) -> float:
        if self._memory is None:
            return psutil.virtual_memory().percent
        used = self._memory.used_bytes()
        if used is None:
            return psutil.virtual_memory().percent
        return min(100.0, 100.0 * used / self._memory.limit)
