# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the ``container`` module, one task per container.

It composes the collection's resources, in one process, never a second
implementation of any of them::

    image_layers (or a rootfs directory) -> overlay_rootfs -> netns -> veth -> container_process

plus what only a whole container needs: its own user-namespace id range and
its address on the bridge (both from the persistent allocator), named
volumes, and the *definition* (container_definition.py) that makes partial
updates work.  Stages are planned in order (stages.py); a stage that needs
what an earlier one makes is predicted, and planned again just before it
acts.  A run that changes nothing reads definition.json, the container's
state files and a few kernel facts (no netlink library, no /proc scan) and
returns: the no-change path.
"""

from __future__ import annotations

import functools
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_definition as defn
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_facts, stages
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import ports
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started", choices=["started", "stopped", "present", "absent", "healthy"]),
    image=dict(type="str"),
    rootfs=dict(type="path"),
    command=dict(type="raw"),
    entrypoint=dict(type="raw"),
    env=dict(type="dict"),
    env_file=dict(type="path"),
    user=dict(type="str"),
    workdir=dict(type="str"),
    hostname=dict(type="str"),
    volumes=dict(type="list", elements="str"),
    network=dict(type="str"),
    ip=dict(type="str"),
    ports=dict(type="list", elements="str"),
    memory=dict(type="raw"),
    cpus=dict(type="float"),
    pids_limit=dict(type="int"),
    cgroup=dict(type="dict"),
    restart_policy=dict(type="str"),
    restart=dict(type="bool", default=False),
    healthcheck=dict(type="dict", options=dict(
        test=dict(type="raw"),
        interval=dict(type="raw"),
        timeout=dict(type="raw"),
        retries=dict(type="int"),
        start_period=dict(type="raw"),
    )),
    labels=dict(type="dict"),
    detach=dict(type="bool"),
    read_only=dict(type="bool"),
    cap_add=dict(type="list", elements="str"),
    cap_drop=dict(type="list", elements="str"),
    sysctls=dict(type="dict"),
    dns=dict(type="list", elements="str"),
    dns_search=dict(type="list", elements="str"),
    etc_hosts=dict(type="dict"),
    userns=dict(type="str", choices=list(defn.USERNS_MODES)),
    stop_signal=dict(type="str"),
    stop_timeout=dict(type="raw"),
    supervisor=dict(type="str", choices=["auto", "kernelbox", "systemd"]),
    cgroup_parent=dict(type="str"),
    recreate=dict(type="bool", default=False),
    wait_timeout=dict(type="float", default=300.0),
    keep_volumes=dict(type="bool", default=True),
)
# image_layers' registry options (image_pull.REGISTRY_OPTIONS, kept equal by a unit test), written out here:
# importing image_pull loads the HTTP and TLS code, which the no-change path must not pay for.
IMAGE_OPTIONS: t.Dict[str, t.Any] = dict(
    pull=dict(type="str", default="missing", choices=["missing", "always", "never"]),
    platform=dict(type="str"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    auth_file=dict(type="path"),
    ca_path=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
)
ARGUMENT_SPEC.update(IMAGE_OPTIONS)
MODULE_KWARGS: t.Dict[str, t.Any] = dict(required_together=[("username", "password")], supports_check_mode=True)

STORAGE_ROOT = "/var/lib/kernelbox/rootfs"
PEER_NAME = "eth0"
IMAGE_ANNOTATION = "io.kernelbox.image"
# As Docker does: unprivileged ports are every port (20.10), and ICMP echo sockets open to every group (ping
# without raw sockets).  Set in the container's own network namespace, never the host's.
NET_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}
SHARED_ROOT = (100000, 100000)  # container_process's one range for every container (spec.DEFAULT_ID_MAPPING)


class ContainerTask(Resource):
    """One container, whole: what its tasks defined, and every kernel object that makes it."""

    layout = kbstate.DEFAULT_LAYOUT
    storage_root = STORAGE_ROOT

    # --- validate ----------------------------------------------------------------------------

    def validate(self) -> None:
        p = self.params
        self.name = validate.container_name(p["name"])
        self.state = p["state"]
        self.lock: t.Optional[kbstate.NameLock] = None
        self.ctx: t.Dict[str, t.Any] = {}
        self.process: t.Any = None
        self.image_resource: t.Any = None
        self.session: t.Any = None
        self.nat_session: t.Any = None  # table inet kernelbox, for the published ports (container_parts)
        self.fast = False
        self.changed_options: t.List[str] = []
        self.given = {} if self.state == "absent" else defn.normalise(p)
        if self.given.get("ports"):
            ports.parse_ports(self.given["ports"])  # a bad entry fails here, before anything is read
        self.where = defn.storage_dir(self.storage_root, self.name)

    # --- read ----------------------------------------------------------------------------------

    def read(self) -> t.Dict[str, t.Any]:
        if not self.check_mode and not (self.state == "absent" and self._no_trace()):
            self.lock = kbstate.lock(self.name, self.layout).acquire()
        self.record = kbstate.load_definition(self.name, self.layout) or {}
        self.stored = dict(self.record.get("definition") or {})
        self.container = kbstate.load(self.name, self.layout)
        return {"status": self._status(), "definition": self.stored}

    def _no_trace(self) -> bool:
        """Nothing on disk under this name: absent has nothing to do and writes nothing (not even the lock's
        directory, so a teardown on a host that never had the container changes nothing)."""
        where = kbstate.paths(self.name, self.layout)
        return not any(os.path.lexists(path) for path in (where.run_dir, where.lib_dir, where.lock_file, self.where))

    def _status(self) -> str:
        container = self.container
        if not container.exists:
            return "absent"
        if container.is_running():
            return "running"
        runtime = container.runtime
        return runtime.status if runtime is not None else kbstate.CREATED

    # --- desired -------------------------------------------------------------------------------

    def desired(self, current: t.Dict[str, t.Any]) -> t.Optional[t.Dict[str, t.Any]]:
        if self.state == "absent":
            return None
        merged = defn.merge(self.stored, self.given)
        self.merged = merged
        if "image" not in merged and "rootfs" not in merged:
            raise ValidationError("image: is required to create container %s (or give rootfs, a directory)"
                                  % self.name)
        if self.state == "healthy" and not merged.get("healthcheck"):
            raise ValidationError("state=healthy: container %s has no healthcheck; give healthcheck" % self.name)
        if not defn.value(merged, "detach"):
            clash = [key for key in ("healthcheck", "restart_policy") if defn.value(merged, key) not in (None, "no")]
            if clash or self.state == "healthy":
                raise ValidationError("detach=false: a job runs once to completion, so it takes no %s"
                                      % (clash[0] if clash else "state=healthy"))
        self._check_ports(merged)
        self.changed_options = defn.changed_options(self.stored, merged)
        container_facts.read_inputs(self)
        self.fast = self._unchanged(current["status"])
        return {"status": self._wanted_status(current["status"]), "definition": merged}

    def _check_ports(self, merged: t.Mapping[str, t.Any]) -> None:
        """Ports need a network to reach the container through, a container that keeps running, and libnftables."""
        asked = defn.value(merged, "ports")
        if not asked:
            return
        if defn.value(merged, "network") == defn.NO_NETWORK:
            raise ValidationError("ports: container %s has no network (network: none), so there is no address to "
                                  "publish %s to; give network: BRIDGE" % (self.name, ", ".join(asked)))
        if not defn.value(merged, "detach"):
            raise ValidationError("detach=false: a job runs once to completion, so it takes no ports")
        from ansible_collections.kernelbox.containers.plugins.module_utils._glue import deps
        if deps.missing_libraries(["libnftables"]):
            raise ValidationError("ports: publishing ports needs libnftables, which this host lacks: install the "
                                  "distro package %s" % deps.TARGET_LIBRARIES["libnftables"][0])

    def _wanted_status(self, now: str) -> str:
        if self.state in ("started", "healthy"):
            return "running"
        if self.state == "stopped":
            return "stopped" if now != "absent" else kbstate.CREATED
        return now if now != "absent" else kbstate.CREATED  # present: as it is, or created

    # --- plan ----------------------------------------------------------------------------------

    def plan(self, current: t.Dict[str, t.Any], desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        if self.fast:
            return []
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import allocate
        self.allocator = allocate.Allocator(self.layout)
        planner = stages.Planner()
        if desired is None:
            for stage in self._removal_stages():
                planner.add(stage)
        else:
            for stage in self._converge_stages(planner):
                planner.add(stage)
        return planner.steps

    def _converge_stages(self, planner: stages.Planner) -> t.Iterator[stages.Stage]:
        from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_parts as parts
        yield stages.Stage("image", functools.partial(parts.image_steps, self))
        yield stages.Stage("identity", functools.partial(parts.identity_steps, self), after=("image",),
                           predict=lambda: [])
        yield stages.Stage("userns", functools.partial(parts.userns_steps, self))
        bridged = defn.value(self.merged, "network") != defn.NO_NETWORK
        if bridged:
            yield stages.Stage("address", functools.partial(parts.address_steps, self))
        yield stages.Stage("quiesce", functools.partial(parts.quiesce_steps, self), after=("image",),
                           predict=lambda: [])
        yield stages.Stage("overlay", functools.partial(parts.overlay_steps, self, "mounted"),
                           after=("image", "quiesce"), predict=functools.partial(parts.overlay_prediction, self))
        yield stages.Stage("volumes", functools.partial(parts.volume_steps, self), after=("userns", "image"),
                           predict=lambda: ["create or hand over the volumes of container %s" % self.name])
        if bridged:
            yield stages.Stage("netns", functools.partial(parts.netns_steps, self, "present"))
            yield stages.Stage("veth", functools.partial(parts.veth_steps, self, "present"),
                               after=("netns", "address"),
                               predict=functools.partial(parts.veth_prediction, self))
        yield stages.Stage("container", functools.partial(parts.process_steps, self),
                           after=("image", "quiesce", "overlay", "userns", "address", "volumes"),
                           predict=functools.partial(parts.process_prediction, self))
        # The published ports once the container is up and its address known; planned now (without the lock)
        # so that a port another container holds fails the task before anything changes.
        after = ("container", "address", "netns", "veth")
        deferred = any(label in planner.pending for label in after)
        yield stages.Stage("ports", functools.partial(parts.ports_steps, self, deferred), after=after)
        yield stages.Stage("release", functools.partial(parts.release_steps, self, keep_current=True))
        yield stages.Stage("record", functools.partial(parts.record_steps, self))

    def _removal_stages(self) -> t.Iterator[stages.Stage]:
        from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_parts as parts
        yield stages.Stage("ports", functools.partial(parts.ports_removal_steps, self))
        yield stages.Stage("container", functools.partial(parts.process_removal_steps, self))
        yield stages.Stage("veth", functools.partial(parts.veth_steps, self, "absent"))
        yield stages.Stage("netns", functools.partial(parts.netns_steps, self, "absent"))
        yield stages.Stage("overlay", functools.partial(parts.overlay_steps, self, "absent"), after=("container",),
                           predict=functools.partial(parts.overlay_removal_prediction, self))
        yield stages.Stage("storage", functools.partial(parts.storage_removal_steps, self), after=("overlay",),
                           predict=lambda: ["remove directory %s (state=absent)" % self.where]
                           if os.path.isdir(self.where) else [])
        yield stages.Stage("release", functools.partial(parts.release_steps, self, keep_current=False))
        yield stages.Stage("volumes", functools.partial(parts.volume_removal_steps, self))
        yield stages.Stage("record", functools.partial(parts.forget_steps, self), after=("container",),
                           predict=lambda: [])

    # --- the no-change path ----------------------------------------------------------------------

    def _unchanged(self, status: str) -> bool:
        """True when the stored definition, the state files and a few kernel facts say nothing is to do."""
        if self.params["recreate"] or self.params["restart"] or self.changed_options or not self.record:
            return False
        container = self.container
        settings = container.settings
        if settings is None or not container.consistent or self.record.get("config_digest") != settings.digest:
            return False
        if not self._status_holds(status):
            return False
        return container_facts.facts_hold(self, self.record.get("facts") or {})

    def _status_holds(self, status: str) -> bool:
        if self.state == "started" and not defn.value(self.merged, "detach"):
            runtime, settings = self.container.runtime, self.container.settings
            return bool(runtime and settings and runtime.status == kbstate.EXITED and runtime.exit_code == 0
                        and runtime.digest == settings.digest)
        if self.state in ("started", "healthy"):
            if status != "running":
                return False
            runtime = self.container.runtime
            supervisor = (runtime.supervisor or {}) if runtime else {}
            if supervisor.get("kind") == "kernelbox":  # the daemon that parents it must be there too
                if not supervisor.get("pid") or supervisor.get("starttime") is None:
                    return False
                return kbstate.ProcessId(supervisor["pid"], supervisor["starttime"], runtime.boot_id).alive()
            return True
        if self.state == "stopped":
            return status != "running"
        return True

    # --- report --------------------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        self.container = kbstate.load(self.name, self.layout)
        final = {"status": self._status(), "definition": getattr(self, "merged", self.stored)}
        if acted:
            from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_parts as parts
            parts.refresh_record(self)
        if self.state == "healthy" and not self.check_mode:
            from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_parts as parts
            parts.wait_healthy(self)
        return final

    def diff_view(self, state: t.Any) -> t.Any:
        if state is None:
            return {"status": "absent"}
        return {"status": state["status"], "definition": dict(state["definition"])}

    def diff(self, current: t.Any, desired: t.Any) -> t.Dict[str, t.Any]:
        """Options before and after; a long list or map that did not change shows as a count and a digest."""
        before, after = defn.summarise(self.diff_view(current), self.diff_view(desired))
        return {"before": before, "after": after}

    def result(self, state: t.Any) -> t.Dict[str, t.Any]:
        return container_facts.result(self, state)

    def failure(self, state: t.Any) -> t.Optional[str]:
        """A job that ran and exited non-zero fails the task, as ansible.builtin.command does."""
        job = container_facts.job_output(self)
        if job is not None and job["rc"] != 0:
            return "non-zero return code" + (" (killed after wait_timeout)" if job.get("timed_out") else "")
        return None

    def close(self) -> None:
        found = getattr(self.image_resource, "image", None)  # an image file image_layers opened
        if found is not None:
            found.close()
        self.image_resource = None
        if getattr(self, "nat_session", None) is not None:
            self.nat_session.close()
            self.nat_session = None
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.lock is not None:
            where = kbstate.paths(self.name, self.layout)
            gone = not os.path.exists(where.run_dir) and not os.path.exists(where.lib_dir)
            self.lock.release(remove=gone)
            self.lock = None


__all__ = ["ARGUMENT_SPEC", "ContainerTask", "KernelboxError"]
