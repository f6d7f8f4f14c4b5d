#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container_info
short_description: List and inspect kernelbox containers, with live statistics and the host's container features
version_added: 0.1.0
description:
  - Returns, for each kernelbox container, what C(podman inspect), C(podman ps), C(podman stats) and C(lsns) would
    tell about it together. The state, PID, start time, exit code and restart count; a summary of its spec;
    its namespace inodes; its cgroup with live statistics (memory current and peak, OOM kills, CPU usage and
    throttling, PIDs, I/O, pressure stall information); the processes inside; its network interfaces and
    addresses; its root filesystem mount with the overlay layers; and its log file with the last lines.
  - With O(features), it also returns a host facts section like C(runc features). It says which namespaces the
    kernel supports; the cgroup v2 mode and controllers; overlayfs and its options; user namespace limits;
    seccomp and its actions; pidfd; and the time namespace. It also names what is missing, so roles can branch on it.
  - It never changes anything.
  - Built for many containers. One call reads C(/proc) once for all containers, the host's mountinfo once, and
    each network namespace once.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes.INFO_MODULE
  - kernelbox.containers._requirements
options:
  name:
    description:
      - The containers to describe, one name or a list. A name without any state is returned with
        C(state=absent) (no failure), so a role can test for a container's existence.
      - Omitted, every kernelbox container on the host is described.
    type: list
    elements: str
  log_lines:
    description: How many lines of each container's log to return in RV(containers[].log.tail).
    type: int
    default: 10
  cpu_sample:
    description:
      - Seconds to sample CPU usage over, to return RV(containers[].cgroup.stats.cpu_percent) as C(podman stats) does.
        The module sleeps this long once for all containers.
      - V(0) (the default) takes no sample; the C(usage_usec) of RV(containers[].cgroup.stats.cpu) still gives the
        CPU time used so far.
    type: float
    default: 0.0
  features:
    description: Return the RV(features) host facts section (a few reads of C(/proc) and C(/sys)).
    type: bool
    default: true
notes:
  - Requires root on the target (it reads other processes' C(/proc) entries and enters network namespaces for a
    netlink dump).
  - Environment variable values are never returned, only their names; they may hold secrets.
  - On hosts with the hybrid cgroup layout, statistics whose controllers belong to cgroup v1 (memory, pids, io) are
    null; the C(mode) in RV(features.cgroup) says which layout the host has.
seealso:
  - module: kernelbox.containers.container_process
  - module: kernelbox.containers.container_exec
"""

EXAMPLES = r"""
- name: Everything about every container, and the host's features
  kernelbox.containers.container_info:
  register: kb

- name: Stop early on hosts that cannot run containers at all
  ansible.builtin.assert:
    that: kb.features.missing | intersect(['cgroup:v2', 'overlay', 'user-namespaces', 'seccomp']) == []
    fail_msg: "this host's kernel lacks: {{ kb.features.missing | join(', ') }}"

- name: Say so when memory limits would fail (a hybrid host keeps the memory controller in cgroup v1)
  ansible.builtin.debug:
    msg: "no cgroup v2 memory control on this {{ kb.features.cgroup.mode }} cgroup host: leave memory limits out"
  when: "'cgroup-controller:memory' in kb.features.missing"

- name: One container, with a CPU sample and more log
  kernelbox.containers.container_info:
    name: web
    cpu_sample: 0.5
    log_lines: 50
  register: web

- name: Restart it if it crashed
  kernelbox.containers.container_process:
    name: web
    state: restarted
  when: web.containers[0].state in ['exited', 'failed'] and web.containers[0].exit_code != 0

- name: A table of all containers (see also playbooks/status.yml)
  ansible.builtin.debug:
    msg: "{{ kb.containers | kernelbox.containers.status_table }}"
"""

RETURN = r"""
containers:
  description: One entry per container, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The container's name.
      type: str
      sample: web
    state:
      description:
        - V(running), V(starting), V(stopping), V(restarting) (waiting out the restart back-off), V(exited), V(failed)
          (the launch failed; see RV(containers[].error)), V(created) (never started), or V(absent) (no such
          container; no other key is returned then).
        - A container recorded as running whose init is gone is reported V(exited), with RV(containers[].note).
      type: str
      sample: running
    running:
      description: Whether its init process is alive (checked by PID and start time).
      type: bool
      sample: true
    pid:
      description: The host PID of its init, when running.
      type: int
      sample: 4242
    started_at:
      description: When it was last started (UTC, ISO 8601).
      type: str
      sample: "2026-05-07T12:00:00.123456+00:00"
    exited_at:
      description: When it last exited, when not running.
      type: str
      sample: "2026-05-07T12:10:00.000000+00:00"
    exit_code:
      description: The exit code of its last run (128+N when killed by signal N), when not running.
      type: int
      sample: 0
    exit_signal:
      description: The signal that ended its last run, if one did.
      type: str
      sample: SIGKILL
    note:
      description: Why the exit code is unknown, or why the recorded state was corrected.
      type: str
    restart_count:
      description: Restarts by the restart policy since it was last started by a module run.
      type: int
      sample: 0
    restart_policy:
      description: The restart policy (V(no), V(on-failure[:N]), V(always)).
      type: str
      sample: "no"
    enabled:
      description: Whether it starts at boot.
      type: bool
    supervisor:
      description: What supervises it (V(kernelbox) or V(systemd)).
      type: str
      sample: kernelbox
    error:
      description: The last launch failure (step, errno, msg), if its launch failed.
      type: dict
    spec:
      description: A summary of its stored OCI spec.
      type: dict
      contains:
        rootfs:
          description: The root filesystem directory.
          type: str
        readonly_rootfs:
          description: Whether the root is read-only.
          type: bool
        command:
          description: The init's argv.
          type: list
          elements: str
        cwd:
          description: The working directory.
          type: str
        user:
          description: C(UID:GID) inside the container.
          type: str
          sample: "0:0"
        groups:
          description: Additional group IDs.
          type: list
          elements: int
        env_names:
          description: Names of its environment variables (values are not returned).
          type: list
          elements: str
        hostname:
          description: Its host name.
          type: str
        namespaces:
          description: OCI namespace type -> V(new), or the path of the namespace it joins.
          type: dict
          sample: {"pid": "new", "network": "/run/netns/web"}
        uid_map:
          description: The user namespace's uid map as C([container_id, host_id, size]) triples.
          type: list
          elements: list
        capabilities:
          description: Its bounding capability set.
          type: list
          elements: str
        no_new_privileges:
          description: Whether no_new_privs is set.
          type: bool
        seccomp:
          description: C(default_action) and the number of C(rules) of its seccomp profile; null when it has none.
          type: dict
        rlimits:
          description: RLIMIT name -> C([soft, hard]).
          type: dict
        mounts:
          description: Mount destinations inside the container.
          type: list
          elements: str
        masked_paths:
          description: How many paths are masked.
          type: int
        readonly_paths:
          description: How many paths are read-only.
          type: int
        cgroups_path:
          description: The spec's C(linux.cgroupsPath).
          type: str
        resources:
          description: The spec's C(linux.resources), in OCI form.
          type: dict
    namespaces:
      description:
        - Namespace type -> inode, as C(lsns) and C(readlink /proc/PID/ns/TYPE) show them (C(pid_for_children) and
          C(time_for_children) included). Null when not running.
      type: dict
      sample: {"net": 4026532710, "pid": 4026532708}
    namespaces_shared_with_host:
      description: The namespace types it shares with the host (the module's own namespaces). Null when not running.
      type: list
      elements: str
      sample: [time]
    cgroup:
      description: Its cgroup v2 group with live statistics; null when it has none.
      type: dict
      contains:
        path:
          description: The group's directory.
          type: str
          sample: /sys/fs/cgroup/kernelbox/web
        relpath:
          description: The path as C(/proc/PID/cgroup) shows it, without the leading C(/).
          type: str
        exists:
          description: Whether the group exists now.
          type: bool
        limits:
          description: The limit files that exist in the group (C(memory.max), C(cpu.max), C(pids.max), C(io.max)...)
            with their values as the kernel prints them.
          type: dict
          sample: {"memory.max": "536870912", "pids.max": "100"}
        exec_groups:
          description: Child groups of running C(container_exec) commands.
          type: list
          elements: str
        stats:
          description: Live statistics; each section is null when its controller is not enabled for the group.
          type: dict
          contains:
            populated:
              description: Whether any process is in the group.
              type: bool
            frozen:
              description: Whether the group is frozen.
              type: bool
            processes:
              description: Processes directly in the group (C(cgroup.procs)).
              type: int
            memory:
              description: C(current), C(peak) and C(swap_current) in bytes, and C(events) from C(memory.events)
                (C(oom), C(oom_kill), C(max), C(high)...).
              type: dict
            pids:
              description: C(current) and C(peak) from C(pids.current)/C(pids.peak), and C(events_max) (forks refused).
              type: dict
            cpu:
              description: C(cpu.stat) as integers (C(usage_usec), C(user_usec), C(system_usec), C(nr_periods),
                C(nr_throttled), C(throttled_usec)...).
              type: dict
            cpu_percent:
              description: CPU use over O(cpu_sample), in percent of one CPU (above 100 when using several); only
                with O(cpu_sample).
              type: float
            io:
              description: C(io.stat) per C(MAJ:MIN) device (C(rbytes), C(wbytes), C(rios), C(wios), C(dbytes), C(dios)).
              type: dict
            pressure:
              description: Pressure stall information per resource (C(cpu), C(memory), C(io)) with C(some) and
                C(full) averages and totals.
              type: dict
    processes:
      description: The processes inside (everything in its PID namespace, commands run by C(container_exec) too).
      type: list
      elements: dict
      contains:
        pid:
          description: Host PID.
          type: int
        ns_pid:
          description: PID inside the container.
          type: int
        ppid:
          description: Host PID of the parent.
          type: int
        name:
          description: Process name.
          type: str
        cmdline:
          description: Its argv.
          type: list
          elements: str
        status:
          description: psutil status (C(running), C(sleeping), C(zombie)...).
          type: str
        uid:
          description: Effective uid, as the host sees it.
          type: int
        rss:
          description: Resident memory in bytes.
          type: int
        threads:
          description: Number of threads.
          type: int
        started:
          description: When it started (UTC, ISO 8601).
          type: str
    network:
      description: Its network interfaces with their addresses; null when it shares the host's network namespace
        or is not running.
      type: list
      elements: dict
      contains:
        name:
          description: Interface name.
          type: str
        index:
          description: Interface index.
          type: int
        mtu:
          description: MTU.
          type: int
        up:
          description: Administratively up (C(IFF_UP)).
          type: bool
        mac:
          description: Hardware address.
          type: str
        addresses:
          description: Addresses as C(address/prefix).
          type: list
          elements: str
    ports:
      description:
        - Its published ports (M(kernelbox.containers.nat) or the container role's ports), consecutive ports as ranges;
          empty when it has none, null when the nat table cannot be read.
      type: list
      elements: dict
      contains:
        protocol:
          description: C(tcp) or C(udp).
          type: str
        host_ip:
          description: The host address, C(0.0.0.0) or C(::) for every address of the family.
          type: str
        host_port:
          description: The first host port.
          type: int
        host_port_end:
          description: The last host port (the same for a single port).
          type: int
        container_ip:
          description: The container address packets are forwarded to.
          type: str
        container_port:
          description: The first container port.
          type: int
        container_port_end:
          description: The last container port.
          type: int
        container:
          description: The container's name.
          type: str
    rootfs:
      description: The root filesystem and the mount on it.
      type: dict
      contains:
        path:
          description: The root directory on the host.
          type: str
        mount:
          description: The mount on the root (C(fstype), C(source)); for overlayfs also C(lower) (topmost first),
            C(upper), C(work), C(readonly) and C(options). Null when the root is a plain directory.
          type: dict
        filesystem:
          description: The host mount the root directory lives on (C(fstype), C(source), C(mount_point)).
          type: dict
    log:
      description: The container's log file.
      type: dict
      contains:
        path:
          description: Its path.
          type: str
        size:
          description: Its size in bytes (null when there is none yet).
          type: int
        tail:
          description: The last O(log_lines) lines.
          type: list
          elements: str
features:
  description: The host's facts for containers, like C(runc features).
  returned: when O(features=true)
  type: dict
  contains:
    kernel:
      description: C(release), C(version) (major.minor) and C(machine).
      type: dict
    namespaces:
      description: Namespace type -> whether the kernel supports it.
      type: dict
      sample: {"cgroup": true, "time": true, "user": true}
    cgroup:
      description:
        - C(mode) is V(pure) (cgroup v2 only), V(hybrid) (cgroup v2 beside v1 controllers) or V(none).
        - C(mount), C(controllers) (available in v2), C(v1_controllers), and whether C(kill), C(freeze),
          C(pressure) and C(memory_peak) are supported.
      type: dict
    overlay:
      description: C(available) (registered), C(loadable), C(options) this kernel accepts, module C(parameters),
        and C(in_user_namespace) (mountable inside a user namespace).
      type: dict
    user_namespaces:
      description: C(available), C(max_user_namespaces), C(unprivileged_clone) (Debian's switch, null elsewhere)
        and C(namespace_limits) per type.
      type: dict
    seccomp:
      description: C(available), C(filter) support, C(actions) the kernel offers, C(actions_logged), C(notify)
        (user notification) and C(arch).
      type: dict
    pidfd:
      description: C(available) (pidfd_open) and C(send_signal) (pidfd_send_signal).
      type: dict
    time_namespace:
      description: Whether the time namespace is supported.
      type: bool
    syscalls:
      description: Whether C(close_range), the new mount API (C(mount_api)), C(mount_setattr) and C(openat2) exist.
      type: dict
    missing:
      description: What kernelbox would use but this host lacks, as names to branch on, such as C(namespace:time),
        C(cgroup:v2), C(cgroup-controller:memory), C(cgroup:kill), C(overlay), C(user-namespaces), C(seccomp),
        C(pidfd), C(syscall:openat2).
      type: list
      elements: str
      sample: ["cgroup-controller:cpu", "cgroup-controller:memory"]
actions:
  description: Always empty; the module changes nothing.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import deps, flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_info import (
    ARGUMENT_SPEC, ContainerInfoResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    deps.require(module, "psutil")
    flow.run(module, ContainerInfoResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
