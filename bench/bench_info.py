# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_info at scale: module time for 1 container against 200 (KB_BENCH_CONTAINERS).

N busybox containers are started through the library (the supervisor, as container_process does), each with
its own PID, network and user namespaces and its own cgroup leaf.  Then, interleaved:

* ``container_info, process``: the module run as Ansible runs it on the target, a fresh Python process
  executing the module file with its arguments (interpreter start, imports, the work, the JSON result);
  this is the module time a playbook pays, without the controller's SSH/AnsiballZ overhead;
* ``container_info, in-process``: the module's work alone (``info.collect`` plus ``features.probe``);
* ``lsns -J`` and ``ps -e -o pid,ppid,rss,args``: the standard tools for namespace inodes and the process
  table on the same host, each also one pass over /proc: the floor for what container_info reports.

Target: with 200 containers, the module returns in well under a second of module time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import REPO, interleaved, median, table  # noqa: E402  (bench/common.py sets up sys.path)

sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401  pylint: disable=unused-import
from harness.ansible_runner import collections_path  # noqa: E402
from harness.containers import build_busybox_rootfs, cgroup2_mount  # noqa: E402

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_spec  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import client, engine  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import features, info  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state  # noqa: E402

N = int(os.environ.get("KB_BENCH_CONTAINERS", "200"))
ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "7"))
PYTHON = os.path.join(os.environ.get("KB_VENV", os.path.join(REPO, ".venv")), "bin", "python")


def start_containers(rootfs: str, parent: str, names: list) -> client.Client:
    session = client.Client(materialise.materialise())
    for name in names:
        spec = container_spec.from_options({"rootfs": rootfs, "command": ["/bin/sleep", "100000"]}, name)
        config = spec.to_oci()
        settings = state.Settings(name=name, digest=state.digest(config), stop_timeout=0.2,
                                  cgroup={"path": os.path.join(cgroup2_mount(), parent, name), "owned": True,
                                          "parent": parent, "name": name})
        state.save_persistent(name, config, settings)
        reply = session.request("start", name=name)
        assert reply.get("ok"), reply
    return session


def remove_containers(session: client.Client, parent: str, names: list) -> None:
    for name in names:
        if os.path.exists(state.paths(name).settings_file):
            session.request("stop", name=name, stop_timeout=0.2)
            path = os.path.join(cgroup2_mount(), parent, name)
            if os.path.isdir(path):
                engine.remove_leaf(path)
            state.remove_all(name)


def module_process(args_file: str) -> None:
    """The module as a target-side process: python MODULE ARGS_FILE, as Ansible's module wrapper runs it."""
    module = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins",
                          "modules", "container_info.py")
    env = dict(os.environ, PYTHONPATH=collections_path())
    proc = subprocess.run([PYTHON, module, args_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          check=False)
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    return result


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("bench_info: run it through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="kbt-bench-info-")
    os.chmod(work, 0o755)
    parent = os.environ["KB_TEST_CGROUP_PARENT"]
    os.makedirs(os.path.join(cgroup2_mount(), parent), exist_ok=True)
    names = ["kbt-info-%03d" % i for i in range(N)]
    session = None
    try:
        rootfs = build_busybox_rootfs(os.path.join(work, "rootfs"))
        started = time.monotonic()
        session = start_containers(rootfs, parent, names)
        print("started %d containers in %.1f s" % (N, time.monotonic() - started), flush=True)
        one = os.path.join(work, "one.json")
        every = os.path.join(work, "all.json")
        with open(one, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": {"name": [names[0]], "log_lines": 10}}, handle)
        with open(every, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": {"log_lines": 10}}, handle)
        check = module_process(every)
        running = [item for item in check["containers"] if item["state"] == "running"]
        assert len(running) == N and all(len(item["processes"]) == 1 for item in running), \
            [item["state"] for item in check["containers"]]
        samples = interleaved({
            "container_info, process, 1 container": lambda: module_process(one),
            "container_info, process, %d containers" % N: lambda: module_process(every),
            "container_info, in-process, 1 container": lambda: (info.collect([names[0]]), features.probe()),
            "container_info, in-process, %d containers" % N: lambda: (info.collect(None), features.probe()),
            "lsns -J": lambda: subprocess.run(["lsns", "-J"], stdout=subprocess.DEVNULL, check=True),
            "ps -e -o pid,ppid,rss,args": lambda: subprocess.run(["ps", "-e", "-o", "pid,ppid,rss,args"],
                                                                 stdout=subprocess.DEVNULL, check=True),
        }, ROUNDS)
    finally:
        if session is not None:
            remove_containers(session, parent, names)
        shutil.rmtree(work, ignore_errors=True)
    base = median(samples["lsns -J"])
    rows = [(name, median(values), median(values) / base) for name, values in samples.items()]
    table("container_info module time with %d running containers (median of %d; ratio vs lsns -J)" % (N, ROUNDS),
          rows, ("what", "seconds", "ratio vs lsns"))
    whole = median(samples["container_info, process, %d containers" % N])
    print(json.dumps({"containers": N, "module_seconds_1": median(samples["container_info, process, 1 container"]),
                      "module_seconds_all": whole,
                      "work_seconds_all": median(samples["container_info, in-process, %d containers" % N]),
                      "lsns_seconds": base}))
    return 0 if whole < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
