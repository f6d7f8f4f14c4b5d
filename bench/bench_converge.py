# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Converging a fleet of busybox containers through Ansible: kernelbox against containers.podman.

For each N in KB_BENCH_SIZES (default 10, 25, 50) and each strategy in KB_BENCH_STRATEGIES (default
Ansible's ``linear`` and mitogen's ``mitogen_linear``), in the same run and interleaved:

* **kernelbox**: one playbook converging N containers, each from the same image (a rootfs tarball,
  unpacked into layers once beforehand, as ``podman import`` is done once for podman) with its own
  overlay root, network namespace, eth0 on a bridge with its own address, and a supervised, hardened
  ``/bin/sleep``; through the ``container`` role (KB_BENCH_KERNELBOX=role), or the ``container``
  module in a loop (KB_BENCH_KERNELBOX=module, the default once the module exists);
* **containers.podman**: ``containers.podman.podman_container`` in a loop over the same N, same
  image content, podman's default bridge network (rootful podman, CNI), runc, cgroupfs;
* **ping**: ``ansible.builtin.ping`` in the same loop shape: what Ansible itself costs per item.

Each candidate is timed as the wall clock of its ``ansible-playbook`` process: the first converge,
the no-change re-run, and the removal.  ``/bin/sleep`` as PID 1 ignores SIGTERM, so both are created
with a stop timeout of 1 s (SIGKILL after it) to keep the removal short.  The results are checked,
never assumed: the first converge must change all N, the re-run none (reported, not hidden, if
podman's re-run changes something), and each container must be running.

Targets (issue 11), with the default strategy: our first converge at least 2x faster than
containers.podman's; our re-run at least 5x faster than our own first converge; a flat cost per
container (seconds per container at the largest N within 1.25x of that at the smallest).

The controller is a separate virtualenv, .build/bench-venv (bench/requirements-converge.txt: the
``ansible`` 12 package, which ships containers.podman for ansible-core 2.19, and mitogen), made by
tools/install-bench-deps before the sandbox (which has no network).  The target interpreter is
Debian's /usr/bin/python3, with python3-pyroute2 and python3-psutil, as on a real host.

podman runs inside the sandbox, in a cgroup namespace rooted below the test parent (see
bench/common.py), configured through CONTAINERS_CONF with runc, cgroupfs, nofile 1024 and nproc 4096
ulimits and no pids limit (this hybrid host has no pids controller in cgroup v2).  Its storage and
state land on the sandbox's tmpfs /var/lib and /run; everything is removed afterwards.

Environment: KB_BENCH_SIZES, KB_BENCH_STRATEGIES, KB_BENCH_ROUNDS (default 1; medians over rounds),
KB_BENCH_CANDIDATES (default ``kernelbox,podman,ping``), KB_BENCH_KERNELBOX (``role`` or ``module``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import typing as t

from common import REPO, in_confined_cgroup_view, remove_new_cgroups, cgroup_dirs, table  # noqa: I100

sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401  pylint: disable=unused-import
from harness.ansible_runner import HARNESS, collections_path  # noqa: E402
from harness.containers import build_busybox_rootfs, cgroup2_mount  # noqa: E402

SIZES = [int(size) for size in os.environ.get("KB_BENCH_SIZES", "10,25,50").split(",")]
STRATEGIES = os.environ.get("KB_BENCH_STRATEGIES", "linear,mitogen").split(",")
ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "1"))
CANDIDATES = os.environ.get("KB_BENCH_CANDIDATES", "kernelbox,podman,ping").split(",")
BENCH_VENV = os.path.join(REPO, ".build", "bench-venv")
TARGET_PYTHON = "/usr/bin/python3"
WORK = "/var/lib/kbt-bench-converge"  # the sandbox's private tmpfs
BRIDGE, SUBNET = "kbt-bench0", "10.77.0"
PODMAN_IMAGE = "localhost/kbt-bench-busybox:latest"
PODMAN_CONF = """
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
pids_limit = 0
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
PLAY_TIMEOUT = 3600


def kernelbox_flavour() -> str:
    """``module`` once the collection has the container module, else the role; KB_BENCH_KERNELBOX overrides."""
    chosen = os.environ.get("KB_BENCH_KERNELBOX")
    if chosen:
        return chosen
    module = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins",
                          "modules", "container.py")
    return "module" if os.path.exists(module) else "role"


HOST_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: kernelbox.containers.host
      vars:
        kernelbox_host_bridge: %(bridge)s
        kernelbox_host_bridge_address: %(subnet)s.1/24
        kernelbox_host_state: "{{ kbt_state }}"
    - kernelbox.containers.image_layers:
        src: %(image)s
      when: kbt_state == 'present'
"""

ROLE_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: stop fast (sleep as init ignores SIGTERM)
      kernelbox.containers.container_process:
        name: "kbt-c{{ '%%03d' %% kbt_index }}"
        state: absent
        stop_timeout: 0
      loop: "{{ range(kbt_count) | list }}"
      loop_control: {loop_var: kbt_index}
      when: kbt_state == 'absent'
    - name: container
      ansible.builtin.include_role:
        name: kernelbox.containers.container
      loop: "{{ range(kbt_count) | list }}"
      loop_control: {loop_var: kbt_index}
      vars:
        kernelbox_container_name: "kbt-c{{ '%%03d' %% kbt_index }}"
        kernelbox_container_state: "{{ 'started' if kbt_state == 'present' else 'absent' }}"
        kernelbox_container_image: %(image)s
        kernelbox_container_command: [/bin/sleep, "100000"]
        kernelbox_container_address: "%(subnet)s.{{ 10 + kbt_index }}/24"
        kernelbox_container_bridge: %(bridge)s
        kernelbox_container_gateway: %(subnet)s.1
        kernelbox_container_cgroup_parent: %(parent)s
"""

MODULE_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: container
      kernelbox.containers.container:
        name: "kbt-c{{ '%%03d' %% kbt_index }}"
        state: "{{ 'started' if kbt_state == 'present' else 'absent' }}"
        image: %(image)s
        command: [/bin/sleep, "100000"]
        network: %(bridge)s
        cgroup_parent: %(parent)s
        stop_timeout: 1
      loop: "{{ range(kbt_count) | list }}"
      loop_control: {loop_var: kbt_index}
"""

PODMAN_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: container
      containers.podman.podman_container:
        name: "kbt-p{{ '%%03d' %% kbt_index }}"
        image: %(image)s
        command: [/bin/sleep, "100000"]
        state: "{{ 'started' if kbt_state == 'present' else 'absent' }}"
        stop_timeout: 1
      loop: "{{ range(kbt_count) | list }}"
      loop_control: {loop_var: kbt_index}
"""

PING_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: ping
      ansible.builtin.ping:
      loop: "{{ range(kbt_count) | list }}"
      loop_control: {loop_var: kbt_index}
"""


class Play:
    """A playbook run by the bench virtualenv's ansible-playbook; results through the kb_record callback."""

    def __init__(self, text: str, strategy: str, extra_env: t.Optional[t.Dict[str, str]] = None) -> None:
        self.path = os.path.join(WORK, "play-%d.yml" % id(self))
        with open(self.path, "w") as handle:
            handle.write(text)
        self.strategy = strategy
        self.extra_env = extra_env or {}

    def env(self, record: str) -> t.Dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": collections_path(),
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HARNESS, "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "kb_record",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "KB_RECORD_FILE": record,
        })
        if self.strategy == "mitogen":
            site = subprocess.run([os.path.join(BENCH_VENV, "bin", "python"), "-c",
                                   "import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))"],
                                  stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
            env["ANSIBLE_STRATEGY_PLUGINS"] = os.path.join(site, "plugins", "strategy")
            env["ANSIBLE_STRATEGY"] = "mitogen_linear"
        env.update(self.extra_env)
        return env

    def run(self, extra_vars: t.Dict[str, t.Any]) -> t.Tuple[float, t.List[t.Dict[str, t.Any]]]:
        """(wall seconds, recorded task results); raises with the output when the play fails."""
        record = os.path.join(WORK, "record.jsonl")
        if os.path.exists(record):
            os.unlink(record)
        argv = [os.path.join(BENCH_VENV, "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % TARGET_PYTHON, "-e", json.dumps(extra_vars), self.path]
        started = time.perf_counter()
        proc = subprocess.run(argv, env=self.env(record), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=PLAY_TIMEOUT, check=False)
        elapsed = time.perf_counter() - started
        results = []
        if os.path.exists(record):
            with open(record, encoding="utf-8") as reader:
                results = [json.loads(line) for line in reader if line.strip()]
        if proc.returncode != 0:
            raise RuntimeError("ansible-playbook %s (%s) failed with rc %d:\n%s"
                               % (self.path, self.strategy, proc.returncode, proc.stdout[-6000:]))
        return elapsed, results


def changed_items(results: t.List[t.Dict[str, t.Any]], name: str) -> int:
    """How many items of tasks called ``name`` changed (a loop records one result holding ``results``)."""
    count = 0
    for entry in results:
        if entry["task"] != name and not entry["task"].endswith(" : " + name):
            continue
        items = entry["result"].get("results")
        if items is None:
            count += 1 if entry["result"].get("changed") else 0
        else:
            count += sum(1 for item in items if item.get("changed"))
    return count


def changed_tasks(results: t.List[t.Dict[str, t.Any]]) -> t.List[str]:
    names = []
    for entry in results:
        items = entry["result"].get("results")
        if entry["result"].get("changed") or (items and any(item.get("changed") for item in items)):
            names.append(entry["task"])
    return names


class Candidate:
    """One way of converging N containers: its playbook, and how to check that each step did its job."""

    name = ""
    changing_task = "container"

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.play = Play(self.playbook(), strategy, self.extra_env())

    def playbook(self) -> str:
        raise NotImplementedError

    def extra_env(self) -> t.Dict[str, str]:
        return {}

    def running(self, count: int) -> int:
        raise NotImplementedError

    def cycle(self, count: int) -> t.Dict[str, t.Any]:
        """First converge, no-change re-run, removal: seconds for each, and what changed."""
        first, results = self.play.run({"kbt_count": count, "kbt_state": "present"})
        converged = changed_items(results, self.changing_task)
        up = self.running(count)
        rerun, results = self.play.run({"kbt_count": count, "kbt_state": "present"})
        rerun_changed = changed_tasks(results)
        removal, _results = self.play.run({"kbt_count": count, "kbt_state": "absent"})
        left = self.running(count)
        return {"first": first, "rerun": rerun, "removal": removal, "converged": converged, "running": up,
                "rerun_changed": rerun_changed, "left": left}


class Kernelbox(Candidate):
    name = "kernelbox"

    def __init__(self, strategy: str) -> None:
        self.flavour = kernelbox_flavour()
        self.changing_task = "container" if self.flavour == "module" else "The container process"
        super().__init__(strategy)

    def playbook(self) -> str:
        text = MODULE_PLAY if self.flavour == "module" else ROLE_PLAY
        return text % {"image": os.path.join(WORK, "busybox.tar"), "bridge": BRIDGE, "subnet": SUBNET,
                       "parent": os.environ["KB_TEST_CGROUP_PARENT"]}

    def running(self, count: int) -> int:
        up = 0
        for index in range(count):
            path = "/run/kernelbox/containers/kbt-c%03d/state.json" % index
            try:
                with open(path) as handle:
                    up += json.load(handle).get("status") == "running"
            except FileNotFoundError:
                continue
        return up


class Podman(Candidate):
    name = "containers.podman"

    def playbook(self) -> str:
        return PODMAN_PLAY % {"image": PODMAN_IMAGE}

    def extra_env(self) -> t.Dict[str, str]:
        return {"CONTAINERS_CONF": os.path.join(WORK, "containers.conf")}

    def running(self, count: int) -> int:
        proc = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, **self.extra_env()), check=True)
        names = {"kbt-p%03d" % index for index in range(count)}
        return len(names & set(proc.stdout.split()))

    def cycle(self, count: int) -> t.Dict[str, t.Any]:
        # podman makes its groups (libpod_parent, conmon) in a cgroup namespace below the test parent.
        return in_confined_cgroup_view(os.environ["KB_TEST_CGROUP_PARENT"], lambda: self._confined(count))

    def _confined(self, count: int) -> t.Dict[str, t.Any]:
        before = cgroup_dirs()
        try:
            return super().cycle(count)
        finally:
            remove_new_cgroups(before)


class Ping(Candidate):
    name = "ansible.builtin.ping"
    changing_task = "ping"

    def playbook(self) -> str:
        return PING_PLAY

    def running(self, count: int) -> int:
        return count

    def cycle(self, count: int) -> t.Dict[str, t.Any]:
        first, _results = self.play.run({"kbt_count": count})
        return {"first": first, "rerun": first, "removal": 0.0, "converged": count, "running": count,
                "rerun_changed": [], "left": count}


def prepare() -> None:
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    rootfs = build_busybox_rootfs(os.path.join(WORK, "rootfs"))
    subprocess.run(["tar", "-C", rootfs, "-cf", os.path.join(WORK, "busybox.tar"), "."], check=True)
    with open(os.path.join(WORK, "containers.conf"), "w") as handle:
        handle.write(PODMAN_CONF)
    os.makedirs(os.path.join(cgroup2_mount(), os.environ["KB_TEST_CGROUP_PARENT"]), exist_ok=True)
    host = Play(HOST_PLAY % {"bridge": BRIDGE, "subnet": SUBNET, "image": os.path.join(WORK, "busybox.tar")},
                "linear")
    host.run({"kbt_state": "present"})
    if "podman" in CANDIDATES:
        in_confined_cgroup_view(os.environ["KB_TEST_CGROUP_PARENT"], podman_import)


def podman_import() -> None:
    before = cgroup_dirs()
    try:
        env = dict(os.environ, CONTAINERS_CONF=os.path.join(WORK, "containers.conf"))
        subprocess.run(["podman", "import", os.path.join(WORK, "busybox.tar"), PODMAN_IMAGE], env=env,
                       stdout=subprocess.DEVNULL, check=True)
    finally:
        remove_new_cgroups(before)


def clean_up() -> None:
    try:
        host = Play(HOST_PLAY % {"bridge": BRIDGE, "subnet": SUBNET, "image": ""}, "linear")
        host.run({"kbt_state": "absent"})
    finally:
        env = dict(os.environ, CONTAINERS_CONF=os.path.join(WORK, "containers.conf"))
        in_confined_cgroup_view(os.environ["KB_TEST_CGROUP_PARENT"], lambda: subprocess.run(
            ["podman", "system", "reset", "-f"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            check=False).returncode)
        shutil.rmtree(WORK, ignore_errors=True)


CLASSES = {"kernelbox": Kernelbox, "podman": Podman, "ping": Ping}


def measure() -> "Samples":
    """Every (strategy, candidate, N), ROUNDS times; the candidates interleaved, their order alternating."""
    samples: Samples = {}
    for round_index in range(ROUNDS):
        for strategy in STRATEGIES:
            candidates = [CLASSES[name](strategy) for name in CANDIDATES]
            if round_index % 2:
                candidates.reverse()
            for count in SIZES:
                for candidate in candidates:
                    result = candidate.cycle(count)
                    print("%s %-20s N=%-3d first %6.1f s  re-run %6.1f s  removal %6.1f s  converged %d "
                          "running %d  re-run changed %s  left %d  (load %.1f)"
                          % (strategy, candidate.name, count, result["first"], result["rerun"], result["removal"],
                             result["converged"], result["running"], result["rerun_changed"] or "nothing",
                             result["left"], os.getloadavg()[0]), flush=True)
                    samples.setdefault((strategy, candidate.name, count), []).append(result)
    return samples


Samples = t.Dict[t.Tuple[str, str, int], t.List[t.Dict[str, t.Any]]]


def _median(samples: Samples, key: t.Tuple[str, str, int], field: str) -> float:
    return statistics.median(result[field] for result in samples[key])


def _main_table(samples: Samples, strategy: str) -> None:
    rows = []
    for count in SIZES:
        for name in [CLASSES[c].name for c in CANDIDATES]:
            key = (strategy, name, count)
            last = samples[key][-1]
            first, rerun = _median(samples, key, "first"), _median(samples, key, "rerun")
            podman_key = (strategy, Podman.name, count)
            vs_podman = _median(samples, podman_key, "first") / first if podman_key in samples else float("nan")
            rows.append((name, count, first, first / count, rerun, first / rerun, _median(samples, key, "removal"),
                         vs_podman, "%d/%d" % (last["converged"], count), ", ".join(last["rerun_changed"]) or "none"))
    table("converge N busybox containers, strategy %s (seconds; median of %d; load average %.1f)"
          % (strategy, ROUNDS, os.getloadavg()[0]), rows,
          ("candidate", "N", "first converge", "per container", "no-change re-run", "first / re-run",
           "removal", "podman first / this first", "changed on first", "changed on re-run"))


def _floor_table(samples: Samples, strategy: str) -> None:
    """The same, less what Ansible costs per item anyway (the ping loop of the same N): the modules' own share."""
    rows = []
    for count in SIZES:
        floor = _median(samples, (strategy, Ping.name, count), "first")
        ours = (strategy, Kernelbox.name, count)
        net_first = _median(samples, ours, "first") - floor
        net_rerun = _median(samples, ours, "rerun") - floor
        row = [count, floor, net_first, net_first / count, net_rerun, net_first / net_rerun if net_rerun > 0 else
               float("inf")]
        if "podman" in CANDIDATES:
            net_podman = _median(samples, (strategy, Podman.name, count), "first") - floor
            row += [net_podman, net_podman / net_first if net_first > 0 else float("inf")]
        rows.append(row)
    header = ["N", "ping loop (floor)", "ours first - floor", "per container", "ours re-run - floor",
              "first / re-run"]
    if "podman" in CANDIDATES:
        header += ["podman first - floor", "podman / ours"]
    table("strategy %s, beyond Ansible's own per-item cost (each figure minus the ping loop of the same N)"
          % strategy, rows, header)


def _targets(samples: Samples, strategy: str) -> None:
    print("\ntargets, strategy %s:" % strategy)
    for count in SIZES:
        ours = (strategy, Kernelbox.name, count)
        if "podman" in CANDIDATES:
            ratio = _median(samples, (strategy, Podman.name, count), "first") / _median(samples, ours, "first")
            print("  N=%d first converge >= 2x faster than containers.podman: %.2fx -> %s"
                  % (count, ratio, "met" if ratio >= 2 else "MISSED"))
        ratio = _median(samples, ours, "first") / _median(samples, ours, "rerun")
        print("  N=%d re-run >= 5x faster than our first converge: %.2fx -> %s"
              % (count, ratio, "met" if ratio >= 5 else "MISSED"))
    per = [_median(samples, (strategy, Kernelbox.name, count), "first") / count for count in SIZES]
    flat = max(per) / min(per)
    print("  flat cost per container (largest / smallest seconds per container over N=%s): %.2fx -> %s"
          % (",".join(map(str, SIZES)), flat, "met" if flat <= 1.25 else "MISSED"))


def report(samples: Samples) -> int:
    for strategy in STRATEGIES:
        _main_table(samples, strategy)
        if "ping" in CANDIDATES and "kernelbox" in CANDIDATES:
            _floor_table(samples, strategy)
        if "kernelbox" in CANDIDATES:
            _targets(samples, strategy)
    status = 0
    for key, results in samples.items():
        for result in results:
            if result["converged"] != key[2] or result["running"] != key[2] or (
                    key[1] == Kernelbox.name and result["rerun_changed"]) or (key[1] != Ping.name and result["left"]):
                print("CHECK FAILED for %s: %s" % (key, result))
                status = 1
    return status


def main() -> int:
    if os.environ.get("KB_SANDBOX") != "1":
        print("bench_converge: run it through bench/run (inside tests/sandbox)", file=sys.stderr)
        return 2
    if not os.path.exists(os.path.join(BENCH_VENV, "bin", "ansible-playbook")):
        print("bench_converge: %s is missing; run tools/install-bench-deps (bench/run does)" % BENCH_VENV,
              file=sys.stderr)
        return 2
    print("kernelbox through the %s; sizes %s; strategies %s; %d round(s)"
          % ("container module" if kernelbox_flavour() == "module" else "container role", SIZES, STRATEGIES, ROUNDS),
          flush=True)
    try:
        prepare()
        samples = measure()
    finally:
        clean_up()
    return report(samples)


if __name__ == "__main__":
    sys.exit(main())
