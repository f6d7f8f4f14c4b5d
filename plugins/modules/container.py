#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container
short_description: One task per container, with the options podman and docker users know
version_added: 0.1.0
description:
  - Converges a whole container in one call, in one process, from raw kernel primitives (no Docker or podman
    underneath) - the image's layers (M(kernelbox.containers.image_layers)) or a root filesystem directory, an
    overlay root with a private writable layer (M(kernelbox.containers.overlay_rootfs)), its own network namespace
    (M(kernelbox.containers.netns)) with C(eth0) on a veth pair plugged into a bridge
    (M(kernelbox.containers.veth)), its own user-namespace id range, named volumes, and the supervised, hardened
    process (M(kernelbox.containers.container_process)). Those modules do the work; this one composes them, so
    the result is exactly what they make.
  - "B(Partial updates.) The options a task gives are stored with the container (its I(definition)). A later task
    that gives some options keeps the others as they are: O(name) and O(env) alone change the environment, nothing
    else. Only options that are given and differ count as changes; RV(changed_options) names them, and
    RV(recreate_keys) names the OCI keys that forced a recreate."
  - B(Recreate or in place.) Cgroup limits (O(memory), O(cpus), O(pids_limit), O(cgroup)) change in place; the
    restart policy and stop settings change without a restart; any other change recreates the container (stop, new
    spec, start), as docker_container and podman_container do.
  - B(Check mode predicts), also on a fresh host where no layer, overlay or network namespace exists yet, and for
    the removal of a running container. C(--diff) shows the definition before and after; a long list that did not
    change shows as its count and digest.
  - "B(A job.) With O(detach=false) the container is a job: the task runs it to completion and returns its RV(rc),
    RV(stdout) and RV(stderr) like M(ansible.builtin.command). A job that exited 0 runs once per definition: a
    later task with the same options reports its recorded result and does not run it again (O(restart=true) does);
    a job that failed runs again."
  - B(The no-change path.) A task whose options match the stored definition reads that definition, the state files
    and a few kernel facts (the process by PID and start time, the overlay mount, the network namespace's inode and
    the veth's ifindex, and with O(ports) the table's published ports) and returns, without loading the image or
    any netlink library.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
  - kernelbox.containers._registry
attributes:
  idempotent:
    support: partial
    details:
      - O(restart=true) and O(recreate=true) act on every run.
options:
  name:
    description:
      - The container's name, 1 to 63 letters, digits, C(_), C(.) or C(-), starting with a letter or digit.
      - It also names the container's network namespace (C(ip netns exec NAME ...) works), its cgroup leaf and its
        storage directory C(/var/lib/kernelbox/rootfs/NAME) (C(upper), C(work), C(merged)).
    type: str
    required: true
  state:
    description:
      - V(started) creates the container if needed and makes sure it runs. As with docker_container and
        podman_container, a container that exited is started again (a job, O(detach=false), runs once per
        definition instead, as long as it succeeds).
      - V(stopped) creates it if needed without starting it, or stops it.
      - V(present) creates it if needed without starting it, and leaves a running one running (a change of
        definition recreates it as it was, running or not).
      - V(healthy) is V(started), then waits until the O(healthcheck) passes (at most O(wait_timeout) seconds);
        it needs O(healthcheck).
      - V(absent) stops and removes the container, its network namespace and veth pair, its overlay and writable
        layer, and releases its address and id range. Image layers stay (they are shared; remove them with
        M(kernelbox.containers.image_layers)); named volumes stay unless O(keep_volumes=false).
    type: str
    choices: [started, stopped, present, absent, healthy]
    default: started
  image:
    description:
      - The image - a reference to pull from a registry (C(docker.io/library/nginx:1.27), C(busybox),
        C(registry.example:5000/team/app@sha256:...); see O(pull) and the other registry options), or the absolute
        path of a file on the target (an OCI layout or archive, a C(docker save) tar, or a rootfs tarball). It is
        read by M(kernelbox.containers.image_layers)' own code, and its layers are unpacked once into the shared
        layer store.
      - The image's C(Entrypoint), C(Cmd), C(Env), C(WorkingDir), C(User) and C(StopSignal) are the defaults of
        O(entrypoint), O(command), O(env), O(workdir), O(user) and O(stop_signal).
      - A new image recreates the container - a new path or reference, a file whose content changed, or with
        O(pull=always) a tag the registry moved.
      - One of O(image) or O(rootfs) is required to create a container.
    type: str
  rootfs:
    description:
      - A directory to use as the container's read-only lower layer instead of an image; the container writes to
        its own upper layer, never to this directory.
    type: path
  command:
    description:
      - The command, or the arguments of O(entrypoint). A string is split the way a shell would (quotes group, no
        expansion), so C("sleep 600") is C([sleep, "600"]); a list is taken as it is.
      - Defaults to the image's C(Cmd).
    type: raw
  entrypoint:
    description:
      - The entrypoint, a string (split like a shell would) or a list. Giving it drops the image's C(Cmd), as Docker
        does; O(command) then gives the arguments.
      - Defaults to the image's C(Entrypoint).
    type: raw
  env:
    description: Environment variables, over the image's C(Env) and O(env_file).
    type: dict
  env_file:
    description:
      - A file on the target of C(NAME=value) lines (Docker's env-file format; C(#) comments and blank lines are
        ignored). Its values come after the image's and before O(env). A change of its content recreates the
        container.
    type: path
  user:
    description:
      - The user the command runs as, inside the container - C(NAME), C(UID), C(NAME:GROUP) or C(UID:GID). Names are
        looked up in the container's own C(/etc/passwd) and C(/etc/group) (resolved inside its root, never the
        host's); the groups that list the user become its supplementary groups, as Docker does.
      - Defaults to the image's C(User), else root.
    type: str
  workdir:
    description: The working directory inside the container; defaults to the image's C(WorkingDir), else C(/).
    type: str
  hostname:
    description: The container's host name (RFC 1123); defaults to O(name).
    type: str
  volumes:
    description:
      - Mounts, as C(SOURCE:DESTINATION[:OPTIONS]). SOURCE is an absolute host path (a bind mount; it must exist)
        or a volume name (a directory kernelbox makes under C(/var/lib/kernelbox/volumes/NAME/_data) on first use,
        owned by the container's root).
      - OPTIONS is a comma-separated list of V(ro) or V(rw), and V(U) to give the source (recursively) to the
        container's user (O(user), as the container's range maps it) first, as podman's C(:U) does. Container root
        is an unprivileged id outside (see O(userns)), so a host directory the container must write needs V(U), or
        an owner chosen to match. The walk never follows a symlink, never crosses into another mount, and leaves
        files with other hard links alone.
    type: list
    elements: str
  network:
    description:
      - V(none) (the default) gives the container its own network namespace with only C(lo), which is up.
      - The name of a bridge (made by M(kernelbox.containers.bridge) or the C(host) role, with an IPv4 address)
        gives it C(eth0) on a veth pair plugged into that bridge, an address from the bridge's subnet, and a default
        route via the bridge's address.
      - In both cases C(net.ipv4.ip_unprivileged_port_start=0) and C(net.ipv4.ping_group_range=0 2147483647) are
        set in the container's own network namespace, as Docker does, so a non-root server binds port 80 and
        C(ping) works; the host's namespace is untouched. O(sysctls) overrides them.
    type: str
  ip:
    description:
      - The container's IPv4 address on O(network). Omitted, the lowest free address of the bridge's subnet is
        allocated. The allocation is persistent (a re-run keeps the address), locked (concurrent tasks never get the
        same one) and released on removal.
      - An address outside the subnet, the bridge's own, or one another container holds is refused before anything
        changes. Only addresses kernelbox allocated are known to it; keep hand-made addresses out of the range.
    type: str
  ports:
    description:
      - "Published ports, as C(podman run -p) takes them: C([HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]), such as
        C(8080:80), C(127.0.0.1:8080:80), C(5353:53/udp), or ranges of one length C(9000-9005:9000-9005)."
      - Published in the host's table C(inet kernelbox) by the same code as M(kernelbox.containers.nat) (see there),
        once the container runs and its address is known; they follow its address, are unpublished while it is
        stopped, and go with O(state=absent) (with their conntrack flows). The complete list; ports left out are
        unpublished, and V([]) unpublishes all.
      - A host port another container holds is refused before anything changes, naming the holder.
      - Needs O(network) (a bridge) and libnftables on the host. Reaching them from C(127.0.0.1) and from the same
        bridge also needs the network's rules (M(kernelbox.containers.nat) with O(kernelbox.containers.nat#module:bridge),
        which the C(host) role makes); the module warns when they are missing.
    type: list
    elements: str
  memory:
    description: The memory limit (C(memory.max)), bytes or with a unit (C(512M), C(1G)); C(max) for none.
    type: raw
  cpus:
    description: The CPU limit in CPUs (C(cpu.max)), for example C(0.5).
    type: float
  pids_limit:
    description: The most processes and threads at once (C(pids.max)); C(-1) or C(0) for none.
    type: int
  cgroup:
    description:
      - Any other cgroup v2 limit, as the C(cgroup) option of M(kernelbox.containers.container_process) takes them
        (C(cpu_max), C(cpu_weight), C(memory_max), C(memory_high), C(memory_low), C(memory_swap_max), C(pids_max),
        C(io_max), C(cpuset_cpus), C(cpuset_mems), C(settings)).
      - Limits change in place, without a restart. They need a host with the cgroup v2 controllers (a pure cgroup
        v2 host); elsewhere the task fails before changing anything, naming what is missing.
    type: dict
  cgroup_parent:
    description: The cgroup the container's own leaf is made under, relative to the cgroup2 mount; default C(kernelbox).
    type: str
  restart_policy:
    description:
      - V(no) (the default), V(on-failure), V(on-failure:N), V(always) or V(unless-stopped), as in Docker.
      - V(always) and V(unless-stopped) also start the container at boot; V(unless-stopped) not if a task stopped it.
      - Changing it does not restart the container.
    type: str
  restart:
    description: Stop (if running) and start the container on this run, as docker_container's C(restart) does.
    type: bool
    default: false
  healthcheck:
    description:
      - A command run inside the container periodically, Docker's C(HEALTHCHECK), through the same path as
        M(kernelbox.containers.container_exec) (the container's namespaces, cgroup and confinement). The kernelbox
        supervisor starts each check in a short-lived process of its own; with systemd, a timer unit bound to the
        container's unit does (C(kernelbox-NAME-health.timer)).
      - The container is C(healthy) after a passing check and C(unhealthy) after O(healthcheck.retries) failures in
        a row; failures during O(healthcheck.start_period) do not count until a check passed. RV(health) reports
        it; O(state=healthy) waits for it.
      - A change recreates the container, as in Docker.
    type: dict
    suboptions:
      test:
        description:
          - The command. A string runs under C(/bin/sh -c); a list is an argv; Docker's C([CMD, ...]) and
            C([CMD-SHELL, "..."]) forms are understood, and C([NONE]) turns the check off.
        type: raw
      interval:
        description: Time between checks, seconds or C(30s), C(1m30s), C(500ms); default 30s.
        type: raw
      timeout:
        description: Time a check may take before it counts as failed; default 30s.
        type: raw
      retries:
        description: Failures in a row that make the container unhealthy; default 3.
        type: int
      start_period:
        description: Time after the start during which failures do not count; default 0.
        type: raw
  labels:
    description: Labels, stored as the spec's annotations (C(io.kernelbox.*) keys are reserved). A change recreates.
    type: dict
  detach:
    description:
      - V(true) (the default) leaves the container running in the background under its supervisor.
      - V(false) makes it a job. The task itself runs it to completion (at most O(wait_timeout) seconds, then
        everything in its cgroup is killed) and returns RV(rc), RV(stdout) and RV(stderr) like
        M(ansible.builtin.command), keeping at most 1 MiB of each (RV(stdout_dropped) and RV(stderr_dropped) count
        the rest); a non-zero RV(rc) fails the task. It runs once per definition while it succeeds;
        O(restart=true) runs it again. A job takes no O(restart_policy) and no O(healthcheck).
    type: bool
  read_only:
    description: Mount the container's root filesystem read-only; default V(false).
    type: bool
  cap_add:
    description: Capabilities to add to Docker's default 14, for example C(NET_ADMIN).
    type: list
    elements: str
  cap_drop:
    description: Capabilities to drop (C(ALL) for every one).
    type: list
    elements: str
  sysctls:
    description:
      - Namespaced sysctls for the container. C(net.*) keys go to its network namespace (for a bridged container,
        set from the host before it starts); others (C(kernel.msgmax), C(fs.mqueue.*)...) to its own namespaces.
    type: dict
  dns:
    description: Name servers for the container's C(/etc/resolv.conf).
    type: list
    elements: str
  dns_search:
    description: Search domains for the container's C(/etc/resolv.conf).
    type: list
    elements: str
  etc_hosts:
    description: Extra C(/etc/hosts) entries, host name to address.
    type: dict
  userns:
    description:
      - V(auto) (the default) gives the container its own range of 65536 host ids, allocated like podman's
        C(--userns=auto) - persistent, locked and released on removal. A process that escapes one container owns
        nothing of another's. The ranges start at host id 1879048192 (0x70000000), or come from the C(kernelbox)
        entries of C(/etc/subuid) and C(/etc/subgid) when there are some.
      - V(shared) uses the one range M(kernelbox.containers.container_process) gives every container
        (100000-165535).
      - V(host) runs without a user namespace - container root is host root. Avoid it.
      - Container root is the first id of the range on the host; files it must write belong to it (see O(volumes)).
    type: str
    choices: [auto, shared, host]
  stop_signal:
    description: The signal that asks the container to stop; defaults to the image's C(StopSignal), else SIGTERM.
    type: str
  stop_timeout:
    description: Seconds between the stop signal and SIGKILL; default 10.
    type: raw
  supervisor:
    description: As M(kernelbox.containers.container_process)'s C(supervisor) - V(auto) (default), V(kernelbox) or V(systemd).
    type: str
    choices: [auto, kernelbox, systemd]
  recreate:
    description: Recreate the container even if its definition did not change.
    type: bool
    default: false
  wait_timeout:
    description: Seconds O(state=healthy) waits for the health check, and a job (O(detach=false)) may run.
    type: float
    default: 300
  keep_volumes:
    description: With O(state=absent), V(false) also removes the named volumes this container used that no other
      container's definition names.
    type: bool
    default: true
notes:
  - Requires root on the target.
  - The C(container) role is a thin wrapper over this module. The smaller modules stay, for composing by hand.
  - Containers made by M(kernelbox.containers.container_process) or by hand have no definition; the first task of
    this module on one gives it the task's options as its definition (and may recreate it).
seealso:
  - module: kernelbox.containers.container_process
  - module: kernelbox.containers.container_exec
  - module: kernelbox.containers.container_info
"""

EXAMPLES = r"""
- name: A web server from a local OCI archive, on the bridge the host role made
  kernelbox.containers.container:
    name: web
    image: /srv/images/nginx.oci.tar
    network: kb0
    volumes:
      - /srv/www:/usr/share/nginx/html:ro
      - web-cache:/var/cache/nginx
    memory: 256M
    cpus: 0.5
    restart_policy: unless-stopped

- name: Publish its ports, as podman run -p does (the host role's NAT makes them answer on 127.0.0.1 too)
  kernelbox.containers.container:
    name: web
    ports:
      - "8080:80"
      - "127.0.0.1:8443:443"
      - "5353:53/udp"

- name: Busybox from a rootfs tarball; the command is split like a shell would
  kernelbox.containers.container:
    name: sleeper
    image: /srv/images/busybox.tar
    command: sleep 600

- name: Change only the environment; every other option keeps its value
  kernelbox.containers.container:
    name: web
    env:
      LOG_LEVEL: debug

- name: Run as a user of the image, from a fixed address
  kernelbox.containers.container:
    name: api
    image: /srv/images/api.oci.tar
    user: nobody
    network: kb0
    ip: 10.88.0.20
    env_file: /etc/api/env

- name: Wait until the health check passes
  kernelbox.containers.container:
    name: api
    healthcheck:
      test: wget -qO- http://127.0.0.1:8080/health
      interval: 5s
      retries: 3
      start_period: 10s
    state: healthy

- name: A one-shot job; its output comes back like command's
  kernelbox.containers.container:
    name: migrate
    image: /srv/images/api.oci.tar
    command: [/app/migrate, --apply]
    detach: false
  register: migration

- name: Stop it (the name alone is enough)
  kernelbox.containers.container:
    name: web
    state: stopped

- name: Remove it, with its network, overlay, address and id range
  kernelbox.containers.container:
    name: web
    state: absent
"""

RETURN = r"""
name:
  description: The container's name.
  returned: always
  type: str
exists:
  description: Whether the container exists after the task.
  returned: always
  type: bool
status:
  description: created, starting, running, stopping, restarting, exited, failed, or absent.
  returned: always
  type: str
running:
  description: Whether its process is running.
  returned: always
  type: bool
pid:
  description: The host PID of the container's init while it runs.
  returned: always
  type: int
exit_code:
  description: The last exit code (128+N after signal N), or null.
  returned: always
  type: int
restart_count:
  description: Restarts by the restart policy since the last start.
  returned: always
  type: int
definition:
  description: The options that define the container now, normalised (a command string is shown split).
  returned: always
  type: dict
changed_options:
  description: The options this task changed.
  returned: always
  type: list
  elements: str
  sample: ["env"]
recreate_keys:
  description: The OCI keys whose change made this run recreate the container (empty otherwise).
  returned: always
  type: list
  elements: str
image:
  description: The image's identity (config digest, or C(rootfs:PATH)).
  returned: always
  type: str
network:
  description: C(bridge), C(ip), C(prefix), C(gateway), C(interface) and the host end C(veth); null without a network.
  returned: always
  type: dict
  sample: {"bridge": "kb0", "ip": "10.88.0.2", "prefix": 24, "gateway": "10.88.0.1", "interface": "eth0",
           "veth": "kb1a2b3c4dh"}
ip:
  description: The container's address on its bridge, or null.
  returned: always
  type: str
userns:
  description: C(mode), and the C(uid_map) and C(gid_map) entry (container id, host id, size) of its range.
  returned: always
  type: dict
  sample: {"mode": "auto", "uid_map": [0, 1879048192, 65536], "gid_map": [0, 1879048192, 65536]}
cgroup:
  description: The container's cgroup directory.
  returned: always
  type: str
config_digest:
  description: sha256 of the stored OCI spec.
  returned: always
  type: str
log_path:
  description: The container's log file (kernelbox supervisor).
  returned: always
  type: str
log_tail:
  description: The last lines of the log.
  returned: always
  type: list
  elements: str
health:
  description: With O(healthcheck) - C(status) (starting, healthy, unhealthy), C(failing_streak), and the C(last)
    check (C(start), C(end), C(exit_code), C(output)); null without one.
  returned: always
  type: dict
  sample: {"status": "healthy", "failing_streak": 0, "last": {"exit_code": 0, "output": ""}}
rc:
  description: A job's exit code (C(-N) when a signal N killed it).
  returned: with O(detach=false)
  type: int
stdout:
  description: What a job wrote to its standard output (at most 1 MiB).
  returned: with O(detach=false)
  type: str
stderr:
  description: What a job wrote to its standard error (at most 1 MiB).
  returned: with O(detach=false)
  type: str
stdout_lines:
  description: RV(stdout) split into lines.
  returned: with O(detach=false)
  type: list
  elements: str
stderr_lines:
  description: RV(stderr) split into lines.
  returned: with O(detach=false)
  type: list
  elements: str
stdout_dropped:
  description: Bytes of standard output beyond the 1 MiB kept, read and dropped.
  returned: with O(detach=false)
  type: int
stderr_dropped:
  description: Bytes of standard error beyond the 1 MiB kept, read and dropped.
  returned: with O(detach=false)
  type: int
start:
  description: When the job started.
  returned: with O(detach=false)
  type: str
end:
  description: When the job ended.
  returned: with O(detach=false)
  type: str
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["unpack layer 1/1 sha256:... (tar, 1.2 MB) into /var/lib/kernelbox/layers/sha256/.../diff (not in the
    store)", "allocate address 10.88.0.2 on bridge kb0 to container web (the lowest free address of 10.88.0.0/24)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import (
    ARGUMENT_SPEC, MODULE_KWARGS, ContainerTask)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_KWARGS)
    resource = ContainerTask(module.params, module.check_mode)
    try:
        flow.run(module, resource)
    finally:
        resource.close()


if __name__ == "__main__":
    main()
