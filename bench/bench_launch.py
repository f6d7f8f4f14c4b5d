# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Launch latency: from the start() call until /bin/true has exited (waitpid), full isolation.

Compared in the same run, interleaved, on the same busybox-static rootfs:

* kernelbox ``_runtime.process.launch.start()`` with ``spec.default_spec()`` (user, pid, net, ipc, uts,
  mount and cgroup namespaces, Docker's default seccomp profile and capabilities, the default
  mounts, devices, masked and read-only paths), joining a cgroup v2 leaf;
* ``runc run`` of a bundle whose config.json is that same spec (``Spec.to_oci()``), with its
  cgroupsPath under the run's test parent;
* ``crun run`` of the same bundle, with ``--cgroup-manager=disabled``;
* raw ``unshare --fork --pid --mount --uts --ipc --net --cgroup chroot ROOTFS /bin/true``
  (no user namespace, no mounts, no seccomp, no capability drop: the floor).

crun 1.8 refuses a hybrid cgroup host even with cgroups disabled, so the benchmark first enters
a cgroup namespace rooted at a group under the run's test parent and mounts that cgroup2 view on
/sys/fs/cgroup in its own private mount namespace (the sandbox's; the host never sees it): every
candidate then runs on what looks like a pure cgroup v2 host.  The namespace matters: runc enables
every available controller in each ancestor's cgroup.subtree_control, and without it that would
reach the host's cgroup2 root, outside the test parent.

The tools get temporary files, never /dev/null, as stdio: an OCI runtime may chown its stdio to the
container's root (uid 100000 outside), and the host's /dev/null must never change owner.

Wall-clock medians are what the targets are about; on a shared 2-core machine they are noisy, so
the CPU time each launch costs (user+system of the caller and every process it waited for) is
printed too, and is the steadier of the two.  Run by ``make bench`` (bench/run) in the sandbox.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import typing as t

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401  # pylint: disable=unused-import  # makes the checkout importable

from common import in_confined_cgroup_view, table  # noqa: E402  (bench/ is the script's directory)
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc  # noqa: E402

ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "40"))
WORK = "/var/lib/kbt-bench-launch"  # the sandbox's private tmpfs; 0755, so runc's userns init can walk it


def cpu_ms() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1000.0


def build_rootfs(path: str) -> None:
    for name in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        os.makedirs(os.path.join(path, name), mode=0o755)
    os.chmod(path, 0o755)
    shutil.copy2("/bin/busybox", os.path.join(path, "bin", "busybox"))
    os.symlink("busybox", os.path.join(path, "bin", "true"))
    os.symlink("busybox", os.path.join(path, "bin", "sh"))


CGROUP_ROOT = "/sys/fs/cgroup"


def write_bundle(path: str, spec: S.Spec, cgroups_path: t.Optional[str]) -> None:
    os.makedirs(path)
    config = spec.to_oci()
    if cgroups_path:
        config["linux"]["cgroupsPath"] = cgroups_path
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(config, handle)


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("run me through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    parent_name = os.environ.get("KB_TEST_CGROUP_PARENT", "kbtest-bench-%d" % os.getpid())
    return in_confined_cgroup_view(parent_name, measure)


def measure() -> int:
    """The comparison, in a child that owns the confined cgroup view (see bench/common.py)."""
    libc.set_child_subreaper()
    sys.stdout.flush()
    leaf = os.path.join(CGROUP_ROOT, "kbt-bench-launch")
    rootfs = os.path.join(WORK, "rootfs")
    runc_root = "/run/kbt-bench-runc"
    crun_root = "/run/kbt-bench-crun"
    os.makedirs(WORK, exist_ok=True)
    null = os.open(os.path.join(WORK, "stdio"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        build_rootfs(rootfs)
        os.makedirs(leaf)
        spec = S.default_spec(rootfs, ["/bin/true"], hostname="kbt-bench")
        write_bundle(os.path.join(WORK, "bundle"), spec, "/kbt-bench-runc")
        write_bundle(os.path.join(WORK, "bundle-crun"), spec, None)
        bundle = os.path.join(WORK, "bundle")

        def kernelbox() -> None:
            launched = launch.start(spec, stdout=null, stderr=null, cgroup_dir=leaf)
            _pid, status = os.waitpid(launched.pid, 0)
            assert status == 0, status

        def run_tool(argv: t.List[str]) -> t.Callable[[], None]:
            def call() -> None:
                subprocess.run(argv, stdin=null, stdout=null, stderr=subprocess.PIPE, check=True)
            return call

        candidates = {
            "kernelbox start()": kernelbox,
            "runc run": run_tool(["runc", "--root", runc_root, "run", "--bundle", bundle, "kbt-bench-runc"]),
            "crun run (cgroups disabled)": run_tool(["crun", "--cgroup-manager=disabled", "--root", crun_root,
                                                     "run", "--bundle", os.path.join(WORK, "bundle-crun"),
                                                     "kbt-bench-crun"]),
            "unshare + chroot (floor)": run_tool(["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc",
                                                  "--net", "--cgroup", "chroot", rootfs, "/bin/true"]),
        }
        for func in candidates.values():  # warm up: page cache, the seccomp compile cache, tool binaries
            func()
        wall: t.Dict[str, t.List[float]] = {name: [] for name in candidates}
        cpu: t.Dict[str, t.List[float]] = {name: [] for name in candidates}
        for _round in range(ROUNDS):
            for name, func in candidates.items():
                before_cpu = cpu_ms()
                start = time.perf_counter()
                func()
                wall[name].append((time.perf_counter() - start) * 1000.0)
                cpu[name].append(cpu_ms() - before_cpu)
        floor = "unshare + chroot (floor)"
        rows = []
        for name in candidates:
            rows.append((name, statistics.median(wall[name]), statistics.median(wall[name])
                         / statistics.median(wall[floor]), min(wall[name]), statistics.median(cpu[name]),
                         statistics.median(cpu[name]) / statistics.median(cpu[floor])))
        table("launch until /bin/true exits, %d interleaved rounds (load average %.1f)"
              % (ROUNDS, os.getloadavg()[0]), rows,
              ["candidate", "median ms", "x floor", "min ms", "CPU ms (median)", "CPU x floor"])
        ours = statistics.median(wall["kernelbox start()"])
        print("\ntarget 1, within 2x of unshare (wall): %.2fx -> %s"
              % (ours / statistics.median(wall[floor]), "met" if ours <= 2 * statistics.median(wall[floor])
                 else "MISSED"))
        print("target 2, faster than runc (wall): %.2fx runc's time -> %s"
              % (ours / statistics.median(wall["runc run"]), "met" if ours < statistics.median(wall["runc run"])
                 else "MISSED"))
        return 0
    finally:
        os.close(null)
        for path in (leaf, os.path.join(CGROUP_ROOT, "kbt-bench-runc")):
            try:
                os.rmdir(path)
            except OSError:
                pass
        sys.stdout.flush()  # the child leaves with os._exit: nothing buffered may be lost
        shutil.rmtree(WORK, ignore_errors=True)
        shutil.rmtree(runc_root, ignore_errors=True)
        shutil.rmtree(crun_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
