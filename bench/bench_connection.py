# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time per task through the kernelbox connection plugin, against ansible.builtin.command run locally and against
the containers.podman.podman connection plugin into a podman container, in the same run.

Each candidate runs one playbook of 1 task and one of 1 + N tasks (``ansible.builtin.command: /bin/true``) on the
same controller (this venv's ansible-playbook); the time per task is the difference divided by N, so the play's
start-up (Ansible's imports, inventory, forks) cancels out.  Rounds interleave the candidates; medians are compared.

* local: ``-c local`` on this machine (the floor: Ansible's own per-task cost plus a module run);
* kernelbox, pipelined and not: a container from the Python rootfs (tools/build-python-rootfs), on the controller;
* podman: the same rootfs imported as a podman image, ``podman run -d`` with runc and cgroupfs, and
  containers.podman.podman (which does not pipeline) from the ``ansible`` package's collections
  (.build/bench-venv, tools/install-bench-deps).  podman runs in a cgroup namespace rooted below the test parent
  (bench/common.py), so that with cgroupfs it makes no group outside it.

Runs in tests/sandbox (bench/run).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

from common import REPO, in_confined_cgroup_view, median, table  # noqa: E402  (bench/common.py sets up sys.path)

import conftest  # noqa: E402,F401  pylint: disable=unused-import
from harness.ansible_runner import collections_path, venv_bin  # noqa: E402
from harness.containers import PYTHON_ROOTFS_TAR, unpack_shifted  # noqa: E402

N = int(os.environ.get("KB_BENCH_CONNECTION_TASKS", "10"))
ROUNDS = int(os.environ.get("KB_BENCH_CONNECTION_ROUNDS", "3"))
CONTAINER = "kbt-bench-conn"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
PODMAN_IMAGE = "localhost/kbt-bench-conn-py"
PODMAN_CONTAINER = "kbt-bench-conn-pod"


def podman_collections() -> t.Optional[str]:
    """Where containers.podman is: the ansible package's collections in .build/bench-venv."""
    for path in sorted(glob.glob(os.path.join(REPO, ".build", "bench-venv", "lib", "python3*", "site-packages"))):
        if os.path.isdir(os.path.join(path, "ansible_collections", "containers", "podman")):
            return path
    return None


def playbook(hosts: str, tasks: int, variables: t.Dict[str, t.Any]) -> str:
    return json.dumps([{"hosts": hosts, "gather_facts": False, "vars": variables,
                        "tasks": [{"ansible.builtin.command": "/bin/true", "changed_when": False}] * tasks}])


def run_playbook(work: str, hosts: str, tasks: int, variables: t.Dict[str, t.Any], extra_paths: str = "") -> float:
    path = os.path.join(work, "play-%s-%d.json" % (hosts, tasks))
    with open(path, "w") as handle:
        handle.write(playbook(hosts, tasks, variables))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path() + extra_paths, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")
    start = time.perf_counter()
    proc = subprocess.run([venv_bin("ansible-playbook"), "-i", "%s," % hosts, path], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("bench_connection: %s failed:\n%s" % (hosts, proc.stdout[-3000:]))
    return elapsed


def per_task(work: str, hosts: str, variables: t.Dict[str, t.Any], extra_paths: str = "") -> float:
    one = run_playbook(work, hosts, 1, variables, extra_paths)
    many = run_playbook(work, hosts, 1 + N, variables, extra_paths)
    return (many - one) / N


def kernelbox_container(rootfs: str, state: str) -> None:
    args = {"name": CONTAINER, "state": state}
    if state == "started":
        args.update(rootfs=rootfs, command=["/bin/sleep", "infinity"], stop_timeout=1,
                    cgroup={"parent": os.environ["KB_TEST_CGROUP_PARENT"]})
    proc = subprocess.run([venv_bin("ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=/usr/bin/python3", "-m",
                           "kernelbox.containers.container_process", "-a", json.dumps(args)],
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path()),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit("bench_connection: container_process %s failed:\n%s" % (state, proc.stdout[-3000:]))


def podman_round(work: str, tar: str, collections: str, first: bool) -> float:
    """One podman measurement, in the confined cgroup view: image (once), container, two playbooks, removal."""
    if first:
        subprocess.run(PODMAN + ["import", tar, PODMAN_IMAGE], check=True, stdout=subprocess.DEVNULL)
    # No pids limit: podman sets pids.max by default, and a hybrid host has no pids controller in cgroup v2.
    subprocess.run(PODMAN + ["run", "-d", "--name", PODMAN_CONTAINER, "--network", "none", "--pids-limit", "0",
                             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", PODMAN_IMAGE,
                             "/bin/sleep", "infinity"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        variables = {"ansible_connection": "containers.podman.podman",
                     "ansible_podman_extra_args": "--runtime runc --cgroup-manager=cgroupfs"}
        return per_task(work, PODMAN_CONTAINER, variables, ":" + collections)
    finally:
        subprocess.run(PODMAN + ["rm", "-f", "-t", "0", PODMAN_CONTAINER], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


def podman_cleanup() -> None:
    for argv in (["rm", "-f", "-t", "0", PODMAN_CONTAINER], ["rmi", "-f", PODMAN_IMAGE], ["system", "reset", "-f"]):
        subprocess.run(PODMAN + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("bench_connection: run it through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    tar = os.environ.get("KB_PYTHON_ROOTFS", PYTHON_ROOTFS_TAR)
    collections = podman_collections()
    if not os.path.isfile(tar) or collections is None:
        print("bench_connection: needs %s (tools/build-python-rootfs) and containers.podman in .build/bench-venv "
              "(tools/install-bench-deps), both built outside the sandbox" % tar, file=sys.stderr)
        return 2
    parent = os.environ["KB_TEST_CGROUP_PARENT"]
    work = tempfile.mkdtemp(prefix="kbt-bench-conn-")
    os.chmod(work, 0o755)
    samples: t.Dict[str, t.List[float]] = {"local (ansible.builtin.command, -c local)": [],
                                           "kernelbox, pipelined": [], "kernelbox, not pipelined": [],
                                           "podman (containers.podman.podman, no pipelining)": []}
    names = list(samples)
    try:
        rootfs = unpack_shifted(tar, os.path.join(work, "rootfs"))
        kernelbox_container(rootfs, "started")
        try:
            for round_ in range(ROUNDS):
                samples[names[0]].append(per_task(work, "localhost", {"ansible_connection": "local"}))
                for name, piped in ((names[1], True), (names[2], False)):
                    samples[name].append(per_task(work, CONTAINER, {
                        "ansible_connection": "kernelbox.containers.kernelbox", "ansible_pipelining": piped}))
                samples[names[3]].append(in_confined_cgroup_view(
                    parent, lambda first=(round_ == 0): podman_round(work, tar, collections, first)))
        finally:
            kernelbox_container(rootfs, "absent")
            in_confined_cgroup_view(parent, podman_cleanup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = median(samples[names[0]])
    podman = median(samples[names[3]])
    rows = [(name, median(values) * 1000, median(values) / local, median(values) / podman,
             " ".join("%.0f" % (v * 1000) for v in values)) for name, values in samples.items()]
    table("Time per task, %d tasks of command: /bin/true, %d rounds (ms; medians)" % (N, ROUNDS), rows,
          ("candidate", "ms per task", "x local", "x podman", "samples ms"))
    per_task_ms = {name: median(values) * 1000 for name, values in samples.items()}
    print(json.dumps({"tasks": N, "rounds": ROUNDS, "ms_per_task": per_task_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
