# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Supervision memory per container at N=50: the kernelbox supervisor against podman's conmon.

Both run N long-lived containers of the same busybox rootfs; what is measured is the memory of what
supervises them (not the containers): the PSS of the one kernelbox supervisor divided by N, against
the PSS of each conmon (one per podman container), from /proc/PID/smaps_rollup.  PSS shares pages
among the processes that map them, so 50 conmons sharing libc are charged fairly.

Runs in tests/sandbox (bench/run): podman's state and storage land on the sandbox's tmpfs /run and
/var/lib, and everything is removed afterwards.  podman runs as the brief prescribes
(runc, cgroupfs, explicit ulimits), with --network none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import REPO, cgroup_dirs, in_confined_cgroup_view, remove_new_cgroups, table  # noqa: E402  (bench/common.py sets up sys.path)

sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401  pylint: disable=unused-import
from harness.containers import build_busybox_rootfs, cgroup2_mount  # noqa: E402

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_spec  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import client, materialise  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state  # noqa: E402

N = int(os.environ.get("KB_BENCH_CONTAINERS", "50"))
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
IMAGE = "localhost/kbt-bench-busybox:latest"


def pss_kib(pid: int) -> int:
    with open("/proc/%d/smaps_rollup" % pid) as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss in /proc/%d/smaps_rollup" % pid)


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pids_named(comm: str) -> list:
    """Processes called ``comm`` in this sandbox (our mount namespace): other runs on the machine are not ours."""
    ours = os.stat("/proc/self/ns/mnt").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() == comm and os.stat("/proc/%s/ns/mnt" % entry).st_ino == ours:
                        found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


def kernelbox(rootfs: str, parent: str) -> dict:
    code = materialise.materialise()
    session = client.Client(code)
    names = ["kbt-bench-%02d" % i for i in range(N)]
    samples = {}
    try:
        for index, name in enumerate(names):
            spec = container_spec.from_options({"rootfs": rootfs, "command": ["/bin/sleep", "100000"]}, name)
            config = spec.to_oci()
            settings = state.Settings(name=name, digest=state.digest(config), stop_timeout=0.2,
                                      cgroup={"path": os.path.join(cgroup2_mount(), parent, name), "owned": True,
                                              "parent": parent, "name": name})
            state.save_persistent(name, config, settings)
            reply = session.request("start", name=name)
            assert reply.get("ok"), reply
            if index == 0:
                time.sleep(1.5)  # a log-rotation tick or two: the steady state
                sup = session.ensure()["pid"]
                samples[1] = (pss_kib(sup), rss_kib(sup))
        time.sleep(1.5)
        sup = session.ensure()["pid"]
        assert pids_named("kb-supervisor") == [sup]
        samples[N] = (pss_kib(sup), rss_kib(sup))
    finally:
        for name in names:
            if os.path.exists(state.paths(name).settings_file):
                session.request("stop", name=name, stop_timeout=0.2)
                from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import engine
                path = os.path.join(cgroup2_mount(), parent, name)
                if os.path.isdir(path):
                    engine.remove_leaf(path)
                state.remove_all(name)
    return samples


def podman_confined(rootfs: str, work: str) -> dict:
    """podman's part, run in the confined cgroup view: what it makes there is removed afterwards."""
    before = cgroup_dirs()
    try:
        return podman(rootfs, work)
    finally:
        remove_new_cgroups(before)


def podman(rootfs: str, work: str) -> dict:
    tarball = os.path.join(work, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
    subprocess.run(PODMAN + ["import", tarball, IMAGE], check=True, stdout=subprocess.DEVNULL)
    names = ["kbt-bench-pod-%02d" % i for i in range(N)]
    try:
        for name in names:
            subprocess.run(PODMAN + ["run", "-d", "--name", name, "--network", "none", "--pids-limit", "0",
                                     "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                                     IMAGE, "/bin/sleep", "100000"], check=True, stdout=subprocess.DEVNULL)
        time.sleep(1.5)
        conmons = pids_named("conmon")
        assert len(conmons) == N, "expected %d conmon processes, found %d" % (N, len(conmons))
        pss = [pss_kib(pid) for pid in conmons]
        rss = [rss_kib(pid) for pid in conmons]
        return {"pss_each": sum(pss) / len(pss), "rss_each": sum(rss) / len(rss), "pss_total": sum(pss)}
    finally:
        _podman_cleanup(names)


def _podman_cleanup(names: list) -> None:
    for argv in (["rm", "-f", "-t", "0"] + names, ["rmi", "-f", IMAGE], ["system", "reset", "-f"]):
        subprocess.run(PODMAN + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("bench_supervision: run it through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="kbt-bench-sup-")
    os.chmod(work, 0o755)
    parent = os.environ["KB_TEST_CGROUP_PARENT"]
    os.makedirs(os.path.join(cgroup2_mount(), parent), exist_ok=True)
    try:
        rootfs = build_busybox_rootfs(os.path.join(work, "rootfs"))
        ours = kernelbox(rootfs, parent)
        # podman with cgroupfs would put conmon in libpod_parent/conmon of every hierarchy of a hybrid host,
        # outside the test parent: it runs in a cgroup namespace rooted below the test parent instead.
        theirs = in_confined_cgroup_view(parent, lambda: podman_confined(rootfs, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pss_n, rss_n = ours[N]
    pss_1, _rss_1 = ours[1]
    per = pss_n / N
    marginal = (pss_n - pss_1) / (N - 1) if N > 1 else float(pss_n)
    rows = [
        ("kernelbox supervisor, total for %d" % N, float(pss_n), float(rss_n), per, per / theirs["pss_each"]),
        ("kernelbox supervisor, marginal per container", marginal, float("nan"), marginal,
         marginal / theirs["pss_each"]),
        ("podman conmon (one per container), mean", theirs["pss_each"], theirs["rss_each"], theirs["pss_each"], 1.0),
    ]
    table("Supervision memory per container at N=%d (KiB; ratio = per-container PSS / conmon's)" % N, rows,
          ("supervisor", "PSS KiB", "RSS KiB", "PSS per container", "ratio vs conmon"))
    print(json.dumps({"n": N, "kernelbox_pss_total_kib": pss_n, "kernelbox_pss_at_1_kib": pss_1,
                      "kernelbox_pss_per_container_kib": per, "kernelbox_marginal_kib": marginal,
                      "conmon_pss_each_kib": theirs["pss_each"], "ratio": per / theirs["pss_each"]}))
    return 0 if per < theirs["pss_each"] else 1


if __name__ == "__main__":
    sys.exit(main())
