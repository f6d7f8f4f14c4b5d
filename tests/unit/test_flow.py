# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared flow's decisions, with an in-memory resource (pure logic, no kernel)."""
import errno

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


class Box(flow.Resource):
    """A toy resource: a value in a dict that can be present or absent."""

    def __init__(self, params, check_mode=False, store=None, fail_on=None):
        super().__init__(params, check_mode)
        self.store = store if store is not None else {}
        self.fail_on = fail_on
        self.applied = []

    def validate(self):
        if self.params.get("value") == "bad":
            raise ValidationError("value: 'bad' is not allowed")

    def read(self):
        return {"value": self.store["value"]} if "value" in self.store else None

    def desired(self, current):
        return None if self.params.get("state") == "absent" else {"value": self.params["value"]}

    def _set(self, value):
        if self.fail_on == value:
            raise OSError(errno.EBUSY, "set failed: Device or resource busy", "/box")
        self.applied.append(value)
        self.store["value"] = value

    def plan(self, current, desired):
        if desired is None:
            return [flow.Step("remove box", self.store.clear, "state=absent")] if current else []
        if current == desired:
            return []
        why = "absent" if current is None else "was %s" % current["value"]
        return [flow.Step("set box to %s" % desired["value"], lambda: self._set(desired["value"]), why)]

    def result(self, state):
        return {"box": state}


@pytest.mark.parametrize("store, params, changed, actions", [
    ({}, {"value": 1}, True, ["set box to 1 (absent)"]),
    ({"value": 1}, {"value": 1}, False, []),
    ({"value": 1}, {"value": 2}, True, ["set box to 2 (was 1)"]),
    ({"value": 1}, {"state": "absent"}, True, ["remove box (state=absent)"]),
    ({}, {"state": "absent"}, False, []),
])
def test_decisions(store, params, changed, actions):
    box = Box(params, store=dict(store))
    outcome = flow.execute(box)
    assert (outcome.changed, outcome.actions, outcome.failed) == (changed, actions, False)
    assert outcome.diff["before"] == (store and {"value": store["value"]} or {})


def test_check_mode_plans_but_never_applies():
    store = {"value": 1}
    box = Box({"value": 2}, check_mode=True, store=store)
    outcome = flow.execute(box)
    assert outcome.changed and outcome.actions == ["set box to 2 (was 1)"]
    assert box.applied == [] and store == {"value": 1}
    assert outcome.diff == {"before": {"value": 1}, "after": {"value": 2}}
    assert outcome.result == {"box": {"value": 1}}  # check mode reports the current state


def test_result_reads_again_after_acting():
    box = Box({"value": 3}, store={})
    outcome = flow.execute(box)
    assert outcome.result == {"box": {"value": 3}}


def test_bad_input_fails_before_reading():
    class Exploding(Box):
        def read(self):
            raise AssertionError("read must not run after a validation failure")

    outcome = flow.execute(Exploding({"value": "bad"}))
    assert outcome.failed and not outcome.changed and outcome.msg == "value: 'bad' is not allowed"


def test_failed_step_reports_errno_and_progress():
    box = Box({"value": 5}, store={}, fail_on=5)
    outcome = flow.execute(box)
    assert outcome.failed and not outcome.changed
    assert "Device or resource busy" in outcome.msg and "[errno %d]" % errno.EBUSY in outcome.msg
    assert outcome.result["errno"] == errno.EBUSY


def test_kernelbox_error_carries_result_fields():
    class Refusing(Box):
        def plan(self, current, desired):
            raise flow.KernelboxError("eth0 is not a veth", found_kind="physical")

    outcome = flow.execute(Refusing({"value": 1}))
    assert outcome.failed and outcome.msg == "eth0 is not a veth" and outcome.result == {"found_kind": "physical"}


def test_changed_keys():
    assert flow.changed_keys({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]
    assert flow.changed_keys(None, {"a": 1}) == ["a"]


def test_step_description():
    assert flow.Step("do it", lambda: None).description == "do it"
    assert flow.Step("do it", lambda: None, "because").description == "do it (because)"


class Batched(flow.Resource):
    """Steps that queue into one transaction, then a plain step; the commit may fail."""

    def __init__(self, commit_fails=False):
        super().__init__({})
        self.queued, self.committed, self.log = [], [], []
        self.commit_fails = commit_fails

    def read(self):
        return None

    def desired(self, current):
        return {"rules": ["a", "b"]}

    def _commit(self):
        if self.commit_fails:
            raise OSError(errno.EEXIST, "transaction refused")
        self.committed.extend(self.queued)
        self.log.append("commit %s" % ",".join(self.queued))

    def plan(self, current, desired):
        steps = [flow.Step("add rule %s" % rule, lambda rule=rule: self.queued.append(rule), "new", commit=self._commit)
                 for rule in desired["rules"]]
        return steps + [flow.Step("set sysctl", lambda: self.log.append("sysctl"), "off")]


def test_steps_sharing_a_commit_take_effect_together_before_the_next_step():
    resource = Batched()
    outcome = flow.execute(resource)
    assert not outcome.failed and outcome.actions == ["add rule a (new)", "add rule b (new)", "set sysctl (off)"]
    assert resource.log == ["commit a,b", "sysctl"]  # one commit, after the last queued step, before the next one


def test_a_failed_commit_reports_none_of_its_steps_as_done():
    resource = Batched(commit_fails=True)
    outcome = flow.execute(resource)
    assert outcome.failed and not outcome.changed and outcome.actions == []
    assert "transaction refused" in outcome.msg and "after:" not in outcome.msg
    assert resource.log == [] and resource.committed == []
