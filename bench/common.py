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
