# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Health check decisions, as Docker makes them (the checks themselves: tests/integration)."""

import json

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import health


@pytest.mark.parametrize("status, streak, passed, in_start, retries, expected", [
    ("starting", 0, True, True, 3, ("healthy", 0)),
    ("starting", 0, False, True, 3, ("starting", 0)),     # start period: failures do not count...
    ("healthy", 0, False, True, 3, ("healthy", 1)),       # ...unless a check already passed in this run
    ("starting", 1, False, False, 3, ("starting", 2)),
    ("starting", 2, False, False, 3, ("unhealthy", 3)),
    ("unhealthy", 3, True, False, 3, ("healthy", 0)),
    ("healthy", 0, False, False, 1, ("unhealthy", 1)),
])
def test_next_status(status, streak, passed, in_start, retries, expected):
    record = {"status": status, "failing_streak": streak}
    assert health.next_status(record, passed, in_start, retries) == expected


def test_a_record_of_an_earlier_run_starts_over():
    runtime = state.Runtime("web", started_at="2030-01-01T00:00:01+00:00")
    old = {"status": "unhealthy", "failing_streak": 9, "run": "2030-01-01T00:00:00+00:00", "log": [{}]}
    assert health.for_run(old, runtime) == {"status": "starting", "failing_streak": 0,
                                            "run": "2030-01-01T00:00:01+00:00", "log": []}
    current = dict(old, run=runtime.started_at)
    assert health.for_run(current, runtime) == current


def test_the_definition_comes_from_the_spec_annotation():
    check = {"test": ["/bin/true"], "interval": 5.0, "timeout": 1.0, "retries": 2, "start_period": 0.0}
    assert health.definition({"annotations": {health.ANNOTATION: json.dumps(check)}}) == check
    assert health.definition({"annotations": {health.ANNOTATION: "not json"}}) is None
    assert health.definition({}) is None
