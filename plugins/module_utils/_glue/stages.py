# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a resource made of other resources, planned in order.

A whole container is the image's layers, an overlay root, a netns, a veth
pair and the process: five resources whose own read/plan code is reused,
never repeated.  Some of them need what an earlier one makes (the overlay
needs the layers unpacked, the veth needs the netns), so a stage is planned
*now* when nothing it needs is pending, and otherwise *predicted* now (for
check mode, ``changed`` and ``actions``) and planned again just before it
acts, with what the earlier steps made.  Its steps then report what was
actually done (``Step.done_as``).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError, apply_steps)


@dataclass
class Stage:
    """One part of the whole: ``plan`` reads it and returns its steps; ``predict`` describes them when
    the parts it waits for (``after``, by label) are not made yet."""

    label: str
    plan: t.Callable[[], t.List[Step]]
    predict: t.Optional[t.Callable[[], t.List[str]]] = None
    after: t.Tuple[str, ...] = ()


def plan_resource(resource: Resource) -> t.List[Step]:
    """read -> desired -> plan of a sub-resource (its validate already ran)."""
    current = resource.read()
    return resource.plan(current, resource.desired(current))


@dataclass
class Planner:
    """Plans stages in order; ``pending`` holds the labels of stages that have steps."""

    steps: t.List[Step] = field(default_factory=list)
    pending: t.Set[str] = field(default_factory=set)

    def add(self, stage: Stage) -> None:
        if any(label in self.pending for label in stage.after):
            self._defer(stage)
            return
        planned = stage.plan()
        if planned:
            self.pending.add(stage.label)
        self.steps += planned

    def _defer(self, stage: Stage) -> None:
        described = _describe(stage)
        if not described:
            return
        self.pending.add(stage.label)
        first = Step(described[0], lambda: None, done_as=[])

        def run_now() -> None:
            apply_steps(stage.plan(), t.cast(t.List[str], first.done_as))

        first.apply = run_now
        self.steps.append(first)
        self.steps += [Step(text, lambda: None, done_as=[]) for text in described[1:]]


def _describe(stage: Stage) -> t.List[str]:
    """What a deferred stage will do: its own plan if it can be made already, else the prediction."""
    try:
        return [step.description for step in stage.plan()]
    except (ValidationError, KernelboxError, OSError):
        if stage.predict is None:
            raise
        return stage.predict()
