# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the stages of the ``container`` module (see container.py).

Each ``*_steps`` function plans one stage through the resource that owns
that kernel object (image_layers, overlay_rootfs, netns, veth,
container_process), with parameters built from the container's definition
and from what earlier stages found (``task.ctx``).  Imported only on the
full path: a run that changes nothing never loads pyroute2 or these
resources.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_definition as defn
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_facts, stages
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_facts import overlay_mounted
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import allocate, users, volumes
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import ContainerTask

HEALTH_ANNOTATION = "io.kernelbox.healthcheck"


def _paths(task: "ContainerTask") -> t.Dict[str, str]:
    return {role: os.path.join(task.where, role) for role in ("upper", "work", "merged")}


def _links(task: "ContainerTask") -> t.Any:
    if task.session is None:
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
        task.session = links.Session()
    return task.session


def _noop() -> None:
    """A step that check mode alone ever plans (it is never applied)."""


# --- image ------------------------------------------------------------------------------------

def image_steps(task: "ContainerTask") -> t.List[Step]:
    """The image through image_layers' own resource (a file, or a reference pulled from a registry)."""
    merged = task.merged
    if "rootfs" in merged:
        path = merged["rootfs"]
        if not os.path.isdir(path):
            raise ValidationError("rootfs: %s is not a directory" % path)
        task.ctx.update(lower=[path], image_config={}, identity="rootfs:" + path)
        return []
    image = merged["image"]
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import image_layers
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import IMAGE_OPTIONS
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import image_manifest, layer_store
    file_image = image_layers.is_file_image(image)
    if file_image and not os.path.exists(image):
        raise ValidationError("image: %s does not exist" % image)
    options = {} if file_image else {key: task.params.get(key) for key in IMAGE_OPTIONS}
    if file_image and task.params.get("platform"):
        options["platform"] = task.params["platform"]
    resource = image_layers.resource_for(image_layers.resource_params(image, **options), task.check_mode)
    resource.validate()
    steps = stages.plan_resource(resource)
    task.warnings += resource.warnings
    task.image_resource = resource
    if file_image:
        found = resource.image
        task.ctx["lower"] = [layer_store.lower_dir(resource.store, diff_id) for diff_id in reversed(resource.diff_ids)]
        config, identity = found.config or {}, found.config_digest or found.layers[0].digest
    else:
        pulled = resource.pulled
        task.ctx["lower"] = list(pulled.lower)
        config, identity = pulled.config or {}, pulled.image_id
    task.ctx["image_config"] = image_manifest.runtime_config(config) if config else {}
    task.ctx["identity"] = identity
    return steps


# --- user namespace ---------------------------------------------------------------------------

def userns_steps(task: "ContainerTask") -> t.List[Step]:
    mode = defn.value(task.merged, "userns")
    task.ctx["userns"] = mode
    if mode == "host":
        task.ctx.update(idmap=None, root_ids=(0, 0))
        return []
    if mode == "shared":
        from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import SHARED_ROOT
        task.ctx.update(idmap=None, root_ids=SHARED_ROOT)
        return []
    ranges = allocate.id_ranges()
    pool = ranges.pool()
    held = task.allocator.held(pool.name, task.name)
    slot = task.allocator.predict(pool, task.name)
    _use_slot(task, ranges, slot)
    if held == slot:
        return []
    return [Step("allocate %s to container %s" % (pool.show(slot), task.name),
                 functools.partial(_allocate_slot, task, ranges, pool),
                 "its own user-namespace id range (userns=auto; from %s)" % ranges.source)]


def _use_slot(task: "ContainerTask", ranges: allocate.IdRanges, slot: int) -> None:
    uid_map, gid_map = ranges.mapping(slot)
    task.ctx.update(idmap=(uid_map, gid_map), root_ids=(uid_map[1], gid_map[1]), userns_slot=slot)


def _allocate_slot(task: "ContainerTask", ranges: allocate.IdRanges, pool: allocate.Pool) -> None:
    _use_slot(task, ranges, task.allocator.allocate(pool, task.name))


# --- address on the bridge --------------------------------------------------------------------

def address_steps(task: "ContainerTask") -> t.List[Step]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
    name, bridge_name = task.name, task.merged["network"]
    session = _links(task)
    bridge = links.find_bridge(session, bridge_name)
    wanted_ip = task.merged.get("ip")
    if bridge is None:
        if not task.check_mode:
            raise KernelboxError("network: bridge %s does not exist; make it first (kernelbox.containers.bridge, or "
                                 "the host role)" % bridge_name)
        task.warnings.append("bridge %s does not exist yet; check mode assumes an earlier task creates it"
                             % bridge_name)
        task.ctx.update(bridge=bridge_name, address=wanted_ip, prefix=None, gateway=None, pool=None)
        return [Step("allocate %s on bridge %s to container %s" % (wanted_ip or "an address", bridge_name, name),
                     _noop, "the bridge's subnet")]
    cidrs = [cidr for cidr in session.addresses(bridge) if ":" not in cidr]
    if not cidrs:
        raise KernelboxError("network: bridge %s has no IPv4 address, so there is no subnet to give container %s an "
                             "address from; give the bridge one (kernelbox.containers.bridge addresses)"
                             % (bridge_name, name))
    own = ipaddress.ip_interface(cidrs[0])
    network = own.network
    reserved = [str(ipaddress.ip_interface(c).ip) for c in cidrs if ipaddress.ip_interface(c).ip in network]
    pool = allocate.ipv4_pool(str(network), reserved)
    wanted = None
    if wanted_ip is not None:
        if ipaddress.ip_address(wanted_ip) not in network:
            raise ValidationError("ip: %s is outside the subnet %s of bridge %s" % (wanted_ip, network, bridge_name))
        wanted = int(ipaddress.ip_address(wanted_ip))
    held = task.allocator.held(pool.name, name)
    value = task.allocator.predict(pool, name, wanted)
    task.ctx.update(bridge=bridge_name, address=pool.show(value), prefix=network.prefixlen, gateway=str(own.ip),
                    pool=pool.name)
    if held == value:
        return []
    why = "ip" if wanted is not None else "the lowest free address of %s" % network
    return [Step("allocate address %s on bridge %s to container %s" % (pool.show(value), bridge_name, name),
                 functools.partial(_allocate_address, task, pool, wanted), why)]


def _allocate_address(task: "ContainerTask", pool: allocate.Pool, wanted: t.Optional[int]) -> None:
    task.ctx["address"] = pool.show(task.allocator.allocate(pool, task.name, wanted))


# --- root filesystem ----------------------------------------------------------------------------

def quiesce_steps(task: "ContainerTask") -> t.List[Step]:
    """A running container whose image changed stops first: its overlay cannot be mounted again under it."""
    if not task.container.is_running():
        return []
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import overlay
    mount, _top = overlay.find_overlay(_paths(task)["merged"])
    if mount is None or mount.lower == task.ctx.get("lower"):
        return []
    resource = _process_resource(task, _name_only(task, "stopped"))
    steps = stages.plan_resource(resource)
    for step in steps:
        step.why = "its image changed: its root filesystem is mounted again with the new layers"
    return steps


def overlay_steps(task: "ContainerTask", state: str) -> t.List[Step]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.overlay_rootfs import (
        OverlayRootfsResource)
    where = _paths(task)
    params = {"merged": where["merged"], "lower": task.ctx.get("lower") if state == "mounted" else None,
              "upper": where["upper"], "work": where["work"], "readonly": False, "options": {}, "state": state}
    resource = OverlayRootfsResource(params, task.check_mode)
    resource.validate()
    steps = stages.plan_resource(resource)
    task.warnings += resource.warnings
    return steps


def overlay_prediction(task: "ContainerTask") -> t.List[str]:
    """What overlay_rootfs will do once the layers are there (its own wording, so check mode reads the same)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import overlay
    where = _paths(task)
    mount, _top = overlay.find_overlay(where["merged"])
    found = ["create %s directory %s (missing)" % (role, where[role]) for role in ("merged", "upper", "work")
             if not os.path.isdir(where[role])]
    lower = ":".join(task.ctx.get("lower") or [])
    what = "mount overlay at %s (lower %s, upper %s)" % (where["merged"], lower, where["upper"])
    if mount is None:
        return found + ["%s (not mounted)" % what]
    return found + ["unmount overlay at %s (lower changed)" % where["merged"], "%s (lower changed)" % what]


def overlay_removal_prediction(task: "ContainerTask") -> t.List[str]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import overlay
    where = _paths(task)
    mount, _top = overlay.find_overlay(where["merged"])
    found = ["unmount overlay at %s (state=absent)" % where["merged"]] if mount is not None else []
    found += ["remove %s directory %s (state=absent)" % (role, where[role]) for role in ("upper", "work")
              if os.path.isdir(where[role])]
    if os.path.isdir(where["merged"]):
        found.append("remove mount point directory %s (state=absent)" % where["merged"])
    return found


def storage_removal_steps(task: "ContainerTask") -> t.List[Step]:
    if not os.path.isdir(task.where):
        return []
    return [Step("remove directory %s" % task.where, functools.partial(_remove_storage, task), "state=absent")]


def _remove_storage(task: "ContainerTask") -> None:
    try:
        os.rmdir(task.where)
    except OSError as exc:
        task.warnings.append("%s was kept: %s" % (task.where, exc.strerror))


# --- volumes ------------------------------------------------------------------------------------

def volume_steps(task: "ContainerTask") -> t.List[Step]:
    """Named volumes made for the container's root; sources given to its user with :U (as podman does)."""
    uid, gid = task.ctx["root_ids"]
    steps = []
    for item in defn.value(task.merged, "volumes"):
        if item["kind"] == "volume":
            path = volumes.data_dir(item["source"], task.layout)
            shown = "volume %s" % item["source"]
            owner = volumes.owner(path)
            if owner is None:
                steps.append(Step("create %s, owned by the container's root (host uid %d)" % (shown, uid),
                                  functools.partial(volumes.create, item["source"], uid, gid, task.layout),
                                  "first use"))
                continue
        else:
            path, shown = item["source"], item["source"]
            info = os.lstat(path)
            owner = (info.st_uid, info.st_gid)
        if item["chown"]:
            user = identity(task)
            wanted = host_ids(task, (user.uid, user.gid))
            if owner != wanted:
                steps.append(Step("give %s to the container's user %d:%d (host %d:%d)"
                                  % ((shown, user.uid, user.gid) + wanted),
                                  functools.partial(_chown, task, path, *wanted), "owned by %d:%d; :U" % owner))
        elif owner != (uid, gid) and item["kind"] == "bind" and not item["readonly"]:
            task.warnings.append("%s belongs to host uid %d, not to container %s's root (host uid %d), so the "
                                 "container may not write it; add :U to give it to the container's user"
                                 % (shown, owner[0], task.name, uid))
    return steps


def _chown(task: "ContainerTask", path: str, uid: int, gid: int) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        os.chown(path, uid, gid, follow_symlinks=False)
        return
    report = volumes.chown_tree(path, uid, gid)
    if report.skipped_links or report.skipped_mounts:
        task.warnings.append("%s: %d files with other hard links and %d mounts inside were left as they were"
                             % (path, report.skipped_links, report.skipped_mounts))


def volume_removal_steps(task: "ContainerTask") -> t.List[Step]:
    if task.params["keep_volumes"]:
        return []
    mine = set(defn.names_of(task.stored))
    for other in kbstate.list_names(task.layout):
        if other != task.name:
            record = kbstate.load_definition(other, task.layout) or {}
            mine -= set(defn.names_of(record.get("definition") or {}))
    return [Step("remove volume %s" % name, functools.partial(volumes.remove, name, task.layout),
                 "keep_volumes=false; no other container uses it")
            for name in sorted(mine) if os.path.isdir(os.path.dirname(volumes.data_dir(name, task.layout)))]


# --- network ------------------------------------------------------------------------------------

def netns_steps(task: "ContainerTask", state: str) -> t.List[Step]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import NET_SYSCTLS
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.netns import NetnsResource
    sysctls = {}
    if state == "present":
        sysctls = dict(NET_SYSCTLS)
        sysctls.update({k: v for k, v in defn.value(task.merged, "sysctls").items() if k.startswith("net.")})
    resource = NetnsResource({"name": task.name, "state": state, "loopback": True, "sysctls": sysctls},
                             task.check_mode)
    resource.validate()
    steps = stages.plan_resource(resource)
    task.warnings += resource.warnings
    return steps


def _veth_params(task: "ContainerTask", state: str) -> t.Dict[str, t.Any]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import PEER_NAME
    stem = defn.veth_stem(task.name)
    params = {"name": stem + "h", "peer": stem + "p", "netns": task.name, "peer_name": PEER_NAME,
              "addresses": None, "peer_addresses": None, "mtu": None, "bridge": None, "gateway": None,
              "state": state}
    if state == "present":
        ctx = task.ctx
        params.update(peer_addresses=["%s/%d" % (ctx["address"], ctx["prefix"])], gateway=[ctx["gateway"]],
                      bridge=ctx["bridge"])
    return params


def veth_steps(task: "ContainerTask", state: str) -> t.List[Step]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.veth import VethResource
    if state == "present" and not task.ctx.get("prefix"):
        raise KernelboxError("the bridge's subnet is not known yet")
    resource = VethResource(_veth_params(task, state), task.check_mode)
    resource.validate()
    resource.session = _links(task)
    steps = stages.plan_resource(resource)
    task.warnings += resource.warnings
    return steps


def veth_prediction(task: "ContainerTask") -> t.List[str]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import PEER_NAME
    stem, ctx = defn.veth_stem(task.name), task.ctx
    return ["create veth pair %sh <-> %s in netns %s, on bridge %s, address %s, default route via %s"
            % (stem, PEER_NAME, task.name, ctx.get("bridge"), ctx.get("address") or "(allocated)",
               ctx.get("gateway") or "the bridge")]


# --- the process ----------------------------------------------------------------------------------

def _process_resource(task: "ContainerTask", params: t.Dict[str, t.Any]) -> t.Any:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_process import (
        ContainerResource)
    resource = ContainerResource(params, task.check_mode)
    resource.layout = task.layout
    resource.lock = task.lock
    resource.job_timeout = task.params["wait_timeout"]
    resource.validate()
    return resource


def _blank_params(task: "ContainerTask", state: str) -> t.Dict[str, t.Any]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_options import ARGUMENT_SPEC
    params: t.Dict[str, t.Any] = {key: None for key in ARGUMENT_SPEC}
    params.update(name=task.name, state=state, readonly_rootfs=False, no_new_privileges=True,
                  log={"max_size": None, "tail_lines": 20})
    return params


def _name_only(task: "ContainerTask", state: str) -> t.Dict[str, t.Any]:
    return _blank_params(task, state)


def _read_container_file(task: "ContainerTask", path: str) -> t.Optional[str]:
    merged = _paths(task)["merged"]
    if overlay_mounted(merged):
        return users.read_file(merged, path)
    lower = task.ctx.get("lower") or []
    if lower and all(os.path.isdir(item) for item in lower):
        try:
            return users.read_from_layers(lower, path)
        except users.NeedsMountedRoot:
            pass
    raise KernelboxError("the root filesystem of container %s is not there yet" % task.name)


def identity(task: "ContainerTask") -> users.Identity:
    """The process's user as numeric ids inside the container (from its /etc/passwd and /etc/group)."""
    if "user_ids" not in task.ctx:
        user = defn.process_user(task.merged, task.ctx.get("image_config") or {})
        task.ctx["user_ids"] = users.resolve(user, _read_container_file(task, "/etc/passwd"),
                                             _read_container_file(task, "/etc/group"))
    return task.ctx["user_ids"]


def identity_steps(task: "ContainerTask") -> t.List[Step]:
    """An unknown user fails here, before anything changes, whenever the image's files are already there."""
    try:
        identity(task)
    except KernelboxError:
        pass  # the layers are not unpacked yet: resolved just before the process is made
    return []


def host_ids(task: "ContainerTask", inside: t.Tuple[int, int]) -> t.Tuple[int, int]:
    """Host ids of container ids ``inside`` (uid, gid), through the container's range."""
    root_uid, root_gid = task.ctx["root_ids"]
    if task.ctx.get("userns") == "host":
        return inside
    return root_uid + inside[0], root_gid + inside[1]


def process_state(task: "ContainerTask") -> str:
    """container_process's state for this task's."""
    if task.state in ("started", "healthy"):
        return "restarted" if task.params["restart"] else "started"
    if task.state == "stopped":
        return "stopped"
    return "started" if task.container.is_running() else "stopped"


def _enabled(task: "ContainerTask") -> bool:
    policy = defn.value(task.merged, "restart_policy")
    if policy == "unless-stopped":
        return task.state != "stopped"
    return policy == "always"


def _supervisor(task: "ContainerTask") -> str:
    """job for detach=false; else the option, where auto must not keep a job's kind."""
    if not defn.value(task.merged, "detach"):
        return "job"
    wanted = defn.value(task.merged, "supervisor")
    settings = task.container.settings
    if wanted == "auto" and settings is not None and settings.supervisor == "job":
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import systemd
        return "systemd" if systemd.available() else "kernelbox"
    return wanted


def process_params(task: "ContainerTask") -> t.Dict[str, t.Any]:
    merged, ctx = task.merged, task.ctx
    image = ctx.get("image_config") or {}
    user = identity(task)
    params = _blank_params(task, process_state(task))
    params.update(
        rootfs=_paths(task)["merged"], command=defn.process_args(merged, image),
        env=defn.process_env(merged, image, ctx.get("env_from_file") or {}), cwd=defn.process_cwd(merged, image),
        user="%d:%d" % (user.uid, user.gid), groups=list(user.additional_gids) or None,
        hostname=merged.get("hostname") or task.name, cgroup=defn.cgroup_options(merged) or None,
        readonly_rootfs=defn.value(merged, "read_only"), cap_add=merged.get("cap_add") or None,
        cap_drop=merged.get("cap_drop") or None, etc_hosts=merged.get("etc_hosts") or None,
        dns=merged.get("dns") or None, dns_search=merged.get("dns_search") or None,
        restart_policy=defn.value(merged, "restart_policy"), enabled=_enabled(task),
        stop_signal=merged.get("stop_signal") or image.get("StopSignal") or None,
        stop_timeout=defn.value(merged, "stop_timeout"),
        supervisor=_supervisor(task),
        annotations=_annotations(task), mounts=_mounts(task) or None,
    )
    params.update(_namespaces(task))
    return params


def _namespaces(task: "ContainerTask") -> t.Dict[str, t.Any]:
    merged, ctx = task.merged, task.ctx
    bridged = defn.value(merged, "network") != defn.NO_NETWORK
    namespaces: t.Dict[str, t.Any] = {"netns": task.name} if bridged else {}
    sysctls = {k: v for k, v in defn.value(merged, "sysctls").items() if not (bridged and k.startswith("net."))}
    if not bridged:  # its own netns, made at launch: the same default as a bridged one's
        sysctls.setdefault("net.ipv4.ip_unprivileged_port_start", "0")
    result: t.Dict[str, t.Any] = {"sysctls": sysctls or None}
    if ctx.get("userns") == "host":
        namespaces["user"] = False
    elif ctx.get("idmap"):
        uid_map, gid_map = ctx["idmap"]
        result["uid_map"] = [{"container_id": uid_map[0], "host_id": uid_map[1], "size": uid_map[2]}]
        result["gid_map"] = [{"container_id": gid_map[0], "host_id": gid_map[1], "size": gid_map[2]}]
    result["namespaces"] = namespaces or None
    return result


def _annotations(task: "ContainerTask") -> t.Dict[str, str]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import IMAGE_ANNOTATION
    annotations = dict(defn.value(task.merged, "labels"))
    annotations[IMAGE_ANNOTATION] = task.ctx.get("identity") or ""
    health = task.merged.get("healthcheck")
    if health:
        annotations[HEALTH_ANNOTATION] = json.dumps(health, sort_keys=True)
    return annotations


def _mounts(task: "ContainerTask") -> t.List[t.Dict[str, t.Any]]:
    found = []
    for item in defn.value(task.merged, "volumes"):
        source = volumes.data_dir(item["source"], task.layout) if item["kind"] == "volume" else item["source"]
        found.append({"type": "bind", "source": source, "destination": item["destination"],
                      "readonly": item["readonly"], "options": []})
    return found


def process_steps(task: "ContainerTask") -> t.List[Step]:
    resource = _process_resource(task, process_params(task))
    steps = stages.plan_resource(resource)
    task.warnings += resource.warnings
    task.process = resource
    return steps


def process_prediction(task: "ContainerTask") -> t.List[str]:
    name = task.name
    state = process_state(task)
    start = ["start container %s (state=%s)" % (name, state)] if state in ("started", "restarted") else []
    if task.container.exists:
        return ["replace the spec of container %s (recreate: its root filesystem changed)" % name] + start
    return ["create container %s (absent)" % name] + start


def process_removal_steps(task: "ContainerTask") -> t.List[Step]:
    resource = _process_resource(task, _name_only(task, "absent"))
    steps = stages.plan_resource(resource)
    task.process = resource
    return steps


# --- published ports ------------------------------------------------------------------------------

def _publisher(task: "ContainerTask", lock: bool, only_removes: bool = False) -> t.Any:
    """A PortPublisher for the container over a session of its own (closed by ContainerTask.close)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import published_ports
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import nat
    if task.nat_session is not None:
        task.nat_session.close()
    task.nat_session = nat.NatSession(lock=lock and not task.check_mode, only_removes=only_removes)
    return published_ports.PortPublisher(task.name, task.check_mode, task.nat_session)


def ports_steps(task: "ContainerTask", deferred: bool) -> t.List[Step]:
    """Publish the definition's ports at the container's address (unpublish the rest), through PortPublisher.

    A deferred stage is planned twice: first, before anything changes, without the table's lock (a port another
    container holds fails the task there); then just before it acts, under the lock, with the address made.
    """
    specs = container_facts.wanted_ports(task)
    if not specs and not defn.value(task.stored, "ports"):
        return []  # never had ports: the table is not read (nor libnftables loaded)
    first_look = deferred and not task.ctx.get("ports_planned")
    task.ctx["ports_planned"] = True
    address = task.ctx.get("address")
    if specs and address is None:  # check mode, before the bridge exists: no address to check the ports against
        return [Step("publish %s for %s" % (spec.text(), task.name), _noop, "ports; at the address it is given")
                for spec in specs]
    publisher = _publisher(task, lock=not first_look)
    publisher.desired(specs, [address] if specs else [])
    why_remove = "no longer in ports" if defn.value(task.merged, "ports") else "ports is empty"
    if not specs and defn.value(task.merged, "ports"):
        why_remove = "the container is %s" % ("not running" if task.state == "present" else task.state)
    steps = publisher.plan(why_add="ports", why_remove=why_remove)
    if not first_look or task.check_mode:  # check mode plans a deferred stage once: this is its only look
        task.warnings += publisher.warnings
    return steps


def ports_removal_steps(task: "ContainerTask") -> t.List[Step]:
    """state=absent: every port published under the container's name goes, first (before the process)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables
    try:
        nftables.load_library()
    except nftables.NftUnavailable:
        return []  # without libnftables no kernelbox table can exist
    publisher = _publisher(task, lock=True, only_removes=True)
    publisher.desired([], [])
    return publisher.plan(why_remove="state=absent")


# --- bookkeeping --------------------------------------------------------------------------------

def _describe_pool(pool_name: str, value: int) -> str:
    if pool_name.startswith("ipv4-"):
        return "address %s (%s)" % (ipaddress.IPv4Address(value), pool_name)
    return "%s slot %d" % (pool_name, value)


def release_steps(task: "ContainerTask", keep_current: bool) -> t.List[Step]:
    keep = {task.ctx.get("pool"), "userns" if task.ctx.get("userns_slot") is not None else None}
    return [Step("release %s of container %s" % (_describe_pool(pool_name, value), task.name),
                 functools.partial(task.allocator.release, pool_name, task.name),
                 "no longer used" if keep_current else "state=absent")
            for pool_name, value in task.allocator.pools_of(task.name).items()
            if not (keep_current and pool_name in keep)]


def record_steps(task: "ContainerTask") -> t.List[Step]:
    if task.record and not task.changed_options:
        return []
    return [Step("record the definition of container %s" % task.name, functools.partial(write_record, task),
                 "options changed: %s" % ", ".join(task.changed_options) if task.record else "first task")]


def forget_steps(task: "ContainerTask") -> t.List[Step]:
    """A definition left without a container (a run that stopped half-way) goes too."""
    where = kbstate.paths(task.name, task.layout)
    if task.container.exists or not os.path.exists(where.lib_dir):
        return []
    return [Step("remove the state of container %s" % task.name,
                 functools.partial(kbstate.remove_all, task.name, task.layout), "state=absent")]


def write_record(task: "ContainerTask") -> None:
    container = kbstate.load(task.name, task.layout)
    settings = container.settings
    record = {"definition": task.merged, "config_digest": settings.digest if settings else None,
              "facts": container_facts.facts(task), "summary": container_facts.summary(task)}
    kbstate.save_definition(task.name, record, task.layout)
    task.record = record


def refresh_record(task: "ContainerTask") -> None:
    """After a run that acted, the facts may have moved (a veth made again): the record follows, silently.

    The record is the module's own note of what it found, not a managed object.
    """
    if not task.record or task.state == "absent" or not task.container.exists:
        return
    settings = task.container.settings
    current = {"facts": container_facts.facts(task), "config_digest": settings.digest if settings else None,
               "summary": container_facts.summary(task)}
    if any(task.record.get(key) != value for key, value in current.items()):
        record = dict(task.record, definition=task.merged, **current)
        kbstate.save_definition(task.name, record, task.layout)
        task.record = record


# --- health and the result ---------------------------------------------------------------------

def wait_healthy(task: "ContainerTask") -> None:
    """state=healthy: wait until the supervisor's checks (health.py) pass, at most wait_timeout seconds."""
    import time
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import health
    timeout = task.params["wait_timeout"]
    deadline = time.monotonic() + timeout
    while True:
        container = kbstate.load(task.name, task.layout)
        record = health.for_run(health.load(task.name, task.layout), container.runtime)
        if record["status"] == health.HEALTHY:
            return
        last = (record.get("log") or [{}])[-1]
        seen = "status %s, %d failing" % (record["status"], record.get("failing_streak", 0))
        if last:
            seen += "; last check: exit code %s, output %r" % (last.get("exit_code"), last.get("output", "")[-200:])
        if not container.is_running():
            raise KernelboxError("state=healthy: container %s is not running (%s; %s)"
                                 % (task.name, container.runtime.status if container.runtime else "created", seen))
        if time.monotonic() >= deadline:
            raise KernelboxError("state=healthy: container %s was not healthy within %gs (%s)"
                                 % (task.name, timeout, seen))
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
