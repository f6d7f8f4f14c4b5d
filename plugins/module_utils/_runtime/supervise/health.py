# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: health checks, Docker's HEALTHCHECK.

The check is stored in the container's spec, as the annotation
``io.kernelbox.healthcheck`` (JSON: test argv, interval, timeout, retries,
start_period, in seconds), so changing it recreates the container, as in
Docker.  Who runs it:

* the kernelbox supervisor schedules it every ``interval`` while the container
  runs, and starts ``kernelbox-supervisor.py health NAME`` from the code copy
  as a short-lived child (the supervisor never maps the exec code);
* with systemd, a timer unit beside the container's unit starts the same
  command (``kernelbox-NAME-health.timer``, bound to the container's unit).

``check`` runs the test through the same path as container_exec (the
container's namespaces, cgroup and confinement, never more), with
``timeout``, and records the outcome in
``/run/kernelbox/containers/NAME/health.json`` (its only writer)::

    {"status": "starting|healthy|unhealthy", "failing_streak": N, "run": <started_at of the run checked>,
     "log": [{"start", "end", "exit_code", "output"}, ...the last 5]}

Status, as Docker decides it (``next_status``, pure): ``starting`` until the
first success; ``healthy`` after a success; ``unhealthy`` after ``retries``
failures in a row.  Inside ``start_period`` a failure does not count, unless a
check already passed in this run.
"""

from __future__ import annotations

import json
import os
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state

ANNOTATION = "io.kernelbox.healthcheck"
LOG_KEEP = 5            # checks kept in health.json
OUTPUT_KEEP = 4096      # bytes of each check's output kept
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


def definition(config: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
    """The check stored in a config.json, or None."""
    raw = ((config or {}).get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("test"), list) or not data["test"]:
        return None
    return data


def path(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(state.paths(name, layout).run_dir, "health.json")


def load(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> t.Optional[t.Dict[str, t.Any]]:
    return state.read_json(path(name, layout))


def for_run(record: t.Optional[t.Mapping[str, t.Any]], runtime: t.Optional[state.Runtime]) -> t.Dict[str, t.Any]:
    """The record if it is about the container's current run; else a fresh 'starting' one."""
    started = runtime.started_at if runtime else None
    if record and record.get("run") == started:
        return dict(record)
    return {"status": STARTING, "failing_streak": 0, "run": started, "log": []}


def next_status(record: t.Mapping[str, t.Any], passed: bool, in_start_period: bool,
                retries: int) -> t.Tuple[str, int]:
    """(status, failing streak) after one check (pure)."""
    if passed:
        return HEALTHY, 0
    if in_start_period and record.get("status", STARTING) == STARTING:
        return STARTING, record.get("failing_streak", 0)
    streak = record.get("failing_streak", 0) + 1
    return (UNHEALTHY if streak >= retries else record.get("status", STARTING)), streak


def _elapsed_since(iso: t.Optional[str]) -> float:
    if not iso:
        return 0.0
    from datetime import datetime
    try:
        started = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    from datetime import timezone
    return (datetime.now(timezone.utc) - started).total_seconds()


def _run_test(name: str, check_def: t.Mapping[str, t.Any], layout: state.Layout) -> t.Tuple[int, str, float, float]:
    """(exit code, output, start, end) of one check through container_exec's path; 125 if it could not run."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request, execution
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
    start = time.time()
    try:
        container, target = exec_request.open_container(name, layout)
    except KernelboxError as exc:
        return 125, exc.msg, start, time.time()
    try:
        options = exec_request.Options(argv=list(check_def["test"]), timeout=float(check_def.get("timeout", 30)))
        outcome = execution.run(target, exec_request.for_container(container, target, options))
    except KernelboxError as exc:
        return 125, exc.msg, start, time.time()
    finally:
        target.close()
    output = (outcome.stdout + outcome.stderr)[:OUTPUT_KEEP].decode("utf-8", "replace")
    if outcome.timed_out:
        return 124, "timed out after %gs; %s" % (float(check_def.get("timeout", 30)), output), start, time.time()
    return (outcome.rc if outcome.rc is not None else 125), output, start, time.time()


def check(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> int:
    """Run the container's check once and record it (``kernelbox-supervisor.py health NAME``)."""
    container = state.load(name, layout)
    check_def = definition(container.config)
    if check_def is None or container.process() is None:
        return 0  # nothing to check: no check, or it does not run (any more)
    code, output, start, end = _run_test(name, check_def, layout)
    record = for_run(load(name, layout), container.runtime)
    in_start = _elapsed_since(container.runtime.started_at if container.runtime else None) < float(
        check_def.get("start_period", 0))
    record["status"], record["failing_streak"] = next_status(record, code == 0, in_start,
                                                             int(check_def.get("retries", 3)))
    entry = {"start": start, "end": end, "exit_code": code, "output": output}
    record["log"] = (list(record.get("log") or []) + [entry])[-LOG_KEEP:]
    state.write_json_atomic(path(name, layout), record, mode=0o644)
    return 0
