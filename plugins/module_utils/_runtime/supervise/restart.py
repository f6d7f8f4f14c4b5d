# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the restart policy, as pure decisions.

``no | on-failure[:N] | always | unless-stopped``, as Docker spells them.
``unless-stopped`` restarts like ``always``; the difference is at boot,
where the container module starts it only if no task stopped it.  A restart waits an
exponential back-off (100 ms, doubling, at most 30 s), which starts over when
the previous run lasted at least 10 s.  A requested stop is never undone.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

BASE_DELAY = 0.1
MAX_DELAY = 30.0
RESET_AFTER = 10.0   # a run this long counts as healthy: the back-off starts over

_POLICY = re.compile(r"(?P<name>no|always|unless-stopped|on-failure)(?::(?P<retries>[0-9]+))?")


@dataclass(frozen=True)
class Policy:
    name: str                           # no | on-failure | always | unless-stopped
    max_retries: t.Optional[int] = None  # on-failure only; None = unlimited

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries is not None:
            return "on-failure:%d" % self.max_retries
        return self.name


def parse(text: t.Any) -> Policy:
    """'no', 'always', 'unless-stopped', 'on-failure', 'on-failure:3' -> Policy; raises ValueError."""
    raw = str(text).strip().lower() if text is not None else "no"
    if raw in ("", "none", "false"):
        raw = "no"
    match = _POLICY.fullmatch(raw)
    if not match:
        raise ValueError("%r is not a restart policy; use no, on-failure, on-failure:N, always or unless-stopped"
                         % (text,))
    retries = match.group("retries")
    if retries is not None and match.group("name") != "on-failure":
        raise ValueError("%r: only on-failure takes a retry count" % (text,))
    return Policy(match.group("name"), int(retries) if retries is not None else None)


def should_restart(policy: Policy, exit_code: t.Optional[int], killed_by_signal: bool,
                   restarts_so_far: int, stop_requested: bool) -> bool:
    """Whether an exit leads to a restart.

    A failure is a non-zero exit code, death by a signal, a launch failure
    (exit_code None) or an exit nobody could observe.  ``on-failure:N`` allows
    N restarts in all.
    """
    if stop_requested or policy.name == "no":
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    failed = killed_by_signal or exit_code is None or exit_code != 0
    if not failed:
        return False
    return policy.max_retries is None or restarts_so_far < policy.max_retries


def backoff(consecutive_failures: int) -> float:
    """Seconds to wait before restart number ``consecutive_failures + 1`` of a crash loop."""
    if consecutive_failures < 0:
        consecutive_failures = 0
    return min(MAX_DELAY, BASE_DELAY * (2 ** min(consecutive_failures, 16)))


def next_streak(streak: int, ran_for: t.Optional[float]) -> int:
    """The crash-loop counter after a run of ``ran_for`` seconds (None: it never started)."""
    if ran_for is not None and ran_for >= RESET_AFTER:
        return 0
    return streak + 1
