# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stages planned in order: planned now, or predicted and planned again just before they act."""

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow, stages
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import KernelboxError, Step


class Whole(flow.Resource):
    """A resource made of stages whose later ones need what earlier steps make (like the container module)."""

    def __init__(self, check_mode=False):
        super().__init__({}, check_mode)
        self.made = set()

    def read(self):
        return None

    def desired(self, current):
        return "up"

    def layers(self):
        return [] if "layers" in self.made else [Step("unpack", lambda: self.made.add("layers"))]

    def mount(self):
        if "layers" not in self.made:
            raise KernelboxError("lower does not exist")
        return [] if "mount" in self.made else [Step("mount", lambda: self.made.add("mount"), "not mounted")]

    def plan(self, current, desired):
        planner = stages.Planner()
        planner.add(stages.Stage("layers", self.layers))
        planner.add(stages.Stage("mount", self.mount, predict=lambda: ["mount (predicted)"], after=("layers",)))
        return planner.steps


def test_a_stage_waiting_for_an_earlier_one_is_predicted_then_planned_again_when_it_acts():
    planned = flow.execute(Whole(check_mode=True))
    assert planned.changed and planned.actions == ["unpack", "mount (predicted)"]
    done = flow.execute(Whole())
    assert done.changed and done.actions == ["unpack", "mount (not mounted)"]  # what was actually done


def test_nothing_pending_nothing_planned():
    whole = Whole()
    whole.made = {"layers", "mount"}
    outcome = flow.execute(whole)
    assert not outcome.changed and outcome.actions == []


def test_a_failure_inside_a_deferred_stage_reports_what_it_finished():
    whole = Whole()

    def fail():
        raise OSError(5, "boom")

    def mount_then_fail():
        return [Step("first part", lambda: None), Step("second part", fail)]
    planner = stages.Planner()
    planner.pending.add("layers")
    planner.add(stages.Stage("mount", mount_then_fail, after=("layers",)))
    whole.plan = lambda current, desired: planner.steps
    outcome = flow.execute(whole)
    assert outcome.failed and outcome.actions == ["first part"] and "after: first part" in outcome.msg
