# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the container_info module and _runtime.info.

A read-only resource: ``read`` collects everything, the plan is always empty,
so the flow reports changed=false and check mode is the same as a real run.
"""

from __future__ import annotations

import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import features, info, state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="list", elements="str"),
    log_lines=dict(type="int", default=10),
    cpu_sample=dict(type="float", default=0.0),
    features=dict(type="bool", default=True),
)


class ContainerInfoResource(Resource):
    layout = state.DEFAULT_LAYOUT

    def validate(self) -> None:
        names = self.params.get("name")
        self.names = None if names is None else [validate.container_name(n, "name") for n in names]
        self.log_lines = self.params["log_lines"]
        if not 0 <= self.log_lines <= 10000:
            raise ValidationError("log_lines: %d is outside 0..10000" % self.log_lines)
        self.cpu_sample = self.params["cpu_sample"]
        if not 0 <= self.cpu_sample <= 60:
            raise ValidationError("cpu_sample: %g is outside 0..60 seconds" % self.cpu_sample)

    def read(self) -> t.Dict[str, t.Any]:
        found = {"containers": info.collect(self.names, self.layout, self.log_lines, self.cpu_sample)}
        if self.params["features"]:
            found["features"] = features.probe()
        return found

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return current

    def plan(self, current: t.Any, desired: t.Any) -> t.List[Step]:
        return []

    def diff_view(self, state: t.Any) -> t.Dict[str, t.Any]:  # pylint: disable=redefined-outer-name
        return {}

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:  # pylint: disable=redefined-outer-name
        return dict(state)
