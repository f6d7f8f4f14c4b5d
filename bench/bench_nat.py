# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Publishing ports with the nat module against `nft -f` of the same rules.

One container publishes N ports (default 100, one "HOST:CONTAINER" entry each), first on a host without the
table, then again with nothing to change.  The baseline is the same table (skeleton, fixed rules and the N
map elements, as the module left them) applied with `nft -f`: the first run creates it; the re-run is the
idempotent way to apply an nft file, "delete the table and make it again" in one transaction.

1. In process: the module's own work (flow.execute of the nat resource, libnftables through ctypes) in a
   fresh interpreter, against the `nft` binary reading the file.
2. Through Ansible, as a user runs it: the module ad hoc, against ansible.builtin.command running `nft -f`.

Runs inside tests/sandbox (bench/run); the table is removed afterwards.
Environment: KB_BENCH_PORTS (N, default 100), KB_BENCH_ROUNDS (default 5), KB_BENCH_ANSIBLE_ROUNDS (default 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from common import REPO, ansible, interleaved, median, table, timed  # noqa: I100  (bench/ is on sys.path when run)

sys.path.insert(0, os.path.join(REPO, "tests"))
from harness.ansible_runner import collections_path, venv_bin  # noqa: E402

N = int(os.environ.get("KB_BENCH_PORTS", "100"))
ROUNDS = int(os.environ.get("KB_BENCH_ROUNDS", "5"))
ANSIBLE_ROUNDS = int(os.environ.get("KB_BENCH_ANSIBLE_ROUNDS", "3"))
ARGS = {"container": "kbbench", "addresses": ["10.99.0.10/24"],
        "ports": ["%d:%d" % (20000 + 2 * i, 8000 + i) for i in range(N)]}  # every other port: no range collapses

# A fresh interpreter per measurement, as Ansible runs a module: prints the seconds the flow took.
IN_PROCESS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.nat import ARGUMENT_SPEC, NatResource
params = {key: spec.get("default") for key, spec in ARGUMENT_SPEC.items()}
params.update(json.loads(sys.argv[2]))
start = time.perf_counter()
resource = NatResource(params)
outcome = flow.execute(resource)
resource.close()
elapsed = time.perf_counter() - start
assert not outcome.failed, outcome.msg
print(json.dumps({"seconds": elapsed, "changed": outcome.changed}))
"""


def delete_table():
    subprocess.run(["nft", "delete", "table", "inet", "kernelbox"], stderr=subprocess.DEVNULL, check=False)


FLOW_SECONDS = {True: [], False: []}  # the flow alone, by "changed"


def in_process(expect_changed):
    proc = subprocess.run([venv_bin("python"), "-c", IN_PROCESS, collections_path(), json.dumps(ARGS)],
                          stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(proc.stdout)
    assert result["changed"] is expect_changed, result
    FLOW_SECONDS[expect_changed].append(result["seconds"])
    return result["seconds"]


def reference_file():
    """The table as the module made it, as an nft file that makes it again atomically."""
    delete_table()
    in_process(True)
    listing = subprocess.run(["nft", "list", "table", "inet", "kernelbox"], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
    delete_table()
    handle = tempfile.NamedTemporaryFile("w", prefix="kbbench-", suffix=".nft", delete=False)
    handle.write("table inet kernelbox {}\ndelete table inet kernelbox\n" + listing)
    handle.close()
    return handle.name


def nft_file(path):
    subprocess.run(["nft", "-f", path], check=True)


def converged():
    delete_table()
    in_process(True)


def main():
    path = reference_file()
    try:
        samples = {}
        for phase, prepare in (("first", delete_table), ("re-run", converged)):
            FLOW_SECONDS[phase == "first"].clear()
            samples[phase] = interleaved({"nat module": lambda phase=phase: in_process(phase == "first"),
                                          "nft -f": lambda: nft_file(path)},
                                         ROUNDS, setup=lambda _name, prepare=prepare: prepare())
            samples[phase]["flow"] = list(FLOW_SECONDS[phase == "first"])
        rows = []
        for phase, values in samples.items():
            flow_only, whole, theirs = median(values["flow"]), median(values["nat module"]), median(values["nft -f"])
            rows.append((phase, flow_only, whole, theirs, flow_only / theirs, whole / theirs))
        header = ["run", "module flow (s)", "module process (s)", "nft -f (s)", "flow / nft -f", "process / nft -f"]
        table("publish %d ports (module: its flow, and its whole fresh Python process; nft: the binary), median of %d"
              % (N, ROUNDS), rows, header)
        through_ansible(path)
    finally:
        delete_table()
        os.unlink(path)


def through_ansible(path):
    runner = ansible()
    results = {(name, phase): [] for name in ("nat module", "nft -f") for phase in ("first", "re-run")}
    for _round in range(ANSIBLE_ROUNDS):
        for name in ("nat module", "nft -f"):
            delete_table()
            for phase in ("first", "re-run"):
                outcome = {}
                if name == "nat module":
                    seconds = timed(lambda: outcome.update(task=runner.module("nat", ARGS)))
                    assert outcome["task"].changed is (phase == "first"), outcome["task"].result
                else:
                    seconds = timed(lambda: outcome.update(task=runner.module(
                        "ansible.builtin.command", {"argv": ["nft", "-f", path]})))
                assert not outcome["task"].failed, outcome["task"].result
                results[(name, phase)].append(seconds)
    delete_table()
    rows = []
    for phase in ("first", "re-run"):
        ours, theirs = median(results[("nat module", phase)]), median(results[("nft -f", phase)])
        rows.append((phase, ours, theirs, ours / theirs))
    table("publish %d ports through Ansible (ad hoc, wall time of the whole ansible run), median of %d"
          % (N, ANSIBLE_ROUNDS), rows, ["run", "nat module task (s)", "command: nft -f (s)", "module / command"])


if __name__ == "__main__":
    main()
