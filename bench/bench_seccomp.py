# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Seccomp: compile time of the default profile (cold, cached), install time, cost per syscall.

The rival is libseccomp 2.5 (what runc and crun compile with), driven through
ctypes on the same OCI profile; its binary-tree mode is shown too.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time

from common import REPO, interleaved, median, ratio_rows, table

sys.path.insert(0, os.path.join(REPO, "tests"))
importlib.import_module("conftest")   # makes ansible_collections.kernelbox.containers importable
from harness import libseccomp  # noqa: E402

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc  # noqa: E402

CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE"]
SYSCALLS_PER_RUN = 200000


def in_child(func):
    """Run ``func`` in a forked child (filters are forever) and return its JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, json.dumps(func()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    return json.loads(data.decode())


def timed_install(program):
    def run():
        libc.set_no_new_privs()
        start = time.perf_counter()
        seccomp.install(program)
        return time.perf_counter() - start
    return in_child(run)


def ns_per_syscall(program):
    def run():
        if program is not None:
            libc.set_no_new_privs()
            seccomp.install(program)
        getppid = os.getppid
        start = time.perf_counter()
        for _call in range(SYSCALLS_PER_RUN):
            getppid()
        return (time.perf_counter() - start) / SYSCALLS_PER_RUN * 1e9
    return in_child(run)


FRESH_PROCESS = """
import sys, time
sys.path.insert(0, %r)
import conftest
start = time.perf_counter()
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
imported = time.perf_counter()
seccomp.default_program(%r)
print(imported - start, time.perf_counter() - imported)
""" % (os.path.join(REPO, "tests"), CAPS)


def fresh_process():
    """(import seconds, first default_program seconds) in a new interpreter, as an Ansible module sees it."""
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], check=True, capture_output=True, text=True)
    return [float(value) for value in out.stdout.split()]


def main():
    lib = libseccomp.load()
    oci = seccomp.default_profile(CAPS).to_oci()

    def ours_cold():
        seccomp.compile_profile(seccomp.default_profile(CAPS))

    samples = interleaved({"kernelbox (default_profile + compile)": ours_cold,
                           "libseccomp 2.5 (rules + export)": lambda: libseccomp.compile_oci(lib, oci),
                           "libseccomp 2.5, binary tree": lambda: libseccomp.compile_oci(lib, oci, True)}, rounds=30)
    seccomp.default_program(CAPS)
    cached = []
    for _call in range(2000):
        start = time.perf_counter()
        seccomp.default_program(CAPS)
        cached.append(time.perf_counter() - start)
    rows = [(name, value * 1e3, ratio) for name, value, ratio in
            ratio_rows(samples, "libseccomp 2.5 (rules + export)")]
    rows.append(("kernelbox default_program() cached", median(cached) * 1e3, median(cached) / median(
        samples["libseccomp 2.5 (rules + export)"])))
    fresh = [fresh_process() for _run in range(10)]
    rows.append(("kernelbox first call in a new process (import %.2f ms apart)"
                 % (median([f[0] for f in fresh]) * 1e3), median([f[1] for f in fresh]) * 1e3,
                 median([f[1] for f in fresh]) / median(samples["libseccomp 2.5 (rules + export)"])))
    table("Compile Docker's default profile (14 default caps), median of 30", rows, ["what", "ms", "vs libseccomp"])

    programs = {"kernelbox": seccomp.default_program(CAPS), "libseccomp": libseccomp.compile_oci(lib, oci),
                "libseccomp binary tree": libseccomp.compile_oci(lib, oci, True)}
    install = {name: [timed_install(program) for _run in range(15)] for name, program in programs.items()}
    table("install(): seccomp(SECCOMP_SET_MODE_FILTER) in a fresh child, median of 15",
          [(name, len(programs[name]) // 8, median(values) * 1e6) for name, values in install.items()],
          ["program", "instructions", "us"])

    cost = {name: [] for name in ["no filter"] + list(programs)}
    for _round in range(5):
        for name in cost:
            cost[name].append(ns_per_syscall(programs.get(name)))
    base = statistics.median(cost["no filter"])
    table("getppid() through Python, ns per call (median of 5 x %d)" % SYSCALLS_PER_RUN,
          [(name, statistics.median(values), statistics.median(values) - base) for name, values in cost.items()],
          ["filter", "ns/call", "filter overhead ns"])


if __name__ == "__main__":
    main()
