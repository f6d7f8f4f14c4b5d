# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the cgroup_v2 module and _kernel.cgroup.

The compared state is a dict of the managed interface files with their
values as the kernel prints them, so ``--diff`` and ``actions`` name each
file that changes.  Every check that can fail (controllers missing, a parent
holding processes, an unknown device or PID) runs before the first write.
"""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup, cgroup_limits, cgroup_systemd

_SIZE = dict(type="str")
ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    path=dict(type="str", required=True),
    parent=dict(type="str", default=cgroup.DEFAULT_PARENT),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    cpu_max=dict(type="dict", options=dict(cpus=dict(type="float"), quota=dict(type="str"), period=dict(type="int")),
                 mutually_exclusive=[["cpus", "quota"]], required_one_of=[["cpus", "quota"]]),
    cpu_weight=dict(type="int"),
    memory_max=_SIZE,
    memory_high=_SIZE,
    memory_low=_SIZE,
    memory_swap_max=_SIZE,
    pids_max=dict(type="str"),
    io_max=dict(type="list", elements="dict", options=dict(
        device=dict(type="str", required=True), rbps=dict(type="str"), wbps=dict(type="str"),
        riops=dict(type="str"), wiops=dict(type="str"))),
    cpuset_cpus=dict(type="str"),
    cpuset_mems=dict(type="str"),
    settings=dict(type="dict"),
    freeze=dict(type="bool"),
    pids=dict(type="list", elements="int"),
    timeout=dict(type="float", default=cgroup.DEFAULT_TIMEOUT),
)

_OPTION_OF_FILE = dict((name, option) for name, option in cgroup_limits.DEDICATED_FILES.items())


def _option_for(name: str) -> str:
    return _OPTION_OF_FILE.get(name, "settings.%s" % name)


def _mib(value: int) -> str:
    return "%.1f MiB" % (value / 1048576.0)


class CgroupResource(Resource):
    """A cgroup v2 group below a parent, with its limits, members and freezer state."""

    # Set by the module to module.run_command, for the systemctl fallback of the delegation check.
    run_command: t.Optional[t.Callable[..., t.Tuple[int, str, str]]] = None

    def validate(self) -> None:
        params = self.params
        self.present = params["state"] == "present"
        self.parts, self.parent_depth = cgroup.group_parts(params["path"], params["parent"])
        self.relpath = "/".join(self.parts)
        self.parent_relpath = "/".join(self.parts[:self.parent_depth])
        self.limits = cgroup.Limits.from_params(params).normalise()
        self.pids = sorted(set(params["pids"] or []))
        if any(pid <= 0 for pid in self.pids):
            raise ValidationError("pids: %s: PIDs must be positive" % self.pids)
        if self.pids and not self.present:
            raise ValidationError("pids: processes cannot be moved into a group that state=absent removes")
        if not params["timeout"] > 0:
            raise ValidationError("timeout: must be a positive number of seconds")
        self.timeout = float(params["timeout"])

    # --- read ---------------------------------------------------------------

    def read(self) -> t.Optional[t.Dict[str, t.Any]]:
        self.hierarchy = cgroup.find_hierarchy()
        cgroup.check_containment(self.hierarchy.mount, self.parts, self.parent_depth)
        self.group = cgroup.Cgroup(self.hierarchy, self.parts)
        self.needed = self.limits.controllers()
        self.files: t.Dict[str, str] = {}
        self.pid_places: t.Dict[int, str] = {}
        if self.present:
            cgroup.require_controllers(self.hierarchy, self.needed)
            self._warn_about_delegation()
            self.files = cgroup.limit_files(self.limits)
            self._check_cpuset()
            for pid in self.pids:
                place = cgroup.cgroup_of_pid(pid)
                if place is None:
                    raise KernelboxError("pids: there is no process %d" % pid)
                self.pid_places[pid] = place
        return self._state()

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        return self._state() if acted else current

    def _state(self) -> t.Optional[t.Dict[str, t.Any]]:
        group = self.group
        if not group.exists():
            return None
        frozen = group.read_optional("cgroup.freeze")
        return {
            "path": self.relpath,
            "controllers": sorted(group.controllers()),
            "limits": {name: cgroup.read_limit(group, name) for name in cgroup_limits.ordered(self.files)},
            "frozen": frozen == "1",
            "pids": [pid for pid in self.pids if cgroup.cgroup_of_pid(pid) == self.relpath],
            "descendants": [member.relpath for member in group.descendants()] if not self.present else [],
        }

    def _warn_about_delegation(self) -> None:
        def systemctl(unit: str) -> t.Optional[str]:
            if self.run_command is None:
                return None
            try:  # no systemctl, or it cannot reach systemd: delegation stays unconfirmed
                rc, out, _err = self.run_command(["systemctl", "show", "--property=Delegate", "--value", unit],
                                                 handle_exceptions=False)
            except OSError:
                return None
            return out.strip() if rc == 0 else None
        found = cgroup_systemd.check(self.hierarchy.mount, self.parts[:self.parent_depth], systemctl)
        text = cgroup_systemd.warning(found, self.parent_relpath)
        if text:
            self.warnings.append(text)

    def _check_cpuset(self) -> None:
        wanted = self.files.get("cpuset.cpus")
        if not wanted:
            return
        for ancestor in reversed(self.group.ancestors()):
            offered = ancestor.read_optional("cpuset.cpus.effective") if ancestor.exists() else None
            if offered is not None:
                outside = set(cgroup_limits.parse_id_list(wanted)) - set(cgroup_limits.parse_id_list(offered))
                if outside:
                    raise KernelboxError("cpuset_cpus: CPUs %s are not available below /%s, which offers %s"
                                         % (cgroup_limits.format_id_list(outside), ancestor.relpath, offered))
                return

    # --- desired and plan ---------------------------------------------------

    def desired(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
        if not self.present:
            return None
        inherited = set(current["controllers"]) if current else self._inherited_controllers()
        frozen = self.params["freeze"]
        return {
            "path": self.relpath,
            "controllers": sorted(inherited | set(self.needed)),
            "limits": dict((name, self.files[name]) for name in cgroup_limits.ordered(self.files)),
            "frozen": bool(current and current["frozen"]) if frozen is None else frozen,
            "pids": list(self.pids),
            "descendants": [],
        }

    def _inherited_controllers(self) -> t.Set[str]:
        parent = self.group.parent()
        return parent.subtree_control() if parent.exists() else set()

    def plan(self, current: t.Optional[t.Dict[str, t.Any]],
             desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        if desired is None:
            return self._plan_absent(current)
        group = self.group
        steps = []
        for ancestor in group.ancestors():
            if not ancestor.exists():
                steps.append(Step("create cgroup /%s" % ancestor.relpath,
                                  functools.partial(cgroup.make_group, ancestor), "missing parent"))
        for ancestor, missing in cgroup.controllers_to_enable(group, self.needed):
            conflict = cgroup.internal_process_conflict(ancestor)
            if conflict:
                raise KernelboxError(conflict)
            users = sorted(set(_option_for(name) for c in missing for name in self.needed[c]))
            steps.append(Step("enable %s in /%s/cgroup.subtree_control"
                              % (" ".join("+" + c for c in missing), ancestor.relpath) if ancestor.relpath else
                              "enable %s in the root cgroup.subtree_control" % " ".join("+" + c for c in missing),
                              functools.partial(cgroup.enable_controllers, ancestor, missing),
                              "needed by %s" % ", ".join(users)))
        if current is None:
            steps.append(Step("create cgroup /%s" % self.relpath, functools.partial(cgroup.make_group, group),
                              "absent"))
        else:
            self._check_files_exist(current)
            self._warn_below_usage(desired["limits"])
        before_limits = current["limits"] if current else {}
        for name, value in desired["limits"].items():
            before = before_limits.get(name)
            if before != value:
                steps.append(Step("set %s to %s" % (name, _shown(value)),
                                  functools.partial(cgroup.write_limit, group, name, value, before),
                                  "was %s" % _shown(before) if current else "new group"))
        for pid in self.pids:
            if current is None or pid not in current["pids"]:
                steps.append(Step("move PID %d into /%s" % (pid, self.relpath),
                                  functools.partial(cgroup.move_pid, group, pid),
                                  "was in /%s" % self.pid_places[pid]))
        if self.pids and current is not None and group.subtree_control() and set(self.pids) - set(current["pids"]):
            raise KernelboxError("pids: cannot move processes into /%s: it hands controllers to child groups, and "
                                 "cgroup v2 allows processes only in leaf groups" % self.relpath)
        holder = cgroup.frozen_ancestor(group) if current is not None and not desired["frozen"] else None
        if holder is not None and self.params["freeze"] is False:
            self.warnings.append("/%s stays frozen while its ancestor /%s is frozen (cgroup.freeze 1 there)"
                                 % (self.relpath, holder.relpath))
        if desired["frozen"] != bool(current and current["frozen"]):
            steps.append(Step("%s /%s" % ("freeze" if desired["frozen"] else "thaw", self.relpath),
                              functools.partial(cgroup.freeze, group, desired["frozen"], self.timeout),
                              "freeze=%s" % str(desired["frozen"]).lower()))
        return steps

    def _plan_absent(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        if current is None:
            return []
        group = self.group
        steps = []
        if group.populated():
            steps.append(Step("kill every process in /%s and its descendants" % self.relpath,
                              functools.partial(cgroup.kill, group, self.timeout),
                              "state=absent%s" % (", group frozen" if group.frozen() else "")))
        nested = len(current["descendants"])
        steps.append(Step("remove /%s%s" % (self.relpath, " and its %d descendant group%s, deepest first"
                                            % (nested, "s" if nested > 1 else "") if nested else ""),
                          functools.partial(cgroup.kill_and_remove, group, self.timeout), "state=absent"))
        return steps

    def _check_files_exist(self, current: t.Dict[str, t.Any]) -> None:
        for name, value in current["limits"].items():
            controller = cgroup_limits.controller_of(name)
            if value is None and (controller is None or controller in current["controllers"]):
                raise KernelboxError("%s: /%s has no file %s on this kernel" % (_option_for(name), self.relpath, name))

    def _warn_below_usage(self, limits: t.Dict[str, str]) -> None:
        group = self.group
        checks = (("memory.max", "memory.current", "the kernel reclaims memory and, if it cannot, OOM-kills "
                   "processes in the group"),
                  ("memory.high", "memory.current", "the kernel throttles the group and reclaims memory until "
                   "usage is below the limit"),
                  ("memory.swap.max", "memory.swap.current", "no more memory of the group is swapped out until "
                   "usage drops"))
        for name, usage_file, effect in checks:
            limit = cgroup_limits.memory_bytes(limits[name]) if name in limits else None
            usage = group.read_optional(usage_file)
            if limit is not None and usage is not None and limit < int(usage):
                self.warnings.append("%s %s is below the current usage of /%s (%s %s): %s"
                                     % (_option_for(name), _mib(limit), self.relpath, usage_file, _mib(int(usage)),
                                        effect))
        pids_max = limits.get("pids.max")
        pids_current = group.read_optional("pids.current")
        if pids_max not in (None, "max") and pids_current is not None and int(pids_max) < int(pids_current):
            self.warnings.append("pids_max %s is below the %s tasks now in /%s (pids.current): new forks fail with "
                                 "EAGAIN until the count drops; no running process is killed"
                                 % (pids_max, pids_current, self.relpath))

    # --- report -------------------------------------------------------------

    def diff_view(self, state: t.Any) -> t.Any:
        if state is None:
            return {}
        view = dict(state)
        if not view.get("descendants"):
            view.pop("descendants", None)
        return view

    def result(self, state: t.Optional[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
        group = self.group
        exists = group.exists()
        probe = group if exists else next((a for a in reversed(group.ancestors()) if a.exists()), None)
        return {
            "path": self.relpath,
            "parent": self.parent_relpath,
            "cgroup_path": group.path,
            "exists": exists,
            "controllers": sorted(group.controllers()) if exists else [],
            "limits": dict(state["limits"]) if state else {},
            "frozen": bool(state and state["frozen"]),
            "processes": group.procs() if exists else [],
            "stats": cgroup.read_stats(group) if exists else None,
            "hierarchy": cgroup.features(self.hierarchy, probe),
        }


def _shown(value: t.Optional[str]) -> str:
    if value is None:
        return "unset"
    if value == "":
        return "''"
    return value.replace("\n", "; ")
