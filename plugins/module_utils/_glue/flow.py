# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the one module flow every module uses.

    read current -> compute desired -> plan steps (the diff) -> act unless check mode -> report

A module builds a ``Resource`` from its parameters and calls ``run()``.  The
resource knows its kernel object; this file knows Ansible's contract:

* ``changed`` is true exactly when the plan has steps;
* check mode never calls a step's ``apply`` (the single gate for writes);
* ``diff`` carries ``before``/``after`` for ``--diff``;
* ``actions`` lists each step as "what (why)", done or, in check mode, planned;
* bad input fails before anything is read or changed, with a clear ``msg``;
* a failing step reports which step failed and what had already been done;
* consecutive steps that share a ``commit`` (one kernel transaction, such as an
  nftables batch) take effect together when it runs, after the last of them: if
  it fails, none of them is reported as done.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

# First of ours: every module imports flow (or deps) before anything else, and from then on each file of
# ours is compiled once, not twice, when it comes from the module's zip (see zipload).
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import zipload  # noqa: F401  pylint: disable=unused-import
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

__all__ = ["KernelboxError", "Outcome", "Resource", "Step", "ValidationError", "apply_steps", "changed_keys", "execute",
           "run"]


@dataclass
class Step:
    """One change to make: ``what`` is done because of ``why``.

    With ``commit``, ``apply`` only queues the change; ``commit`` (the same
    callable for every step of one transaction) makes the queued changes take
    effect at once.  The flow calls it after the last consecutive step that
    shares it.
    """

    what: str
    apply: t.Callable[[], t.Any]
    why: str = ""
    # A step that stands for several (a stage planned again just before it acts) lists what it
    # actually did here, as it goes; ``actions`` then shows those instead of ``description``.
    done_as: t.Optional[t.List[str]] = None
    commit: t.Optional[t.Callable[[], t.Any]] = None

    @property
    def description(self) -> str:
        return "%s (%s)" % (self.what, self.why) if self.why else self.what


class Resource:
    """What one module manages.  Subclasses override the hooks they need.

    ``read`` and ``desired`` return plain, normalised data (dicts of
    JSON-able values, or None for "absent"): the diff compares them directly,
    so normalisation belongs in them and nowhere else.
    """

    def __init__(self, params: t.Dict[str, t.Any], check_mode: bool = False) -> None:
        self.params = params
        self.check_mode = check_mode
        self.warnings: t.List[str] = []

    def validate(self) -> None:
        """Check and normalise the input; raise ValidationError.  Must not touch the host."""

    def read(self) -> t.Any:
        """The current state, normalised; None when the object is absent."""
        raise NotImplementedError

    def desired(self, current: t.Any) -> t.Any:
        """The state the parameters ask for, in the same shape as ``read``."""
        raise NotImplementedError

    def plan(self, current: t.Any, desired: t.Any) -> t.List[Step]:
        """The steps that turn ``current`` into ``desired``; empty when they match."""
        raise NotImplementedError

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        """The state to report after acting; by default read again only if something changed."""
        return self.read() if acted else current

    def result(self, state: t.Any) -> t.Dict[str, t.Any]:
        """Return values besides changed/actions/diff, from the final (or, in check mode, current) state."""
        return {}

    def failure(self, state: t.Any) -> t.Optional[str]:
        """A ``msg`` when the steps ran but the task must still fail (a command's non-zero exit), else None.

        Unlike an exception from a step, the steps count as done: ``changed``
        and ``actions`` say they ran, and ``result`` is reported in full.
        """
        return None

    def diff_view(self, state: t.Any) -> t.Any:
        """What ``--diff`` shows for a state; by default the state itself."""
        return state if state is not None else {}

    def diff(self, current: t.Any, desired: t.Any) -> t.Dict[str, t.Any]:
        """``--diff``'s before and after; override to show the two views in the light of each other."""
        return {"before": self.diff_view(current), "after": self.diff_view(desired)}


def changed_keys(before: t.Optional[t.Mapping[str, t.Any]], after: t.Optional[t.Mapping[str, t.Any]]) -> t.List[str]:
    """Keys whose values differ, sorted; a key missing on one side counts as different."""
    before = before or {}
    after = after or {}
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


@dataclass
class Outcome:
    """The flow's result, before it is handed to Ansible."""

    changed: bool
    actions: t.List[str]
    diff: t.Dict[str, t.Any]
    result: t.Dict[str, t.Any]
    warnings: t.List[str]
    failed: bool = False
    msg: str = ""


def execute(resource: Resource) -> Outcome:
    """Run the flow without Ansible (used by ``run`` and by unit tests of decisions)."""
    try:
        resource.validate()
    except ValidationError as exc:
        return Outcome(False, [], {}, {}, resource.warnings, failed=True, msg=str(exc))
    done: t.List[str] = []
    try:
        current = resource.read()
        desired = resource.desired(current)
        steps = resource.plan(current, desired)
        diff = resource.diff(current, desired)
        if resource.check_mode:
            return Outcome(bool(steps), [s.description for s in steps], diff,
                           resource.result(current), resource.warnings)
        apply_steps(steps, done)
        final = resource.refresh(current, bool(steps))
        failure = resource.failure(final)
        return Outcome(bool(steps), done, diff, resource.result(final), resource.warnings,
                       failed=failure is not None, msg=failure or "")
    except ValidationError as exc:
        return Outcome(bool(done), done, {}, {}, resource.warnings, failed=True, msg=str(exc))
    except KernelboxError as exc:
        return Outcome(bool(done), done, {}, dict(exc.result), resource.warnings, failed=True,
                       msg=_with_progress(exc.msg, done))
    except OSError as exc:
        return Outcome(bool(done), done, {}, {"errno": exc.errno}, resource.warnings, failed=True,
                       msg=_with_progress(_describe_oserror(exc), done))


def apply_steps(steps: t.Sequence[Step], done: t.List[str]) -> None:
    """Apply ``steps`` in order, adding what each did to ``done`` once it is done (also for a caller that
    applies a stage of its own, such as stages.Planner); a run of steps sharing a ``commit`` counts as done
    only once the commit has run."""
    pending: t.List[str] = []
    for index, step in enumerate(steps):
        try:
            step.apply()
        except BaseException:
            if step.commit is None:
                done.extend(step.done_as or [])  # the parts of a composite step that did finish
            raise
        did = [step.description] if step.done_as is None else step.done_as
        if step.commit is None:
            done.extend(did)
            continue
        pending.extend(did)
        following = steps[index + 1] if index + 1 < len(steps) else None
        if following is None or following.commit != step.commit:  # bound methods are equal, never identical
            step.commit()
            done.extend(pending)
            pending = []


def _describe_oserror(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename and str(exc.filename) not in text:
        text = "%s: %s" % (text, exc.filename)
    if exc.errno is not None:
        text = "%s [errno %d]" % (text, exc.errno)
    return text


def _with_progress(msg: str, done: t.List[str]) -> str:
    if not done:
        return msg
    return "%s (after: %s)" % (msg, "; ".join(done))


def run(module: t.Any, resource: Resource) -> None:
    """Run the flow for an AnsibleModule and exit with Ansible's result contract."""
    outcome = execute(resource)
    for warning in outcome.warnings:
        module.warn(warning)
    if outcome.failed:
        module.add_path_info = _keep_result_as_is
        module.fail_json(msg=outcome.msg, changed=outcome.changed, actions=outcome.actions, **outcome.result)
    payload = dict(outcome.result)
    payload.update(changed=outcome.changed, actions=outcome.actions)
    if getattr(module, "_diff", False):
        payload["diff"] = outcome.diff
    # Our ``path`` names a kernel object (a netns binding, a cgroup directory), not a file
    # the module manages: skip Ansible's file decoration, which would add a misleading
    # ``state: file`` plus owner and mode to the result.
    module.add_path_info = _keep_result_as_is
    module.exit_json(**payload)


def _keep_result_as_is(kwargs: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    return kwargs
