# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the container_process module and the runtime.

read (state files + /proc + cgroupfs) -> desired (the options as a Spec) ->
plan (create | recreate naming the keys | limits in place | settings |
start/stop) -> act through the supervisor -> report (with the log tail).
The whole run holds the container's name lock, so concurrent runs for one
name serialise and start exactly one container.
"""

from __future__ import annotations

import json
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_options as options
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_report, container_spec
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_limits
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import preflight
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import lifecycle, readiness
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import restart
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import cgroups_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import lsm
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import systemd
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC = options.ARGUMENT_SPEC
READY_OUTPUT = 1 << 16  # wait_for.command: its output is never returned; keep little of it
LIFECYCLE_KEYS = ("restart_policy", "enabled", "stop_signal", "stop_timeout", "log_max_size", "supervisor")


class ContainerResource(Resource):
    """One container: persistent spec + settings, and its process under a supervisor."""

    layout = kbstate.DEFAULT_LAYOUT

    # --- validate ----------------------------------------------------------------

    def validate(self) -> None:
        p = self.params
        self.name = validate.container_name(p["name"])
        self.state = p["state"]
        self.lock: t.Optional[kbstate.NameLock] = getattr(self, "lock", None)
        self.recreated_keys: t.List[str] = []
        self.created_now = False
        self.removed = False
        self.wait_result: t.Optional[t.Dict[str, t.Any]] = None
        # Lifecycle settings as given (None: keep the stored value, or the default for a new container).
        self.given: t.Dict[str, t.Any] = {}
        if p.get("restart_policy") is not None:
            try:
                self.given["restart_policy"] = str(restart.parse(p["restart_policy"]))
            except ValueError as exc:
                raise ValidationError("restart_policy: %s" % exc)
        if p.get("stop_signal") is not None:
            try:
                self.given["stop_signal"] = kbstate.signal_name(kbstate.signal_number(p["stop_signal"]))
            except ValueError as exc:
                raise ValidationError("stop_signal: %s" % exc)
        if p.get("stop_timeout") is not None:
            if p["stop_timeout"] < 0:
                raise ValidationError("stop_timeout: must not be negative")
            self.given["stop_timeout"] = float(p["stop_timeout"])
        if p.get("enabled") is not None:
            self.given["enabled"] = bool(p["enabled"])
        log = p.get("log") or {}
        if log.get("max_size") is not None:
            self.given["log_max_size"] = validate.size_bytes(log["max_size"], "log.max_size")
        self.tail_lines = log.get("tail_lines") if log.get("tail_lines") is not None else 20
        self.wait_for = options.wait_for(p.get("wait_for"))
        self.cgroup_params = options.cgroup_params(p.get("cgroup"))
        self.spec: t.Optional[specs.Spec] = None
        self.oci_limits: t.Optional[cgroup_limits.Limits] = None
        if self.state == "absent":
            return
        spec_options = [key for key in container_spec.SPEC_OPTIONS if options.is_set(p, key)]
        self.keep_spec = False
        if p.get("oci_config") is not None:
            if spec_options:
                raise ValidationError("oci_config: the spec comes from it alone; remove %s, or drop oci_config"
                                      % ", ".join(spec_options))
            if isinstance(p["oci_config"], dict):
                self.spec, self.oci_limits = container_spec.from_oci(p["oci_config"], bundle=None)
        elif spec_options:
            self.spec = container_spec.from_options(p, self.name)
        else:
            self.keep_spec = True  # only a name: act on the stored container as it is

    # --- read --------------------------------------------------------------------

    def read(self) -> t.Optional[t.Dict[str, t.Any]]:
        # A caller that holds the name lock already passes it; absent with nothing on disk takes none.
        if not self.check_mode and self.lock is None and not (self.state == "absent" and self._no_trace()):
            self.lock = kbstate.lock(self.name, self.layout).acquire()
            lifecycle.fault("locked")
        self.container = kbstate.load(self.name, self.layout)
        self.backend = self._backend(self.container.settings.supervisor if self.container.settings else None)
        return self._view(self.container)

    def _no_trace(self) -> bool:
        """Nothing on disk under this name: absent has nothing to do, and writes nothing (not even the lock's
        directory, so a second teardown changes nothing)."""
        where = kbstate.paths(self.name, self.layout)
        return not any(os.path.lexists(path) for path in (where.run_dir, where.lib_dir, where.lock_file))

    def _view(self, container: kbstate.Container) -> t.Optional[t.Dict[str, t.Any]]:
        if not container.exists:
            return None
        settings = container.settings
        config = container.config if container.consistent else None
        self.current_spec = None
        if config is not None:
            try:
                self.current_spec = specs.from_oci(config)
            except ValidationError:
                self.current_spec = None  # written by another version: recreate it
        view: t.Dict[str, t.Any] = {"state": "running" if self._running(container) else "stopped",
                                    "config": config}
        if settings is not None:
            view.update({key: getattr(settings, key) for key in LIFECYCLE_KEYS})
            view["cgroup"] = {"path": settings.cgroup.get("path"), "owned": bool(settings.cgroup.get("owned"))}
        view["limits"] = self._current_limits(container)
        return view

    def _running(self, container: kbstate.Container) -> bool:
        """Running, or waiting out a restart back-off under a live supervisor (it comes back by itself)."""
        if container.is_running():
            return True
        runtime = container.runtime
        return bool(runtime and runtime.status == kbstate.RESTARTING and self.backend.supervisor_alive(runtime))

    def _current_limits(self, container: kbstate.Container) -> t.Dict[str, t.Optional[str]]:
        """What the cgroup files say now (drift shows up), for every file we manage or managed."""
        persisted = container_spec.unified_of(self.current_spec) if container.consistent else {}
        wanted = container_spec.unified_of(self.spec) if self.spec is not None else {}
        names = sorted(set(persisted) | set(wanted))
        path = container.settings.cgroup.get("path") if container.settings else None
        if not names:
            return {}
        group = self._group(path) if path and container.settings.cgroup.get("owned") else None
        if group is None or not group.exists():
            return {name: persisted.get(name, container_spec.LIMIT_RESETS.get(name)) for name in names}
        return {name: cgroup.read_limit(group, name) for name in names}

    @staticmethod
    def _group(path: str) -> t.Optional[cgroup.Cgroup]:
        hierarchy = cgroup.find_hierarchy()
        relative = os.path.relpath(path, hierarchy.mount)
        if relative == "." or relative.startswith(".."):
            return None  # not a group of ours below the cgroup2 mount
        return cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy)

    def _backend(self, kind: t.Optional[str]) -> t.Any:
        wanted = kind or self.params.get("supervisor") or "auto"
        if wanted == "job":  # the container module's detach=false: the task runs it to completion
            from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import job
            return job.JobBackend(self.layout, getattr(self, "job_timeout", 300.0))
        if wanted == "auto":
            wanted = "systemd" if systemd.available() else "kernelbox"
        if wanted == "systemd":
            return systemd.SystemdBackend(self.layout)
        return lifecycle.KernelboxBackend(self.layout)

    # --- desired -----------------------------------------------------------------

    def desired(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
        if self.state == "absent":
            return None
        p = self.params
        stored = self.container.settings if self.container.consistent else None
        if self.keep_spec:
            if self.current_spec is None:
                raise ValidationError("rootfs: is required to create container %s (with command), or give "
                                      "oci_config" % self.name)
            self.spec = self.current_spec.copy()
        elif self.spec is None:  # oci_config given as a path to config.json
            self.spec, self.oci_limits = container_spec.from_oci(
                options.load_oci_config(p["oci_config"]), bundle=os.path.dirname(os.path.abspath(p["oci_config"])))
        if not os.path.isdir(self.spec.root.path):
            raise KernelboxError("rootfs: %s is not a directory" % self.spec.root.path)
        preflight.check(self.spec)  # what the launch would refuse (no command, no cwd...) fails before any write
        lsm.check(self.spec)  # a label this host cannot apply fails now, not at the start
        supervisor = self.container.settings.supervisor if self.container.settings else self.backend.kind
        if p.get("supervisor") not in (None, "auto") and p["supervisor"] != supervisor:
            supervisor = p["supervisor"]
        self.supervisor_kind = supervisor
        self.placement = self._placement(stored, supervisor)
        files = container_spec.limit_files(self.cgroup_params)
        if self.oci_limits is not None:  # the task's cgroup options win over the config's resources
            files = dict(cgroup.limit_files(self.oci_limits), **files)
        if self.keep_spec and any(k in self.cgroup_params for k in container_spec.LIMIT_OPTIONS):
            # limits given: they replace the stored ones (device rules stay: they are not limits)
            devices = list(self.spec.linux.resources.devices) if self.spec.linux.resources else []
            self.spec.linux.resources = specs.Resources(devices=devices) if devices else None
        if files or not self.keep_spec:
            self.spec = container_spec.with_limits(self.spec, files)
        unified = container_spec.unified_of(self.spec)
        if self.spec.linux.resources is not None and self.spec.linux.resources.devices \
                and not self.placement["owned"]:
            raise ValidationError("oci_config: linux.resources.devices: the device program goes on the "
                                  "container's own leaf; drop cgroup.path")
        if unified:
            if not self.placement["owned"]:
                raise ValidationError("cgroup: limits need the container's own leaf; set them on the joined group "
                                      "with cgroup_v2, or drop cgroup.path")
            hierarchy = cgroup.find_hierarchy()
            cgroup.require_controllers(hierarchy, cgroup_limits.NormalisedLimits(files=unified).controllers())
        self.lifecycle = {key: self.given.get(key, getattr(stored, key) if stored else default)
                          for key, default in options.LIFECYCLE_DEFAULTS.items()}
        desired = {
            "state": "running" if self.state in ("started", "restarted") else "stopped",
            "config": self.spec.to_oci(),
            "supervisor": supervisor,
            "cgroup": {"path": self.placement["path"], "owned": self.placement["owned"]},
            "limits": dict(unified),
        }
        desired.update(self.lifecycle)
        if current is not None:  # files managed from now on: show what the kernel has there before
            group = self._group(self.placement["path"]) if self.placement.get("owned") else None
            for name in sorted(set(unified) - set(current["limits"])):
                current["limits"][name] = cgroup.read_limit(group, name) if group and group.exists() else None
            current["limits"] = dict(sorted(current["limits"].items()))
        for name in (current or {}).get("limits") or {}:
            if name not in unified and name in container_spec.LIMIT_RESETS:
                desired["limits"][name] = container_spec.LIMIT_RESETS[name]
            elif name not in unified:
                desired["limits"][name] = current["limits"][name]  # not ours to reset: left as it is
        desired["limits"] = dict(sorted(desired["limits"].items()))
        self._desired_view = desired
        return desired

    def _placement(self, stored: t.Optional[kbstate.Settings], supervisor: str) -> t.Dict[str, t.Any]:
        params = self.cgroup_params
        placed = [key for key in ("path", "parent", "name") if params.get(key)]
        hierarchy = cgroup.find_hierarchy()
        wanted = self.spec.linux.cgroups_path if self.spec is not None else None
        if wanted and (placed or supervisor == "systemd"):
            raise ValidationError("oci_config: linux.cgroupsPath %r: the container is placed by %s already; give "
                                  "one of them" % (wanted, "cgroup.%s" % placed[0] if placed
                                                   else "the systemd supervisor (its unit's cgroup)"))
        if wanted:
            relative = cgroups_path.resolve(wanted, self.name)
            parent, _sep, leaf = relative.rpartition("/")
            group = cgroup.resolve(leaf, parent=parent, hierarchy=hierarchy)
            return {"path": group.path, "owned": True, "parent": parent, "name": leaf}
        if supervisor == "systemd":
            if placed:
                raise ValidationError("cgroup.%s: with the systemd supervisor the container lives in its unit's "
                                      "delegated cgroup (system.slice/%s/container)"
                                      % (placed[0], systemd.unit_name(self.name)))
            unit = "/system.slice/%s" % systemd.unit_name(self.name)
            group = cgroup.resolve(unit + "/container", parent="", hierarchy=hierarchy)
            return {"path": group.path, "owned": True, "parent": unit, "name": "container"}
        if self.keep_spec and stored is not None and not placed:
            return dict(stored.cgroup)
        if params.get("path"):
            group = cgroup.resolve(params["path"], parent="", hierarchy=hierarchy)
            if not group.exists():
                raise KernelboxError("cgroup.path: %s does not exist (create it with cgroup_v2 first)" % group.path)
            return {"path": group.path, "owned": False}
        parent = params.get("parent") or cgroup.DEFAULT_PARENT
        leaf = params.get("name") or self.name
        group = cgroup.resolve(leaf, parent=parent, hierarchy=hierarchy)
        return {"path": group.path, "owned": True, "parent": parent, "name": leaf}

    # --- plan --------------------------------------------------------------------

    def plan(self, current: t.Optional[t.Dict[str, t.Any]],
             desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        name = self.name
        active = self._needs_stop()
        if desired is None:
            if current is None:
                return []
            steps = []
            if active:
                steps.append(Step("stop container %s" % name, self._stop, "state=absent"))
            what = "state, log" + (", cgroup %s" % current["cgroup"]["path"]
                                   if (current.get("cgroup") or {}).get("owned") else "")
            made, shared_with = lifecycle.rootfs_targets(name, self.layout)
            if made and shared_with is None:
                what += ", %d mount point%s its starts made in the rootfs" % (len(made), "" if len(made) == 1 else "s")
            steps.append(Step("remove container %s (%s)" % (name, what), self._remove, "state=absent"))
            return steps
        want_running = desired["state"] == "running"
        if current is None:
            steps = [Step("create container %s" % name, self._create, "absent")]
            if want_running:
                steps.append(Step("start container %s" % name, self._start, "state=%s" % self.state))
            return steps
        keys = self._recreate_keys(current, desired)
        if keys:
            self.recreated_keys = keys
            why = "recreate: %s changed" % ", ".join(keys)
            steps = []
            if active:
                steps.append(Step("stop container %s" % name, self._stop, why))
            steps.append(Step("replace the spec of container %s" % name, self._create, why))
            if want_running:
                steps.append(Step("start container %s" % name, self._start, why))
            return steps
        steps = []
        limit_changes = {k: (current["limits"].get(k), v) for k, v in desired["limits"].items()
                         if current["limits"].get(k) != v}
        if limit_changes:
            text = ", ".join("%s %s -> %s" % (k, b, a) for k, (b, a) in sorted(limit_changes.items()))
            steps.append(Step("apply cgroup limits in place: %s" % text, self._apply_limits,
                              "only linux.resources changed: no restart"))
        elif current["config"] != desired["config"]:
            steps.append(Step("update the spec of container %s" % name, self._write_config,
                              "only linux.resources changed"))
        settings_changes = [k for k in LIFECYCLE_KEYS if current.get(k) != desired[k] and k != "supervisor"]
        if settings_changes:
            text = ", ".join("%s %s -> %s" % (k, current.get(k), desired[k]) for k in settings_changes)
            steps.append(Step("update settings: %s" % text, self._update_settings, "changed"))
        if self.state == "restarted":
            if active:
                steps.append(Step("stop container %s" % name, self._stop, "state=restarted"))
            steps.append(Step("start container %s" % name, self._start, "state=restarted"))
        elif want_running and current["state"] != "running":
            if not self._job_done():
                steps.append(Step("start container %s" % name, self._start, self._why_not_running()))
        elif not want_running and active:
            steps.append(Step("stop container %s" % name, self._stop, "state=stopped"))
        elif want_running and self.backend.kind == "job" and not self.backend.supervisor_alive(
                self.container.runtime):
            why = "the task that ran the job ended before it did"
            steps += [Step("stop container %s" % name, self._stop, why), Step("start container %s" % name,
                                                                              self._start, why)]
        elif want_running and not self.backend.supervisor_alive(self.container.runtime):
            steps.append(Step("start a supervisor for container %s" % name, self.backend.adopt,
                              "it runs, but the supervisor that started it is gone"))
        return steps

    def _needs_stop(self) -> bool:
        """A live init, or a restart that a live supervisor would still carry out."""
        container = self.container
        if container.is_running():
            return True
        runtime = container.runtime
        return bool(runtime and runtime.status in kbstate.ACTIVE and self.backend.supervisor_alive(runtime))

    def _recreate_keys(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[str]:
        if self.current_spec is None:
            return ["config (the stored spec is incomplete or from another version)"]
        keys = specs.recreate_keys(self.current_spec, self.spec)
        if current.get("cgroup") != desired["cgroup"]:
            keys.append("cgroup")
        if current.get("supervisor") not in (None, desired["supervisor"]):
            keys.append("supervisor")
        return sorted(keys)

    def _job_done(self) -> bool:
        """A job (run to completion by its task) that exited 0 for this very spec is not run again."""
        runtime, settings = self.container.runtime, self.container.settings
        return bool(self.backend.kind == "job" and runtime is not None and settings is not None
                    and runtime.status == kbstate.EXITED and runtime.exit_code == 0
                    and runtime.digest == settings.digest)

    def _why_not_running(self) -> str:
        runtime = self.container.runtime
        if runtime is None or runtime.status == kbstate.CREATED:
            return "created, never started"
        if runtime.status == kbstate.FAILED:
            return "its last start failed at step %s" % (runtime.error or {}).get("step")
        if runtime.exit_code is not None:
            return "exited with code %d" % runtime.exit_code
        if runtime.status in kbstate.ACTIVE:
            return "its process is gone and no supervisor runs"
        return "not running (%s)" % runtime.status

    # --- actions -----------------------------------------------------------------

    def _settings(self) -> kbstate.Settings:
        old = self.container.settings
        config = self.spec.to_oci()
        return kbstate.Settings(
            name=self.name, digest=kbstate.digest(config),
            created_at=old.created_at if old is not None and old.created_at else kbstate.now_iso(),
            cgroup=dict(self.placement), supervisor=self.supervisor_kind, **self.lifecycle)

    def _create(self) -> None:
        self.created_now = self.container.settings is None
        if self.supervisor_kind != self.backend.kind:
            self.backend = self._backend(self.supervisor_kind)
        settings = self._settings()
        kbstate.save_persistent(self.name, self.spec.to_oci(), settings, self.layout)
        lifecycle.fault("persisted")
        self.backend.configure(self.name, settings)

    def _write_config(self) -> None:
        kbstate.save_persistent(self.name, self.spec.to_oci(), self._settings(), self.layout)

    def _apply_limits(self) -> None:
        # The cgroup first, then the files: a crash in between is seen as a difference and redone.
        group = self._group(self.placement["path"])
        if group is not None and group.exists():
            cgroup.apply_limits(group, dict(self.desired_limits()))
        self._write_config()

    def desired_limits(self) -> t.Dict[str, str]:
        return dict(self._desired_view["limits"])

    def _update_settings(self) -> None:
        settings = self._settings()
        kbstate.save_settings(self.name, settings, self.layout)
        self.backend.configure(self.name, settings)

    def _start(self) -> None:
        try:
            runtime = self.backend.start(self.name)
        except lifecycle.LaunchFailed as exc:
            tail = self.backend.log_tail(self.name, self.tail_lines)
            msg = exc.msg
            if self.created_now:  # a failed first start leaves nothing of the container behind
                self._remove()
                msg += "; the new container was removed again"
                shared = self.backend.shared_objects()
                if shared:
                    msg += " (what stays is shared by every container: %s)" % "; ".join(shared)
            raise KernelboxError(msg, step=exc.result.get("step"), errno=exc.result.get("errno"), log_tail=tail)
        self.started_runtime = runtime

    def _stop(self) -> None:
        timeout = self.given.get("stop_timeout")
        if timeout is None:
            settings = self.container.settings
            timeout = settings.stop_timeout if settings else options.LIFECYCLE_DEFAULTS["stop_timeout"]
        self.backend.stop(self.name, timeout)

    def _remove(self) -> None:
        lifecycle.fault("removing")
        settings = self.container.settings or kbstate.load(self.name, self.layout).settings
        if settings is not None and settings.cgroup.get("owned") and settings.cgroup.get("path"):
            group = self._group(settings.cgroup["path"])
            if group is not None:
                cgroup.kill_and_remove(group)
        self.backend.forget(self.name)
        lifecycle.release_rootfs_targets(self.name, self.layout)
        kbstate.remove_all(self.name, self.layout)
        self.removed = True

    # --- report ------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        self.container = kbstate.load(self.name, self.layout)
        final = self._view(self.container)
        if self.state in ("started", "restarted") and self.wait_for and not self.check_mode:
            self._wait(final)
        return final

    def _wait(self, final: t.Optional[t.Dict[str, t.Any]]) -> None:
        process = self.container.process()
        try:
            if process is None:
                raise readiness.NotReady("wait_for: the container is not running")
            kind, value, timeout = self.wait_for["kind"], self.wait_for["value"], self.wait_for["timeout"]
            check, what = self._readiness_check(process, kind, value)
            elapsed = readiness.wait(what, check, process, timeout, self.wait_for["interval"])
        except readiness.NotReady as exc:
            tail = self.backend.log_tail(self.name, self.tail_lines)
            text = exc.msg
            if tail:
                text += "; last log lines:\n" + "\n".join(tail)
            fields = self.result(final)
            fields["log_tail"] = tail
            raise KernelboxError(text, **fields)
        self.wait_result = {"ready": True, "elapsed": round(elapsed, 3)}

    def _readiness_check(self, process: kbstate.ProcessId, kind: str,
                         value: t.Any) -> t.Tuple[t.Callable[[float], bool], str]:
        if kind == "port":
            def port_check(_left: float) -> bool:
                return readiness.port_listening(process.pid, value)
            return port_check, "TCP port %d" % value
        if kind == "file":
            def file_check(_left: float) -> bool:
                return readiness.file_exists(process.pid, value)
            return file_check, "file %s" % value
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request, execution

        def command_check(left: float) -> bool:
            # The same path as container_exec: the container's namespaces, cgroup and confinement, never more.
            try:
                container, target = exec_request.open_container(self.name, self.layout)
            except (exec_request.NoSuchContainer, exec_request.NotRunning):
                return False
            try:
                options = exec_request.Options(argv=list(value), timeout=max(left, 0.1), output_limit=READY_OUTPUT)
                outcome = execution.run(target, exec_request.for_container(container, target, options))
            except execution.ExecError:  # could not start it (no such command yet): not ready
                return False
            finally:
                target.close()
            return outcome.rc == 0 and not outcome.timed_out
        return command_check, "command %s" % json.dumps(value)

    def diff_view(self, state: t.Any) -> t.Any:
        if state is None:
            return {"state": "absent"}
        return state

    def result(self, state: t.Any) -> t.Dict[str, t.Any]:
        container = getattr(self, "container", None) or kbstate.load(self.name, self.layout)
        if not hasattr(self, "backend"):
            self.backend = self._backend(container.settings.supervisor if container.settings else None)
        return container_report.report(container, self.layout, self.tail_lines, self.recreated_keys,
                                       self.wait_result, kind=self.backend.kind)

    # --- session end -------------------------------------------------------------

    def close(self) -> None:
        """Release the name lock; its file goes too when the container no longer exists."""
        if getattr(self, "lock", None) is None:
            return
        where = kbstate.paths(self.name, self.layout)
        gone = not os.path.exists(where.run_dir) and not os.path.exists(where.lib_dir)
        self.lock.release(remove=gone)
        self.lock = None
