# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The OCI command line: ``kernelbox-runtime run`` against ``runc run`` and ``crun run``, same bundle, same run.

Each candidate runs ``/bin/true`` from one bundle: the collection's secure
defaults (user, pid, net, ipc, uts, mount and cgroup namespaces, Docker's
capabilities and seccomp profile, masked paths), rootfs busybox-static, each
in a cgroup of its own, interleaved, wall clock and CPU medians.  crun runs with
``--cgroup-manager=disabled`` as in bench_launch.py (crun 1.8 refuses this
host's cgroups otherwise).  Everything runs in a cgroup namespace rooted below
the test parent (harness/cgroup_view.py), so the tools see a pure cgroup v2 host.

kernelbox-runtime is the collection's code copy run by the host's
``/usr/bin/python3 -I -S``, as the installed wrapper runs it, so its Python
start-up is part of every call; it is reported on its own: the bare interpreter
(``python3 -I -S -c pass``), ``--version`` (the command line module alone) and
``state`` of a missing container (the state code too), against ``runc state``.
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
from harness.containers import build_busybox_rootfs  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise  # noqa: E402

ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "20"))
WORK = "/var/lib/kbt-bench-oci"  # the sandbox's private tmpfs; 0755, so a user namespace's root can walk it
PYTHON = "/usr/bin/python3"


def cpu_ms() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (children.ru_utime + children.ru_stime) * 1000.0


def write_bundle(path: str, rootfs: str, cgroups_path: t.Optional[str]) -> None:
    os.makedirs(path)
    config = S.default_spec(rootfs, ["/bin/true"], hostname="kbt-bench").to_oci()
    if cgroups_path:
        config["linux"]["cgroupsPath"] = cgroups_path
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(config, handle)


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("run me through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    code = materialise.materialise()
    return in_confined_cgroup_view(os.environ["KB_TEST_CGROUP_PARENT"], lambda: measure(code))


def measure(code: str) -> int:
    ours = [PYTHON, "-I", "-S", os.path.join(code, materialise.CLI_SCRIPT)]
    roots = {"kernelbox": "/run/kbt-bench-kb", "runc": "/run/kbt-bench-runc", "crun": "/run/kbt-bench-crun"}
    os.makedirs(WORK)
    os.chmod(WORK, 0o755)
    stdio = os.open(os.path.join(WORK, "stdio"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        rootfs = build_busybox_rootfs(os.path.join(WORK, "rootfs"))
        write_bundle(os.path.join(WORK, "kb"), rootfs, "/kbt-bench-kb")
        write_bundle(os.path.join(WORK, "runc"), rootfs, "/kbt-bench-runc")
        write_bundle(os.path.join(WORK, "crun"), rootfs, None)

        def tool(argv: t.List[str], expect: int = 0) -> t.Callable[[], None]:
            def call() -> None:
                proc = subprocess.run(argv, stdin=stdio, stdout=stdio, stderr=subprocess.PIPE, check=False)
                assert proc.returncode == expect, (argv, proc.returncode, proc.stderr)
            return call

        runs = {
            "kernelbox-runtime run": tool(ours + ["--root", roots["kernelbox"], "run", "--bundle",
                                                  os.path.join(WORK, "kb"), "kbt-bench-kb"]),
            "runc run": tool(["runc", "--root", roots["runc"], "run", "--bundle", os.path.join(WORK, "runc"),
                              "kbt-bench-runc"]),
            "crun run (cgroups disabled)": tool(["crun", "--cgroup-manager=disabled", "--root", roots["crun"], "run",
                                                 "--bundle", os.path.join(WORK, "crun"), "kbt-bench-crun"]),
        }
        startup = {
            "python3 -I -S -c pass": tool([PYTHON, "-I", "-S", "-c", "pass"]),
            "kernelbox-runtime --version": tool(ours + ["--version"]),
            "kernelbox-runtime state (missing)": tool(ours + ["--root", roots["kernelbox"], "state", "nope"], 1),
            "runc state (missing)": tool(["runc", "--root", roots["runc"], "state", "nope"], 1),
        }
        report("run /bin/true, %d interleaved rounds" % ROUNDS, runs, "runc run")
        report("start-up: a call that launches nothing, %d interleaved rounds" % ROUNDS, startup,
               "python3 -I -S -c pass")
        return 0
    finally:
        os.close(stdio)
        for path in ("/sys/fs/cgroup/kbt-bench-kb", "/sys/fs/cgroup/kbt-bench-runc"):
            try:
                os.rmdir(path)
            except OSError:
                pass
        sys.stdout.flush()
        shutil.rmtree(WORK, ignore_errors=True)
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


def report(title: str, candidates: t.Dict[str, t.Callable[[], None]], baseline: str) -> None:
    for func in candidates.values():  # warm up: page cache, tool binaries, bytecode caches
        func()
    wall: t.Dict[str, t.List[float]] = {name: [] for name in candidates}
    cpu: t.Dict[str, t.List[float]] = {name: [] for name in candidates}
    for _round in range(ROUNDS):
        for name, func in candidates.items():
            before = cpu_ms()
            start = time.perf_counter()
            func()
            wall[name].append((time.perf_counter() - start) * 1000.0)
            cpu[name].append(cpu_ms() - before)
    base = statistics.median(wall[baseline])
    base_cpu = statistics.median(cpu[baseline])
    rows = [(name, statistics.median(wall[name]), statistics.median(wall[name]) / base, min(wall[name]),
             statistics.median(cpu[name]), statistics.median(cpu[name]) / base_cpu) for name in candidates]
    table("%s (load average %.1f)" % (title, os.getloadavg()[0]), rows,
          ["candidate", "median ms", "x %s" % baseline, "min ms", "CPU ms (median)", "CPU x %s" % baseline])


if __name__ == "__main__":
    sys.exit(main())
