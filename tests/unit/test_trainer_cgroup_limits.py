"""Container-aware load readings (trainer.cgroup): fake cgroup v1 and v2 trees
in tmp_path, the real files of this machine, and a real cgroup with limits
when the machine lets us make one."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tests.support.cgroup_support import unavailable
from trainer import cgroup_limits
from trainer.cgroup_limits import LimitSource, LoadLimits, LoadReader
from trainer.gate import LoadSampler

GIB = 1 << 30
NODE = LoadLimits(8.0, LimitSource.NODE, 64 * GIB, LimitSource.NODE)
V1_UNLIMITED = "9223372036854771712"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def mountinfo(*lines: str) -> str:
    base = [
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
        "23 22 0:21 / /proc rw,nosuid - proc proc rw",
    ]
    return "\n".join(base + list(lines)) + "\n"


def v2_tree(root: pathlib.Path, cpu_max: str = "50000 100000", pod_memory: str = str(GIB)) -> pathlib.Path:
    """A pod cgroup with a memory limit above a container cgroup with a CPU quota."""
    write(root / "proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
    write(
        root / "proc/self/mountinfo",
        mountinfo("30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate"),
    )
    top = root / "sys/fs/cgroup"
    write(top / "cgroup.controllers", "cpu memory\n")  # the root cgroup has no cpu.max / memory.max
    pod, ctr = top / "kubepods/pod1", top / "kubepods/pod1/ctr"
    write(pod / "cpu.max", "max 100000\n")
    write(pod / "memory.max", pod_memory + "\n")
    write(pod / "memory.current", str(GIB // 2) + "\n")
    write(pod / "memory.stat", f"anon 1000\ninactive_file {GIB // 4}\nactive_file 5\n")
    write(pod / "cpu.stat", "usage_usec 0\n")
    write(ctr / "cpu.max", cpu_max + "\n")
    write(ctr / "memory.max", "max\n")
    write(ctr / "memory.current", "1000\n")
    write(ctr / "memory.stat", "inactive_file 0\n")
    write(ctr / "cpu.stat", "usage_usec 1000000\nuser_usec 900000\nsystem_usec 100000\n")
    return ctr


def v1_tree(root: pathlib.Path, quota: str = "150000", memory_limit: str = str(2 * GIB)) -> pathlib.Path:
    """Docker without a cgroup namespace: mounts of the container's sub-tree,
    cpu and cpuacct co-mounted, and a v2 mount with no controllers (hybrid)."""
    write(
        root / "proc/self/cgroup",
        "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n5:name=systemd:/docker/abc\n0::/docker/abc\n",
    )
    write(
        root / "proc/self/mountinfo",
        mountinfo(
            "30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755",
            "31 30 0:27 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
            "32 30 0:28 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
            "33 30 0:29 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
        ),
    )
    cpu, memory = root / "sys/fs/cgroup/cpu,cpuacct", root / "sys/fs/cgroup/memory"
    write(cpu / "cpu.cfs_quota_us", quota + "\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    write(cpu / "cpuacct.usage", "5000000000\n")
    write(memory / "memory.limit_in_bytes", memory_limit + "\n")
    write(memory / "memory.usage_in_bytes", str(GIB) + "\n")
    write(memory / "memory.stat", f"cache 10\ninactive_file 1\ntotal_inactive_file {GIB // 2}\n")
    write(root / "sys/fs/cgroup/unified/cgroup.controllers", "\n")
    return cpu


# -- parsing ---------------------------------------------------------------------


def test_proc_cgroup_and_mountinfo_are_parsed():
    paths = cgroup_limits.parse_proc_cgroup("4:memory:/a/b\n3:cpu,cpuacct:/c\n1:name=systemd:/\n0::/d\n")
    assert paths == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "name=systemd": "/", "": "/d"}
    mounts = cgroup_limits.parse_mountinfo(
        mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu",
            r"41 31 0:38 /x /sys/fs/cgroup/my\040dir rw,relatime - cgroup2 cgroup2 rw",
        )
    )
    assert [(m.root, m.mount_point, m.fstype) for m in mounts] == [
        ("/", "/sys/fs/cgroup/cpu", "cgroup"),
        ("/x", "/sys/fs/cgroup/my dir", "cgroup2"),
    ]
    assert "cpu" in mounts[0].options


@pytest.mark.parametrize(
    "text,cores", [("max 100000", None), ("50000 100000", 0.5), ("200000 100000", 2.0), ("max", None)]
)
def test_cpu_max(text, cores):
    assert cgroup_limits.parse_cpu_max(text) == cores


def test_v1_quota_and_limits_treat_unlimited_values_as_no_limit():
    assert cgroup_limits.parse_v1_cpu_quota("-1", "100000") is None
    assert cgroup_limits.parse_v1_cpu_quota("250000", "100000") == 2.5
    assert cgroup_limits.parse_v1_memory_limit(V1_UNLIMITED) is None
    assert cgroup_limits.parse_v1_memory_limit(str(1 << 62)) is None
    assert cgroup_limits.parse_v1_memory_limit("536870912\n") == 536870912
    assert cgroup_limits.parse_memory_max("max\n") is None
    assert cgroup_limits.parse_memory_max("1073741824\n") == GIB


def test_working_set_drops_inactive_file_cache():
    assert cgroup_limits.working_set(1000, {"inactive_file": 300}, 2) == 700
    # v1's usage is hierarchical, and so is total_inactive_file (not inactive_file).
    assert cgroup_limits.working_set(1000, {"inactive_file": 1, "total_inactive_file": 400}, 1) == 600
    assert cgroup_limits.working_set(100, {"inactive_file": 300}, 2) == 0


# -- fake trees ------------------------------------------------------------------


def test_v2_limits_come_from_the_tightest_level_and_usage_from_that_level(tmp_path):
    ctr = v2_tree(tmp_path)
    clock = Clock()
    reader = LoadReader.detect(tmp_path, NODE, clock)
    assert reader.limits == LoadLimits(0.5, LimitSource.CGROUP_V2, GIB, LimitSource.CGROUP_V2)
    assert reader.read()[0] == 0.0  # the baseline
    # 0.25 s of CPU in 1 s under a 0.5-core quota: half the limit.
    write(ctr / "cpu.stat", "usage_usec 1250000\n")
    clock.now += 1.0
    cpu, memory = reader.read()
    assert cpu == pytest.approx(50.0)
    # The pod's limit binds: its memory.current less its inactive file cache.
    assert memory == pytest.approx(25.0)
    # Readings never exceed 100% (a burst above the quota's average).
    write(ctr / "cpu.stat", "usage_usec 99250000\n")
    clock.now += 1.0
    assert reader.read()[0] == 100.0


def test_v2_without_limits_or_with_looser_ones_uses_the_node(tmp_path):
    v2_tree(tmp_path, cpu_max="max 100000", pod_memory="max")
    assert LoadReader.detect(tmp_path, NODE).limits == NODE
    v2_tree(tmp_path / "loose", cpu_max="1600000 100000", pod_memory=str(128 * GIB))
    assert LoadReader.detect(tmp_path / "loose", NODE).limits == NODE


def test_v1_limits_and_readings_in_a_container_without_a_cgroup_namespace(tmp_path):
    cpu_dir = v1_tree(tmp_path)
    clock = Clock()
    reader = LoadReader.detect(tmp_path, NODE, clock)
    assert reader.limits == LoadLimits(1.5, LimitSource.CGROUP_V1, 2 * GIB, LimitSource.CGROUP_V1)
    reader.read()
    write(cpu_dir / "cpuacct.usage", str(5_000_000_000 + 750_000_000) + "\n")  # ns
    clock.now += 1.0
    cpu, memory = reader.read()
    assert cpu == pytest.approx(50.0)  # 0.75 core-seconds a second of 1.5 cores
    assert memory == pytest.approx(25.0)  # (1 GiB - 0.5 GiB inactive) of 2 GiB


def test_v1_unlimited_values_mean_the_node(tmp_path):
    v1_tree(tmp_path, quota="-1", memory_limit=V1_UNLIMITED)
    assert LoadReader.detect(tmp_path, NODE).limits == NODE


def test_v1_memory_limit_on_an_ancestor_binds(tmp_path):
    write(tmp_path / "proc/self/cgroup", "4:memory:/slice/job\n")
    write(
        tmp_path / "proc/self/mountinfo",
        mountinfo("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"),
    )
    top = tmp_path / "sys/fs/cgroup/memory"
    write(top / "memory.limit_in_bytes", V1_UNLIMITED)
    write(top / "slice/memory.limit_in_bytes", str(4 * GIB))
    write(top / "slice/memory.usage_in_bytes", str(GIB))
    write(top / "slice/job/memory.limit_in_bytes", V1_UNLIMITED)
    write(top / "slice/job/memory.usage_in_bytes", "1")
    reader = LoadReader.detect(tmp_path, NODE)
    assert reader.limits.memory_bytes == 4 * GIB and reader.limits.memory_source is LimitSource.CGROUP_V1
    assert reader.limits.cpu_source is LimitSource.NODE
    assert reader.read()[1] == pytest.approx(25.0)


def test_no_cgroup_files_at_all_means_the_node(tmp_path):
    assert LoadReader.detect(tmp_path, NODE).limits == NODE
    write(tmp_path / "proc/self/cgroup", "garbage\n")
    write(tmp_path / "proc/self/mountinfo", "also garbage\n")
    assert LoadReader.detect(tmp_path, NODE).limits == NODE


def test_the_sampler_takes_its_readings_from_the_cgroup_reader(tmp_path):
    ctr = v2_tree(tmp_path)
    sampler = LoadSampler(interval_s=0.05, reader=LoadReader.detect(tmp_path, NODE))
    assert sampler.limits().cpu_source is LimitSource.CGROUP_V2
    write(ctr / "cpu.stat", "usage_usec 1000000\n")  # idle: no CPU used between samples
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while len(sampler.samples()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sampler.stop()
    samples = sampler.samples()
    assert len(samples) >= 3
    assert all(s.cpu == 0.0 and s.memory == pytest.approx(25.0) for s in samples)


# -- this machine ----------------------------------------------------------------


def test_the_real_files_of_this_machine():
    """Whatever the machine, the limits never exceed the node's, a cgroup
    source has the limit its files say, and readings are percentages."""
    node = cgroup_limits.node_limits()
    reader = LoadReader.detect()
    limits = reader.limits
    assert 0 < limits.cpu_cores <= node.cpu_cores and 0 < limits.memory_bytes <= node.memory_bytes
    paths = cgroup_limits.parse_proc_cgroup(pathlib.Path("/proc/self/cgroup").read_text())
    dirs = cgroup_limits.find_cgroups(
        pathlib.Path("/proc/self/cgroup").read_text(), pathlib.Path("/proc/self/mountinfo").read_text()
    )
    if "memory" in paths and dirs.v1_memory:
        # The chain runs from this process's memory cgroup up to the mount point.
        assert dirs.v1_memory[0].as_posix().endswith(paths["memory"].rstrip("/")) or paths["memory"] == "/"
        limit = cgroup_limits.parse_v1_memory_limit((dirs.v1_memory[0] / "memory.limit_in_bytes").read_text())
        if limit is None or limit >= node.memory_bytes:
            assert limits.memory_source in (LimitSource.NODE, LimitSource.CGROUP_V2)
    if limits.memory_source is LimitSource.NODE:
        assert limits.memory_bytes == node.memory_bytes
    reader.read()
    cpu, memory = reader.read()
    assert 0.0 <= cpu <= 100.0 and 0.0 < memory <= 100.0


def _make_cgroups(name: str) -> dict[str, pathlib.Path] | None:
    """Child cgroups of ours for memory, cpu and cpuacct (v1), if we may make them."""
    paths = cgroup_limits.parse_proc_cgroup(pathlib.Path("/proc/self/cgroup").read_text())
    dirs = cgroup_limits.find_cgroups(
        pathlib.Path("/proc/self/cgroup").read_text(), pathlib.Path("/proc/self/mountinfo").read_text()
    )
    chains = {"memory": dirs.v1_memory, "cpu": dirs.v1_cpu, "cpuacct": dirs.v1_cpuacct}
    if not all(chains.values()) or not all(c in paths for c in chains):
        return None
    made: dict[str, pathlib.Path] = {}
    try:
        for controller, chain in chains.items():
            d = chain[0] / name
            if d in made.values():
                continue  # co-mounted controllers share one directory
            d.mkdir()
            made[controller] = d
    except OSError:
        for d in made.values():
            d.rmdir()
        return None
    return made


CHILD = """
import json, time
from trainer.cgroup_limits import LoadReader
reader = LoadReader.detect()
reader.read()
held = bytearray(96 << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
end = time.monotonic() + 1.0
while time.monotonic() < end:
    pass
cpu, memory = reader.read()
limits = reader.limits
print(json.dumps({"cpu_cores": limits.cpu_cores, "cpu_source": limits.cpu_source.value,
                  "memory_bytes": limits.memory_bytes, "memory_source": limits.memory_source.value,
                  "cpu": cpu, "memory": memory}))
"""


def test_a_real_v1_cgroup_with_limits_is_read_from_inside():
    """A process in a real cgroup of this machine, limited to half a core and
    512 MiB, reads those limits and its own load against them."""
    made = _make_cgroups(f"text-labeler-test-{uuid.uuid4().hex[:8]}")
    if made is None:
        unavailable("v1", "no writable cgroup v1 memory/cpu/cpuacct hierarchies here")
    try:
        (made["memory"] / "memory.limit_in_bytes").write_text(str(512 << 20))
        cpu_dir = made.get("cpu") or made["cpuacct"]
        (cpu_dir / "cpu.cfs_period_us").write_text("100000")
        (cpu_dir / "cpu.cfs_quota_us").write_text("50000")

        def enter() -> None:
            for d in made.values():
                (d / "cgroup.procs").write_text(str(os.getpid()))

        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            preexec_fn=enter,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])},
        )
    finally:
        for d in made.values():
            try:
                d.rmdir()
            except OSError:
                pass
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout)
    assert (seen["cpu_cores"], seen["cpu_source"]) == (0.5, "cgroup v1")
    assert (seen["memory_bytes"], seen["memory_source"]) == (512 << 20, "cgroup v1")
    # 96 MiB touched of 512 MiB: at least 18% (the interpreter adds more);
    # machine-wide that would be well under 1% of this node's memory.
    assert 18.0 <= seen["memory"] <= 100.0
    assert seen["memory"] > 5 * 100.0 * (96 << 20) / psutil.virtual_memory().total
    assert seen["cpu"] > 0.0  # it burned CPU for a second (how much of it depends on the neighbours)


def _make_v2_cgroup(name: str) -> pathlib.Path | None:
    """A child cgroup v2 of ours with the cpu and memory controllers (so its
    cpu.max and memory.max may be set), if we may make one."""
    dirs = cgroup_limits.find_cgroups(
        pathlib.Path("/proc/self/cgroup").read_text(), pathlib.Path("/proc/self/mountinfo").read_text()
    )
    if not dirs.v2:
        return None
    parent = dirs.v2[0]
    try:
        controllers = (parent / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    if not {"cpu", "memory"} <= set(controllers):
        return None
    try:  # delegated already, or ours to enable (the root of a cgroup namespace may)
        (parent / "cgroup.subtree_control").write_text("+cpu +memory")
    except OSError:
        pass
    child = parent / name
    try:
        child.mkdir()
    except OSError:
        return None
    if not ((child / "cpu.max").exists() and (child / "memory.max").exists()):
        child.rmdir()
        return None
    return child


def test_a_real_v2_cgroup_with_limits_is_read_from_inside():
    """The v1 test's twin: a process in a real cgroup v2 of this machine,
    limited to half a core and 512 MiB, reads those limits and its own load."""
    made = _make_v2_cgroup(f"text-labeler-test-{uuid.uuid4().hex[:8]}")
    if made is None:
        unavailable("v2-limits", "no cgroup v2 here whose cpu and memory controllers we may use")
    try:
        (made / "memory.max").write_text(str(512 << 20))
        (made / "cpu.max").write_text("50000 100000")
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            preexec_fn=lambda: (made / "cgroup.procs").write_text(str(os.getpid())),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])},
        )
    finally:
        deadline = time.monotonic() + 10
        while made.exists():
            try:
                made.rmdir()
            except OSError:
                assert time.monotonic() < deadline, f"could not remove {made}"
                time.sleep(0.05)  # its last process is still being reaped
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout)
    assert (seen["cpu_cores"], seen["cpu_source"]) == (0.5, "cgroup v2")
    assert (seen["memory_bytes"], seen["memory_source"]) == (512 << 20, "cgroup v2")
    assert 18.0 <= seen["memory"] <= 100.0
    assert seen["memory"] > 5 * 100.0 * (96 << 20) / psutil.virtual_memory().total
    assert seen["cpu"] > 0.0
