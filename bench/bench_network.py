# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Network modules against ansible.builtin.command + ip, and the cost of one call as the host fills up.

1. Converge N named netns (default 100), each with a veth pair to one bridge, in one playbook: through
   the modules (bridge, netns, veth), and the same work through ansible.builtin.command calling `ip`
   the way a careful hand-written playbook does it.  First run and no-change re-run, as ratios.
2. The cost of one no-change call of the netns and veth modules with 2 and with 200 namespaces (each
   with its veth pair on the bridge) on the host: it should stay flat, because every lookup is direct
   (a link by name or index, a netns id by fd, addresses filtered by the kernel), never a scan.
   Measured in-process (the module's own work, with the venv's and the distro's Python) and through `ansible` ad hoc.

Runs inside tests/sandbox (bench/run); everything it makes is removed afterwards.
Environment: KB_BENCH_NETNS (N, default 100), KB_BENCH_ROUNDS (converge rounds, default 1),
KB_BENCH_CALLS (in-process calls per figure, default 25), KB_BENCH_FLAT_ROUNDS (default 3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import REPO, ansible, median, table, timed  # noqa: I100  (bench/ is on sys.path when run)

sys.path.insert(0, os.path.join(REPO, "tests"))
from harness import net  # noqa: E402
from harness.ansible_runner import Ansible, collections_path, venv_bin  # noqa: E402

PREFIX = "kbb"
BRIDGE = PREFIX + "-br"
GATEWAY = "10.88.255.254"
N = int(os.environ.get("KB_BENCH_NETNS", "100"))
ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "1"))
CALLS = int(os.environ.get("KB_BENCH_CALLS", "25"))
FLAT_ROUNDS = int(os.environ.get("KB_BENCH_FLAT_ROUNDS", "3"))
DISTRO_PYTHON = "/usr/bin/python3"


def items(count):
    return [{"ns": "%s-n%d" % (PREFIX, i), "host": "%s-h%d" % (PREFIX, i), "peer": "%s-p%d" % (PREFIX, i),
             "addr": "10.88.%d.%d/16" % (i // 200, i % 200 + 1)} for i in range(count)]


MODULES_PLAYBOOK = """
- name: bench - modules
  hosts: all
  gather_facts: false
  tasks:
    - kernelbox.containers.bridge:
        name: %(bridge)s
        addresses: [%(gateway)s/16]
    - kernelbox.containers.netns:
        name: "{{ item.ns }}"
      loop: "{{ kbb_items }}"
    - kernelbox.containers.veth:
        name: "{{ item.host }}"
        peer: "{{ item.peer }}"
        netns: "{{ item.ns }}"
        peer_name: eth0
        peer_addresses: ["{{ item.addr }}"]
        gateway: [%(gateway)s]
        bridge: %(bridge)s
      loop: "{{ kbb_items }}"
""" % {"bridge": BRIDGE, "gateway": GATEWAY}

# What a careful hand-written playbook does: creation guarded so a re-run does not fail,
# everything else idempotent by nature (replace, set) and reported as unchanged.
IP_PLAYBOOK = """
- name: bench - ansible.builtin.command with ip
  hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: ip link add %(bridge)s type bridge
      register: created
      changed_when: created.rc == 0
      failed_when: created.rc != 0 and 'File exists' not in created.stderr
    - ansible.builtin.command: ip link set %(bridge)s up
      changed_when: false
    - ansible.builtin.command: ip addr replace %(gateway)s/16 dev %(bridge)s
      changed_when: false
    - ansible.builtin.command: ip netns add {{ item.ns }}
      args:
        creates: /run/netns/{{ item.ns }}
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip -n {{ item.ns }} link set lo up
      changed_when: false
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip link add {{ item.host }} type veth peer name eth0 netns {{ item.ns }}
      register: created
      changed_when: created.rc == 0
      failed_when: created.rc != 0 and 'File exists' not in created.stderr
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip link set {{ item.host }} master %(bridge)s up
      changed_when: false
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip -n {{ item.ns }} link set eth0 up
      changed_when: false
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip -n {{ item.ns }} addr replace {{ item.addr }} dev eth0
      changed_when: false
      loop: "{{ kbb_items }}"
    - ansible.builtin.command: ip -n {{ item.ns }} route replace default via %(gateway)s
      changed_when: false
      loop: "{{ kbb_items }}"
""" % {"bridge": BRIDGE, "gateway": GATEWAY}


def clean():
    net.remove_test_objects(PREFIX)


def populate(count):
    """Build ``count`` namespaces with a veth pair each on the bridge, fast, with ip -batch."""
    lines = ["link add %s type bridge" % BRIDGE, "link set %s up" % BRIDGE,
             "addr add %s/16 dev %s" % (GATEWAY, BRIDGE)]
    for item in items(count):
        lines += ["netns add %s" % item["ns"],
                  "link add %s type veth peer name eth0 netns %s" % (item["host"], item["ns"]),
                  "link set %s master %s up" % (item["host"], BRIDGE)]
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        subprocess.run(["ip", "-batch", batch.name], check=True)
    for item in items(count):  # inside each netns: lo and eth0 up, the address, the default route
        ns = item["ns"]
        net.ip("link", "set", "lo", "up", netns=ns)
        net.ip("link", "set", "eth0", "up", netns=ns)
        net.ip("addr", "add", item["addr"], "dev", "eth0", netns=ns)
        net.ip("route", "add", "default", "via", GATEWAY, netns=ns)


def converge_benchmark(runner: Ansible):
    extra = {"kbb_items": items(N)}
    playbooks = {"modules": MODULES_PLAYBOOK, "command + ip": IP_PLAYBOOK}
    samples = {(name, phase): [] for name in playbooks for phase in ("first", "rerun")}
    for round_number in range(ROUNDS):
        order = list(playbooks) if round_number % 2 == 0 else list(reversed(list(playbooks)))
        for name in order:
            clean()
            for phase in ("first", "rerun"):
                result = {}
                seconds = timed(lambda: result.update(run=runner.playbook(playbooks[name], extra_vars=extra)))
                run = result["run"]
                if run.rc != 0:
                    raise SystemExit("%s %s run failed:\n%s" % (name, phase, run.stdout[-3000:]))
                if name == "modules" and phase == "rerun" and run.changed_tasks:
                    raise SystemExit("modules re-run reported changes: %s" % run.changed_tasks)
                samples[(name, phase)].append(seconds)
            check_converged(N)
    clean()
    rows = []
    for phase in ("first", "rerun"):
        ours, theirs = median(samples[("modules", phase)]), median(samples[("command + ip", phase)])
        rows.append((phase, ours, theirs, ours / theirs))
    table("converge %d netns + veth pairs on one bridge, one playbook (median of %d round(s))" % (N, ROUNDS),
          rows, ["run", "modules (s)", "command + ip (s)", "modules / command+ip"])


def check_converged(count):
    """Both playbooks must leave the same, working result: spot-check the last namespace."""
    last = items(count)[-1]
    assert last["addr"] in net.addresses("eth0", last["ns"]), net.addresses("eth0", last["ns"])
    assert net.link(last["host"]).get("master") == BRIDGE
    assert net.default_routes(last["ns"]) == [("-4", GATEWAY, "eth0")]


# Runs inside a fresh interpreter (venv or distro): times the module's own work, no Ansible around it.
IN_PROCESS = r"""
import cProfile, json, pstats, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.netns import NetnsResource
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.veth import VethResource, ARGUMENT_SPEC
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netlink
calls, item = int(sys.argv[2]), json.loads(sys.argv[3])
veth = {key: spec.get("default") for key, spec in ARGUMENT_SPEC.items()}
veth.update(name=item["host"], peer=item["peer"], netns=item["ns"], peer_name="eth0", peer_addresses=[item["addr"]],
            gateway=[sys.argv[4]], bridge=sys.argv[5])
cases = {"netns": lambda: NetnsResource({"name": item["ns"], "state": "present", "loopback": True, "sysctls": {}}),
         "veth": lambda: VethResource(veth)}
# Deterministic witnesses of "no scans": netlink messages received and Python calls made per module call.
received = [0]
def counted(method, size):
    def wrapper(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        received[0] += size(result)
        return result
    return wrapper
netlink.Rtnl._exchange = counted(netlink.Rtnl._exchange, lambda r: max(len(r), 1))
def once(make):
    resource = make()
    outcome = flow.execute(resource)
    getattr(resource, "close", lambda: None)()
    assert not outcome.failed and not outcome.changed, (outcome.msg, outcome.actions)
out = {}
for name, make in cases.items():
    once(make)
    once(make)  # the first calls warm imports and caches
    cpu, wall = [], []
    for _ in range(calls):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        once(make)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    received[0] = 0
    profile = cProfile.Profile()
    profile.enable()
    once(make)
    profile.disable()
    out[name] = {"cpu": sorted(cpu)[calls // 2], "wall": sorted(wall)[calls // 2],
                 "messages": received[0], "pycalls": pstats.Stats(profile).total_calls}
print(json.dumps(out))
"""


def call_cost(python, item):
    proc = subprocess.run([python, "-c", IN_PROCESS, collections_path(), str(CALLS), json.dumps(item), GATEWAY,
                           BRIDGE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("in-process timing failed with %s:\n%s" % (python, proc.stderr[-3000:]))
    return json.loads(proc.stdout)


def adhoc_cost(runner: Ansible, item, repeats=3):
    args = {"netns": {"name": item["ns"]},
            "veth": {"name": item["host"], "peer": item["peer"], "netns": item["ns"], "peer_name": "eth0",
                     "peer_addresses": [item["addr"]], "gateway": [GATEWAY], "bridge": BRIDGE}}
    out = {}
    for module, module_args in args.items():
        times = []
        for _repeat in range(repeats):
            result = {}
            times.append(timed(lambda: result.update(r=runner.module(module, module_args))))
            if result["r"].changed or result["r"].failed:
                raise SystemExit("ad-hoc %s was not a no-change call: %s" % (module, result["r"].result))
        out[module] = median(times)
    return out


def flatness_benchmark(runner: Ansible):
    """Sizes alternate (2, 200, 2, 200, ...) so machine noise falls on both; medians across rounds."""
    item = items(1)[0]
    sizes = (2, 200)
    samples = {}
    for _round in range(FLAT_ROUNDS):
        for size in sizes:
            clean()
            populate(size)
            for how, python in (("venv", venv_bin("python")), ("distro", DISTRO_PYTHON)):
                for module, figures in call_cost(python, item).items():
                    for kind, value in figures.items():
                        samples.setdefault((size, how, kind, module), []).append(value)
            for module, value in adhoc_cost(runner, item).items():
                samples.setdefault((size, "ansible", "wall", module), []).append(value)
    clean()
    rows = []
    for module in ("netns", "veth"):
        for how, kind, label, scale in (("venv", "messages", "netlink messages received, venv Python", 1.0),
                                        ("venv", "pycalls", "Python function calls, venv Python", 1.0),
                                        ("distro", "messages", "netlink messages received, distro Python", 1.0),
                                        ("distro", "pycalls", "Python function calls, distro Python", 1.0),
                                        ("venv", "cpu", "module's own work, CPU, venv Python (ms)", 1000.0),
                                        ("venv", "wall", "module's own work, wall, venv Python (ms)", 1000.0),
                                        ("distro", "cpu", "module's own work, CPU, distro Python (ms)", 1000.0),
                                        ("distro", "wall", "module's own work, wall, distro Python (ms)", 1000.0),
                                        ("ansible", "wall", "ansible ad hoc, wall, venv (s)", 1.0)):
            small = median(samples[(sizes[0], how, kind, module)])
            large = median(samples[(sizes[1], how, kind, module)])
            if kind in ("messages", "pycalls"):
                rows.append((module, label, int(small), int(large), large / small))
            else:
                rows.append((module, label, small * scale, large * scale, large / small))
    table("one no-change module call with %d vs %d namespaces on the host (median of %d round(s))"
          % (sizes + (FLAT_ROUNDS,)), rows, ["module", "measured", "2 netns", "200 netns", "200 / 2"])


def main():
    if os.environ.get("KB_SANDBOX") != "1":
        raise SystemExit("run through bench/run: the benchmark must stay inside tests/sandbox")
    # Temporary playbooks and result records live in a private directory: /tmp is shared with
    # other test runs on this machine, whose clean-ups may sweep it while a long run is going.
    private = os.path.join(REPO, ".build", "bench-tmp")
    os.makedirs(private, exist_ok=True)
    tempfile.tempdir = tempfile.mkdtemp(prefix="network-", dir=private)
    runner = ansible()
    started = time.time()
    try:
        flatness_benchmark(runner)
        converge_benchmark(runner)
    finally:
        clean()
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
    print("\n(bench_network took %.0f s)" % (time.time() - started))


if __name__ == "__main__":
    main()
