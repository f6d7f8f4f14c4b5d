#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container_process
short_description: Run a hardened, supervised Linux container from raw kernel primitives
version_added: 0.1.0
description:
  - Runs a command as a container the way C(runc run) does, with new namespaces, C(pivot_root) into a root
    filesystem, a reduced capability set, C(no_new_privs), a seccomp filter, masked and read-only C(/proc) and
    C(/sys) paths, resource limits in a cgroup v2 leaf, and a supervisor that records its exit code, applies a
    restart policy and keeps a size-capped log of its stdout and stderr.
  - The options map onto an OCI runtime spec (C(config.json)); O(oci_config) takes such a spec directly. The spec
    is stored under C(/var/lib/kernelbox/containers/NAME/config.json).
  - A change to the spec recreates the container (stop, then start with the new spec) and RV(actions) and
    RV(recreate_keys) name the OCI keys that forced it. A change to cgroup limits only is applied to the running
    container in place, without a restart. A change to the restart policy, stop settings or log cap is applied
    without a restart.
  - The container outlives the module. On hosts whose PID 1 is systemd the default supervisor is systemd (one unit
    per container); elsewhere it is the kernelbox supervisor, a single small daemon per host that parents every
    container. See the collection README, "Lifecycle and supervision", for the state layout and failure modes.
  - Runs for the same O(name) are serialised by a lock, so concurrent runs start exactly one container.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
attributes:
  idempotent:
    support: partial
    details:
      - O(state=restarted) always restarts the container.
options:
  name:
    description:
      - The container's name, 1 to 63 letters, digits, C(_), C(.) or C(-), starting with a letter or digit.
      - It names the state directories, the default cgroup leaf and (with systemd) the unit C(kernelbox-NAME.service).
    type: str
    required: true
  state:
    description:
      - V(started) creates the container if needed and makes sure it runs (a container that exited is started again).
      - V(stopped) creates it if needed without starting it, or stops it. A stop sends O(stop_signal) to the
        container's init, and after O(stop_timeout) seconds kills everything in its cgroup with SIGKILL.
        A stop is never undone by the restart policy.
      - V(restarted) always stops (if running) and starts it.
      - V(absent) stops it, then removes its state, log, the cgroup leaf it made and the empty mount points its
        starts made in the root filesystem (see O(etc_hosts)).
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  rootfs:
    description:
      - The root filesystem directory, for example the C(path) of an overlay made by C(overlay_rootfs), or an
        unpacked image.
      - Required with O(command) to create a container, unless O(oci_config) is given.
      - A task that gives no spec option at all (only O(name), O(state) and lifecycle options) acts on the stored
        container as it is, for example O(state=stopped) with just O(name).
    type: path
  command:
    description:
      - The command to run as the container's init, as an argv list; the first item is looked up in the
        container's C(PATH) when it has no C(/).
      - The init runs as PID 1 of a new PID namespace, where the kernel ignores every signal it has no handler
        for; a command that does not handle O(stop_signal) is killed after O(stop_timeout).
    type: list
    elements: str
  env:
    description:
      - Environment variables. C(PATH) defaults to C(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin).
    type: dict
  cwd:
    description: The working directory inside the container (default C(/)); it must resolve inside the root.
    type: str
  user:
    description:
      - The numeric C(UID) or C(UID:GID) the command runs as, inside the container (default C(0:0)).
      - Names are not resolved.
    type: str
  groups:
    description: Additional numeric group IDs.
    type: list
    elements: int
  umask:
    description: The umask, in octal (default C(0022)).
    type: str
  hostname:
    description: The host name inside the container (its own UTS namespace). Defaults to O(name).
    type: str
  domainname:
    description: The NIS domain name inside the container.
    type: str
  namespaces:
    description:
      - Which namespaces are new. By default all are, except the time namespace.
      - The mount namespace is always new.
    type: dict
    suboptions:
      pid:
        description: A new PID namespace; the command is PID 1 in it. Default V(true).
        type: bool
      ipc:
        description: A new IPC namespace. Default V(true).
        type: bool
      uts:
        description: A new UTS namespace (host name). Default V(true).
        type: bool
      net:
        description:
          - A new network namespace holding only C(lo). Default V(true). V(false) shares the host's network.
        type: bool
      netns:
        description:
          - Join this named network namespace (from the C(netns) module, C(/run/netns/NAME)) instead of making one;
            an absolute path to a namespace file is accepted too.
        type: str
      user:
        description:
          - A new user namespace. Default V(true), mapping container IDs 0-65535 to host IDs 100000-165535 unless
            O(uid_map) and O(gid_map) say otherwise, so root inside is not root outside.
          - Files the container must write need to be owned by the mapped IDs.
        type: bool
      cgroup:
        description: A new cgroup namespace (the container sees its leaf as C(/)). Default V(true).
        type: bool
      time:
        description: A new time namespace, for O(time_offsets). Default V(false).
        type: bool
  uid_map:
    description: User ID mappings of the user namespace (at most 340 ranges).
    type: list
    elements: dict
    suboptions:
      container_id:
        description: First ID inside.
        type: int
        required: true
      host_id:
        description: First ID outside.
        type: int
        required: true
      size:
        description: How many IDs.
        type: int
        required: true
  gid_map:
    description: Group ID mappings of the user namespace.
    type: list
    elements: dict
    suboptions:
      container_id:
        description: First ID inside.
        type: int
        required: true
      host_id:
        description: First ID outside.
        type: int
        required: true
      size:
        description: How many IDs.
        type: int
        required: true
  time_offsets:
    description: Clock offsets in seconds for the time namespace (needs O(namespaces.time=true)).
    type: dict
    suboptions:
      boottime:
        description: Offset of C(CLOCK_BOOTTIME) (what C(/proc/uptime) shows).
        type: float
      monotonic:
        description: Offset of C(CLOCK_MONOTONIC).
        type: float
  cgroup:
    description:
      - Where the container's processes live. By default the container gets its own leaf C(kernelbox/NAME) below
        the cgroup2 mount, created at start and removed with O(state=absent).
      - Limits (the same options as the C(cgroup_v2) module) are written to that leaf. Changing only limits
        applies them to the running container without a restart; removing a limit resets it to the kernel default.
      - Limits need the controllers in cgroup v2; on a hybrid cgroup host they fail early with the fix.
    type: dict
    suboptions:
      path:
        description:
          - Join this existing group (as the C(cgroup_v2) module returns its path, relative to the cgroup2 mount)
            instead of making a leaf. Its limits are then managed with C(cgroup_v2), and it is not removed.
        type: str
      parent:
        description: The parent of the container's own leaf, relative to the cgroup2 mount (default C(kernelbox)).
        type: str
      name:
        description: The leaf's name below O(cgroup.parent) (default O(name)).
        type: str
      cpu_max:
        description: "C(cpu.max), as in C(cgroup_v2) (for example C(max), C(50000 100000), or C({cpus: 1.5}))."
        type: raw
      cpu_weight:
        description: C(cpu.weight), 1 to 10000.
        type: int
      memory_max:
        description: C(memory.max), bytes or a size such as C(512M), or C(max).
        type: raw
      memory_high:
        description: C(memory.high).
        type: raw
      memory_low:
        description: C(memory.low).
        type: raw
      memory_swap_max:
        description: C(memory.swap.max).
        type: raw
      pids_max:
        description: C(pids.max), a number or C(max).
        type: raw
      io_max:
        description: C(io.max) rules, as in C(cgroup_v2) (C(device) plus C(rbps), C(wbps), C(riops), C(wiops)).
        type: list
        elements: dict
      cpuset_cpus:
        description: C(cpuset.cpus), such as C(0-1).
        type: str
      cpuset_mems:
        description: C(cpuset.mems).
        type: str
      settings:
        description: Other interface files, as in C(cgroup_v2).
        type: dict
  mounts:
    description:
      - Extra mounts, after the defaults (C(/proc), C(/dev) with the standard devices, C(/dev/pts), C(/dev/shm),
        C(/dev/mqueue), C(/sys) read-only, C(/sys/fs/cgroup) read-only, C(/tmp)). A mount on the destination of a
        default replaces it.
    type: list
    elements: dict
    suboptions:
      type:
        description: V(bind) mounts a host path (recursively); V(tmpfs) mounts a fresh tmpfs.
        type: str
        choices: [bind, tmpfs]
        default: bind
      source:
        description: The host path of a bind mount.
        type: path
      destination:
        description: Where it appears inside the container.
        type: str
        required: true
        aliases: [target]
      readonly:
        description: Mount it read-only.
        type: bool
        default: false
      size:
        description: Size limit of a tmpfs (such as C(64m)).
        type: str
      mode:
        description: Octal mode of a tmpfs root (such as C(1777)).
        type: str
      options:
        description: More mount options (such as C(nosuid), C(noexec), C(nodev)).
        type: list
        elements: str
        default: []
  readonly_rootfs:
    description: Mount the root filesystem read-only.
    type: bool
    default: false
  capabilities:
    description:
      - The capability set (bounding, effective and permitted; inheritable and ambient stay empty). Defaults to
        Docker's 14 (C(CAP_CHOWN), C(CAP_DAC_OVERRIDE), C(CAP_FSETID), C(CAP_FOWNER), C(CAP_MKNOD), C(CAP_NET_RAW),
        C(CAP_SETGID), C(CAP_SETUID), C(CAP_SETFCAP), C(CAP_SETPCAP), C(CAP_NET_BIND_SERVICE), C(CAP_SYS_CHROOT),
        C(CAP_KILL), C(CAP_AUDIT_WRITE)). Names are case-insensitive, with or without C(CAP_).
    type: list
    elements: str
  cap_add:
    description: Capabilities added to O(capabilities) (or to the default set).
    type: list
    elements: str
  cap_drop:
    description: Capabilities removed from O(capabilities) (or the default set); C(ALL) removes every one.
    type: list
    elements: str
  no_new_privileges:
    description: Set C(no_new_privs), so setuid binaries and file capabilities cannot raise privileges.
    type: bool
    default: true
  rlimits:
    description:
      - Resource limits by name (C(nofile), C(nproc), C(RLIMIT_CORE) ...), each a number, C(SOFT:HARD),
        C(unlimited), or a dict with C(soft) and C(hard). C(nofile) defaults to C(1024:1024).
    type: dict
  seccomp:
    description:
      - V(default) (the default) applies a filter blocking what Docker's default profile blocks for the
        container's capabilities (mount, unshare, keyctl, kexec, bpf, ptrace without CAP_SYS_PTRACE, and so on).
      - V(unconfined) applies no filter.
      - An OCI C(linux.seccomp) object, or the absolute path of a JSON file holding one, applies that profile.
    type: raw
  masked_paths:
    description: Paths made unreadable inside (default runc's list, such as C(/proc/kcore) and C(/sys/firmware)).
    type: list
    elements: str
  readonly_paths:
    description: Paths made read-only inside (default C(/proc/bus), C(/proc/fs), C(/proc/irq), C(/proc/sys),
      C(/proc/sysrq-trigger)).
    type: list
    elements: str
  sysctls:
    description: Namespaced sysctls set inside the container (C(net.*) with a network namespace, IPC ones with an
      IPC namespace).
    type: dict
  oom_score_adj:
    description: The init's C(oom_score_adj), -1000 to 1000.
    type: int
  annotations:
    description: OCI annotations stored with the spec.
    type: dict
  etc_hosts:
    description:
      - Extra C(/etc/hosts) entries, host name to address. The container always gets its own C(/etc/hosts)
        (localhost and its host name) and C(/etc/hostname); their content lives on a private tmpfs and is bound
        onto the root filesystem's files, which must be regular files reached without a symlink.
      - Where the root filesystem lacks one of these files (or a mount destination), an empty one is made there as
        the mount point, as runc does, and O(state=absent) removes it again unless another container still runs
        from the same root filesystem.
    type: dict
  dns:
    description: Name servers for the container's own C(/etc/resolv.conf). Without O(dns), O(dns_search) and
      O(dns_options) the root filesystem's file is used.
    type: list
    elements: str
  dns_search:
    description: Search domains for C(/etc/resolv.conf).
    type: list
    elements: str
  dns_options:
    description: Resolver options for C(/etc/resolv.conf) (such as C(ndots:2)).
    type: list
    elements: str
  oci_config:
    description:
      - An OCI runtime spec (C(config.json)) as a dict, or the path of a C(config.json) (a relative C(root.path)
        is then relative to its directory). The spec comes from it alone, so the spec options (O(rootfs),
        O(command), O(env) ...) must not be given; the lifecycle options still apply.
      - C(linux.resources) are applied as cgroup v2 limits in place; C(linux.resources.devices) becomes a device
        program (eBPF) on the container's leaf, and changing it recreates the container.
      - C(linux.cgroupsPath) places the container's leaf (absolute below the cgroup2 root, relative below
        C(kernelbox), or systemd's C(slice:prefix:name) form); it cannot be combined with O(cgroup.path),
        O(cgroup.parent) or O(cgroup.name).
      - The same mapping as the C(kernelbox-runtime) OCI command line. C(hooks) and C(process.terminal) are refused
        (container_process runs no hooks and has no terminal to give), and AppArmor and SELinux labels are refused on
        a host without that LSM; nothing is ignored.
    type: raw
  log:
    description:
      - The container's log, its stdout and stderr in C(/var/lib/kernelbox/containers/NAME/container.log), with the
        supervisor's own notes marked C([kernelbox]).
      - With the systemd supervisor stdout and stderr go to the journal (C(journalctl -u kernelbox-NAME)) instead,
        O(log.max_size) does not apply, and RV(log_tail) comes from the journal.
    type: dict
    suboptions:
      max_size:
        description:
          - When the log passes this size it moves to C(container.log.1) (replacing the older one) and starts
            again; C(0) means no cap. The supervisor writes the file from a pipe that is the container's stdout and
            stderr, so the cap holds as it is written, and rotation renames, never copies.
          - Default C(10M) for a new container; an existing one keeps its setting when this is not given.
        type: str
      tail_lines:
        description: How many of the last log lines RV(log_tail) returns.
        type: int
        default: 20
  restart_policy:
    description:
      - V(no), V(on-failure) (restart after a non-zero exit or a signal), V(on-failure:N) (at most N restarts),
        V(always), or V(unless-stopped) (restarts like V(always); the C(container) module also keeps a container a
        task stopped from starting at boot). Restarts wait an exponential back-off from 100 ms up to 30 s, which
        starts over after a run of 10 s or more.
      - Default V(no) for a new container; an existing one keeps its policy when this is not given.
      - Changing it does not restart the container.
    type: str
  enabled:
    description:
      - Start the container at boot. With systemd this enables the unit. With the kernelbox supervisor it is
        recorded, and C(/var/lib/kernelbox/runtime/current/kernelbox-supervisor.py boot) (run it from the boot
        scripts of the host's init) starts every enabled container.
      - Default V(false) for a new container; an existing one keeps its setting when this is not given.
    type: bool
  stop_signal:
    description:
      - The signal that asks the container's init to stop (default C(SIGTERM) for a new container; an existing one
        keeps its setting when this is not given).
    type: str
  stop_timeout:
    description:
      - Seconds between O(stop_signal) and SIGKILL of the whole cgroup (default C(10) for a new container; an
        existing one keeps its setting when this is not given).
    type: float
  wait_for:
    description:
      - After starting (and on every run with O(state=started)), wait until the container is ready; on timeout
        the task fails and its message shows the last log lines. Give exactly one of O(wait_for.port),
        O(wait_for.file) or O(wait_for.command).
    type: dict
    suboptions:
      port:
        description: A TCP port listening inside the container's network namespace.
        type: int
      file:
        description: A path that exists inside the container.
        type: str
      command:
        description: An argv run inside the container (its namespaces, user, capabilities and seccomp) that must
          exit 0.
        type: list
        elements: str
      timeout:
        description: Seconds to wait.
        type: float
        default: 30.0
      interval:
        description: Seconds between checks.
        type: float
        default: 0.2
  supervisor:
    description:
      - Who parents and supervises the container. V(auto) picks V(systemd) where PID 1 is systemd, else V(kernelbox);
        an existing container keeps its supervisor.
      - V(kernelbox) is one small daemon per host that parents every container, started on demand and gone when
        nothing runs. V(systemd) makes a unit C(kernelbox-NAME.service) per container (C(Delegate=yes), the
        journal, C(systemctl enable) for O(enabled)); the container then lives in the unit's cgroup, and
        O(cgroup.path), O(cgroup.parent) and O(cgroup.name) are refused.
      - Changing it for an existing container recreates the container.
    type: str
    choices: [auto, kernelbox, systemd]
    default: auto
notes:
  - Requires root on the target.
  - For tests only, the environment variable C(KERNELBOX_TEST_FAULT) makes the module (or the supervisor) SIGKILL
    itself at a named step; never set it otherwise.
seealso:
  - module: kernelbox.containers.overlay_rootfs
  - module: kernelbox.containers.netns
  - module: kernelbox.containers.cgroup_v2
"""

EXAMPLES = r"""
- name: A web server from an overlay root, limited, restarted on failure, ready when it listens
  kernelbox.containers.container_process:
    name: web
    rootfs: "{{ overlay.merged }}"
    command: [/bin/httpd, -f, -p, "8080"]
    env:
      APP_ENV: production
    namespaces:
      netns: web
    cgroup:
      memory_max: 256M
      pids_max: 100
    restart_policy: on-failure:5
    wait_for:
      port: 8080
      timeout: 20

- name: The same container with a bigger memory limit (applied in place, no restart)
  kernelbox.containers.container_process:
    name: web
    rootfs: "{{ overlay.merged }}"
    command: [/bin/httpd, -f, -p, "8080"]
    env:
      APP_ENV: production
    namespaces:
      netns: web
    cgroup:
      memory_max: 512M
      pids_max: 100
    restart_policy: on-failure:5

- name: A batch job, read-only root, no capabilities; its exit code is returned
  kernelbox.containers.container_process:
    name: report
    rootfs: /srv/images/tools
    command: [/bin/sh, -c, "make-report > /out/report.txt"]
    readonly_rootfs: true
    cap_drop: [ALL]
    user: "1000:1000"
    mounts:
      - source: /srv/reports
        destination: /out
  register: job

- name: Run a bundle's config.json as it is
  kernelbox.containers.container_process:
    name: bundle
    oci_config: /srv/bundles/app/config.json

- name: Remove it, its state and its cgroup
  kernelbox.containers.container_process:
    name: web
    state: absent
"""

RETURN = r"""
name:
  description: The container name.
  returned: always
  type: str
  sample: web
exists:
  description: Whether the container exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
status:
  description:
    - The supervisor's view, C(created), C(starting), C(running), C(stopping), C(restarting) (waiting out the
      back-off), C(exited), C(failed) (the last start failed before exec), or C(absent).
  returned: always
  type: str
  sample: running
running:
  description: Whether the container's init is alive now (checked by PID and start time).
  returned: always
  type: bool
  sample: true
pid:
  description: Host PID of the container's init while it runs.
  returned: always
  type: int
  sample: 4242
starttime:
  description: The init's start time in clock ticks after boot (field 22 of C(/proc/PID/stat)); with RV(pid) it
    identifies the process even after the PID is reused.
  returned: always
  type: int
  sample: 1234567
started_at:
  description: When the current (or last) run started, ISO 8601 UTC.
  returned: always
  type: str
  sample: "2026-01-01T12:00:00.000000+00:00"
exited_at:
  description: When the last run exited, ISO 8601 UTC; null while it runs.
  returned: always
  type: str
exit_code:
  description: The last run's exit code (128 + N when signal N ended it); null while it runs or when unknown.
  returned: always
  type: int
  sample: 0
exit_signal:
  description: The signal that ended the last run, if one did.
  returned: always
  type: str
  sample: SIGKILL
exit_note:
  description: Why RV(exit_code) is unknown, when it is (the supervisor that was its parent had died).
  returned: always
  type: str
restart_count:
  description: Restarts by the restart policy since the module last started the container.
  returned: always
  type: int
  sample: 0
error:
  description: Where and why the last start failed (C(step), C(errno), C(msg)), or null.
  returned: always
  type: dict
namespaces:
  description: The init's namespaces as type to inode, as C(lsns) shows them.
  returned: always
  type: dict
  sample: {"pid": 4026532710, "network": 4026532713}
supervisor:
  description: Who supervises the container (C(kind) kernelbox or systemd, and the supervisor's C(pid)).
  returned: always
  type: dict
  sample: {"kind": "kernelbox", "pid": 4200}
restart_policy:
  description: The restart policy in force.
  returned: always
  type: str
  sample: on-failure:5
enabled:
  description: Whether the container starts at boot.
  returned: always
  type: bool
cgroup:
  description: The container's cgroup directory.
  returned: always
  type: str
  sample: /sys/fs/cgroup/kernelbox/web
config_digest:
  description: sha256 of the stored OCI spec.
  returned: always
  type: str
config:
  description: The stored OCI runtime spec (C(config.json)).
  returned: always
  type: dict
recreate_keys:
  description: The OCI keys whose change made this run recreate the container (empty otherwise).
  returned: always
  type: list
  elements: str
  sample: ["process.args", "process.env"]
log_path:
  description: The container's log file.
  returned: always
  type: str
  sample: /var/lib/kernelbox/containers/web/container.log
log_tail:
  description: The last O(log.tail_lines) lines of the log.
  returned: always
  type: list
  elements: str
wait_for:
  description: With O(wait_for), C(ready) and the seconds it took (C(elapsed)); null otherwise.
  returned: always
  type: dict
  sample: {"ready": true, "elapsed": 0.4}
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["stop container web (recreate: process.env changed)", "replace the spec of container web (recreate:
    process.env changed)", "start container web (recreate: process.env changed)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container_process import (
    ARGUMENT_SPEC, ContainerResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    resource = ContainerResource(module.params, module.check_mode)
    try:
        flow.run(module, resource)
    finally:
        resource.close()


if __name__ == "__main__":
    main()
