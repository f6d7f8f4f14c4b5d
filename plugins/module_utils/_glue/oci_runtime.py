# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue for the oci_runtime module (install kernelbox-runtime on a host).

The command's code is the runtime code copy the supervisor already runs from
(``_runtime/supervise/materialise.py``: /var/lib/kernelbox/runtime/<digest>/,
with ``current`` pointing at it), which holds a ``kernelbox-runtime.py`` entry
script; what this module adds is a wrapper on PATH::

    #!/bin/sh
    exec /usr/bin/python3 -I -S /var/lib/kernelbox/runtime/current/kernelbox-runtime.py "$@"

read (the wrapper's content, whether ``current`` is this code) -> desired ->
plan (copy the code, write the wrapper; or remove the wrapper) -> act -> report.
The code copy stays on ``absent``: it is shared infrastructure (the supervisor's).
"""

from __future__ import annotations

import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step, ValidationError
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise

ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/usr/local/bin/kernelbox-runtime"),
    python=dict(type="path", default="/usr/bin/python3"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)

WRAPPER = '''#!/bin/sh
# kernelbox-runtime: the OCI runtime command line of kernelbox.containers.
# Written by kernelbox.containers.oci_runtime; runs the collection's code copy with the host's Python.
exec %(python)s -I -S %(entry)s "$@"
'''
MAX_WRAPPER = 4096


class OciRuntimeResource(Resource):
    layout = kbstate.DEFAULT_LAYOUT

    def validate(self) -> None:
        p = self.params
        for key in ("path", "python"):
            if not os.path.isabs(p[key]):
                raise ValidationError("%s: %r must be an absolute path" % (key, p[key]))
            if any(c in p[key] for c in "\n\"'$`\\ "):
                raise ValidationError("%s: %r must not contain quotes, spaces, newlines, '$', '`' or '\\\\'"
                                      % (key, p[key]))
        self.path = os.path.normpath(p["path"])
        self.entry = os.path.join(materialise.runtime_root(self.layout), "current", materialise.CLI_SCRIPT)
        self.target, _files = materialise.planned(self.layout)

    def read(self) -> t.Dict[str, t.Any]:
        try:
            with open(self.path, "rb") as handle:
                wrapper: t.Optional[str] = handle.read(MAX_WRAPPER).decode("utf-8", "replace")
        except FileNotFoundError:
            wrapper = None
        executable = wrapper is not None and os.access(self.path, os.X_OK)
        return {"wrapper": wrapper, "executable": executable,
                "code": self.target if materialise.is_current(self.target, self.layout) else None}

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if self.params["state"] == "absent":
            return {"wrapper": None, "executable": False, "code": current["code"]}
        return {"wrapper": WRAPPER % {"python": self.params["python"], "entry": self.entry}, "executable": True,
                "code": self.target}

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        steps = []
        if desired["code"] != current["code"]:
            steps.append(Step("copy the runtime code to %s and point current at it" % self.target,
                              lambda: materialise.materialise(self.layout),
                              "absent" if current["code"] is None else "another version is current"))
        if desired["wrapper"] is None and current["wrapper"] is not None:
            steps.append(Step("remove %s" % self.path, lambda: os.unlink(self.path), "state=absent"))
        elif desired["wrapper"] is not None and (current["wrapper"], current["executable"]) != \
                (desired["wrapper"], True):
            why = "absent" if current["wrapper"] is None else "its content or mode differs"
            steps.append(Step("write %s" % self.path, lambda: self._write(desired["wrapper"]), why))
        return steps

    def _write(self, text: str) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        kbstate.write_bytes_atomic(self.path, text.encode(), mode=0o755)
        os.chmod(self.path, 0o755)

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return {"path": self.path, "installed": state["wrapper"] is not None, "code": state["code"],
                "entry": self.entry}

    def diff_view(self, state: t.Any) -> t.Any:
        return state
