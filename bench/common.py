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


# The confined cgroup view is shared with the integration tests (tests/harness/cgroup_view.py).
from harness.cgroup_view import enter_confined_cgroup_view, host_cgroup2_mount, in_confined_cgroup_view  # noqa: E402,F401  pylint: disable=unused-import


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
