# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers for bench/bench_*.py: timing, interleaved comparisons, ratio tables.

Benchmarks run inside tests/sandbox (bench/run does this).  To be fair on a
noisy shared machine, the candidates of one comparison are run interleaved
(A, B, A, B, ...) and compared by their medians.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import typing as t

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness.ansible_runner import Ansible, venv_bin  # noqa: E402  (path set up above)


def timed(func: t.Callable[[], t.Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def interleaved(candidates: t.Dict[str, t.Callable[[], t.Any]], rounds: int,
                setup: t.Optional[t.Callable[[str], t.Any]] = None,
                teardown: t.Optional[t.Callable[[str], t.Any]] = None) -> t.Dict[str, t.List[float]]:
    """Time each candidate ``rounds`` times, alternating between them."""
    samples: t.Dict[str, t.List[float]] = {name: [] for name in candidates}
    for _round in range(rounds):
        for name, func in candidates.items():
            if setup:
                setup(name)
            samples[name].append(timed(func))
            if teardown:
                teardown(name)
    return samples


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values)


def table(title: str, rows: t.List[t.Sequence[t.Any]], header: t.Sequence[str]) -> str:
    """A markdown table; floats get 4 significant digits."""
    def cell(value: t.Any) -> str:
        return "%.4g" % value if isinstance(value, float) else str(value)
    lines = ["", "#### " + title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def ratio_rows(samples: t.Dict[str, t.List[float]], baseline: str) -> t.List[t.Tuple[str, float, float]]:
    """(name, median seconds, median / baseline median) for each candidate."""
    base = median(samples[baseline])
    return [(name, median(values), median(values) / base) for name, values in samples.items()]


def ansible() -> Ansible:
    return Ansible(venv_bin("python"))


def host_cgroup2_mount() -> str:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    raise SystemExit("no cgroup2 mount on this host")


def enter_confined_cgroup_view(parent_name: str) -> str:
    """Move into <test parent>/bench, make it our cgroup namespace root, mount that view on /sys/fs/cgroup.

    Every OCI tool run afterwards sees a pure cgroup v2 host whose root is that group: runc and podman
    enable controllers and make their groups (podman's libpod_parent/conmon included) only below the
    test parent, never in the host's cgroup2 root or the v1 hierarchies of a hybrid host (the private
    mount namespace of tests/sandbox hides them).  Returns the host path of the namespace root.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
    host_root = host_cgroup2_mount()
    ns_root = os.path.join(host_root, parent_name, "bench")
    os.makedirs(os.path.join(ns_root, "self"), exist_ok=True)
    with open(os.path.join(ns_root, "cgroup.procs"), "w") as handle:
        handle.write("0")
    libc.unshare(libc.CLONE_NEWCGROUP)
    # Out of the namespace root again, so runc may enable controllers there (no internal processes).
    with open(os.path.join(ns_root, "self", "cgroup.procs"), "w") as handle:
        handle.write("0")
    libc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    return ns_root


def in_confined_cgroup_view(parent_name: str, func: t.Callable[[], t.Any]) -> t.Any:
    """``func()`` in a forked child inside ``enter_confined_cgroup_view``; its JSON-able result comes back.

    A process cannot leave a cgroup namespace, so the child takes it and the caller, still where it
    was, removes the groups afterwards: nothing is left under the test parent.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.forked import call_in_child
    holder: t.Dict[str, str] = {}

    def child() -> t.Any:
        from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
        # Its own mount namespace too: the cgroup2 view on /sys/fs/cgroup ends with the child.
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        holder["root"] = enter_confined_cgroup_view(parent_name)
        return func()

    try:
        return call_in_child(child)
    finally:
        top = os.path.join(host_cgroup2_mount(), parent_name, "bench")
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            for _attempt in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def cgroup_dirs() -> set:
    """Every group of the confined cgroup2 view on /sys/fs/cgroup (see ``enter_confined_cgroup_view``)."""
    return {dirpath for dirpath, _dirs, _files in os.walk("/sys/fs/cgroup")}


def remove_new_cgroups(before: set) -> None:
    """podman leaves libpod_parent/conmon behind after ``podman rm``; remove what it made, deepest first."""
    for path in sorted(cgroup_dirs() - before, key=len, reverse=True):
        for _attempt in range(50):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
