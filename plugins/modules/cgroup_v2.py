#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cgroup_v2
short_description: Manage cgroup v2 groups and their resource limits
version_added: 0.1.0
description:
  - Creates, changes and removes cgroup v2 groups below a parent group, sets their resource limits (CPU, memory,
    swap, process count, block I/O, cpuset and any other interface file), moves processes into them and freezes
    or thaws them. Returns live statistics of the group.
  - The module finds the cgroup2 filesystem itself, from C(/proc/self/mountinfo). That is C(/sys/fs/cgroup) on
    hosts with the pure (unified) cgroup v2 layout, and C(/sys/fs/cgroup/unified) on hybrid hosts.
  - Limits change in place. Processes inside the group keep running in it; nothing is restarted or moved.
  - Values are normalised the way the kernel prints them before they are compared, so a second run reports no
    change. Memory sizes round down to whole pages exactly as the kernel's C(page_counter_memparse) does
    (C(1000000) becomes C(999424) with 4 KiB pages), V(max) is accepted in any form (C(max), C(MAX), C(-1)),
    C(cpu.max) is compared as C(QUOTA PERIOD), and CPU lists as the kernel prints them (C(1,0) becomes C(0-1)).
  - Every controller a limit needs is enabled in the C(cgroup.subtree_control) of every ancestor, from the root
    down. cgroup v2's no-internal-process rule forbids this on a non-root group that holds processes itself;
    such a parent makes the module fail before it changes anything, naming the processes.
  - On a hybrid or cgroup v1 host, or where a controller is not available, the module fails before changing
    anything and names the missing controllers and the fix (boot with C(systemd.unified_cgroup_hierarchy=1)).
    Groups, processes, freezing and removal work on hybrid hosts too, since they need no controller.
  - With O(state=absent) every process in the group and its descendants is killed (C(cgroup.kill), or freeze,
    SIGKILL and thaw on kernels without it), the module waits until C(cgroup.events) reports C(populated 0), and
    removes the descendants bottom-up, then the group. Frozen groups are handled. Removing an absent group is
    not a change.
  - "B(systemd hosts:) cgroup v2 has one writer per subtree. systemd owns the whole tree except the cgroups of
    units with C(Delegate=yes) (U(https://systemd.io/CGROUP_DELEGATION)). Point O(parent) into such a unit, for
    example C(system.slice/kernelbox.service/containers) for a service with C(Delegate=yes). When systemd is the
    init system and the parent is outside a unit, or inside a unit that is not delegated, the module warns. A unit
    counts as delegated when its cgroup carries the C(trusted.delegate) extended attribute (set by systemd 251 and
    later) or, on older systemd, when C(systemctl show -p Delegate) says V(yes)."
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  path:
    description:
      - The group, relative to O(parent), for example C(web) or C(web/worker).
      - An absolute path is read relative to the cgroup2 mount root, the way C(/proc/PID/cgroup) shows it, and must
        lie inside O(parent).
      - Components C(..), C(.) and empty components are refused. Containment is also checked on the resolved
        filesystem path, one component at a time without following symlinks, so the group can never escape the
        parent (C(foo2) is never taken to be inside C(foo)).
    type: str
    required: true
  parent:
    description:
      - The group under which O(path) lives, relative to the cgroup2 mount root. Created if missing.
      - Use a path inside a delegated systemd unit on systemd hosts (see the description).
      - V(/) or an empty string is the root of the hierarchy.
    type: str
    default: kernelbox
  state:
    description:
      - V(present) creates the group (and missing parents) and applies the options given.
      - V(absent) kills every process inside, waits until the group is empty, and removes its descendants and the
        group. The parent is kept.
    type: str
    choices: [present, absent]
    default: present
  cpu_max:
    description:
      - CPU bandwidth limit, C(cpu.max). Give O(cpu_max.cpus) or O(cpu_max.quota).
      - Options left out are not managed; this holds for every limit option.
    type: dict
    suboptions:
      cpus:
        description:
          - How many CPUs worth of time the group may use, such as V(0.2) or V(1.5). The quota is
            C(cpus * period), rounded to the microsecond.
        type: float
      quota:
        description:
          - Microseconds of CPU time per period, at least V(1000), or V(max) for no limit.
        type: str
      period:
        description:
          - The period in microseconds, V(1000) to V(1000000).
          - Defaults to V(100000) (the kernel's default).
        type: int
  cpu_weight:
    description:
      - Relative CPU share under contention, C(cpu.weight), V(1) to V(10000). The kernel's default is V(100).
    type: int
  memory_max:
    description:
      - Hard memory limit, C(memory.max). Past it the kernel reclaims and then OOM-kills inside the group.
      - A size in bytes or with a binary unit (V(512M), V(1G), V(2GiB)), or V(max). Rounded down to whole pages.
      - Setting it below the current usage warns; the kernel then reclaims or OOM-kills.
    type: str
  memory_high:
    description:
      - Memory throttling threshold, C(memory.high); same format as O(memory_max).
    type: str
  memory_low:
    description:
      - Best-effort memory protection, C(memory.low); same format as O(memory_max), V(0) allowed.
    type: str
  memory_swap_max:
    description:
      - Swap limit, C(memory.swap.max); same format as O(memory_max), V(0) disables swap for the group.
    type: str
  pids_max:
    description:
      - Maximum number of tasks (processes and threads), C(pids.max), or V(max). Forks past it fail with EAGAIN.
    type: str
  io_max:
    description:
      - Block I/O limits, C(io.max), one rule per device. When given, the list is complete; devices not listed
        lose their limits. V([]) removes every I/O limit.
    type: list
    elements: dict
    suboptions:
      device:
        description:
          - The whole block device, as a path (V(/dev/sda), V(/dev/loop0)) resolved to its major and minor numbers,
            or as V(MAJ:MIN). Partitions are refused; the io controller limits whole disks.
        type: str
        required: true
      rbps:
        description: Read bytes per second (a size such as V(10M)), or V(max). Left out means V(max).
        type: str
      wbps:
        description: Write bytes per second (a size such as V(10M)), or V(max). Left out means V(max).
        type: str
      riops:
        description: Read operations per second, or V(max). Left out means V(max).
        type: str
      wiops:
        description: Write operations per second, or V(max). Left out means V(max).
        type: str
  cpuset_cpus:
    description:
      - CPUs the group may run on, C(cpuset.cpus), such as V(0-3,6). V('') inherits the parent's.
      - The CPUs must be available below the parent, else the module fails before changing anything.
    type: str
  cpuset_mems:
    description:
      - Memory nodes the group may allocate from, C(cpuset.mems), such as V(0).
    type: str
  settings:
    description:
      - Other interface files and their values, such as C(memory.oom.group=1) or C(cpu.idle=1). Each value is one
        write; values compare with whitespace collapsed, and C(memory.*) byte files such as C(memory.min) are
        page-rounded like O(memory_max).
      - Keys must be plain interface file names (a controller, a dot and a name). Refused are paths, files with a
        dedicated option (C(memory.max) and so on), cgroup core files other than C(cgroup.max.depth) and
        C(cgroup.max.descendants), and statistics, events, pressure files and actions such as C(memory.reclaim).
      - The controller of each key is enabled like those of the other options.
    type: dict
  freeze:
    description:
      - V(true) freezes every process in the group and its descendants (C(cgroup.freeze)) and waits until the
        kernel reports the group frozen; V(false) thaws it. Left out, the freezer state is not managed.
    type: bool
  pids:
    description:
      - Processes to move into the group (each with all its threads). Processes already inside are left alone.
      - The group must be a leaf for this (cgroup v2 allows processes only where no controller is handed down).
    type: list
    elements: int
  timeout:
    description:
      - Seconds to wait for freezing, thawing, and for a killed group to become empty.
    type: float
    default: 10
notes:
  - Requires root on the target.
  - On hybrid hosts only the controllers not bound to cgroup v1 (often none, or only C(hugetlb)) are available in
    cgroup v2, so resource limits need the pure cgroup v2 layout.
  - The module never lists the parent directory, so its cost does not depend on the number of sibling groups.
seealso:
  - name: Control Group v2 (kernel documentation)
    description: The interface files and their formats.
    link: https://docs.kernel.org/admin-guide/cgroup-v2.html
  - name: systemd cgroup delegation
    description: Which parts of the cgroup tree systemd lets other managers write.
    link: https://systemd.io/CGROUP_DELEGATION
"""

EXAMPLES = r"""
- name: A group for a web container, with limits
  kernelbox.containers.cgroup_v2:
    path: web
    cpu_max:
      cpus: 1.5
    cpu_weight: 200
    memory_max: 512M
    memory_high: 448M
    memory_swap_max: 0
    pids_max: 256
    io_max:
      - device: /dev/sda
        wbps: 50M
        riops: 2000
    cpuset_cpus: 0-3
    settings:
      memory.oom.group: 1
  register: web_cgroup

- name: Show the memory use
  ansible.builtin.debug:
    msg: "{{ web_cgroup.stats.memory.current }} bytes, OOM kills {{ web_cgroup.stats.memory.events.oom_kill }}"

- name: Raise the memory limit in place and move a process in
  kernelbox.containers.cgroup_v2:
    path: web
    memory_max: 1G
    pids: ["{{ web_pid | int }}"]

- name: Freeze everything inside
  kernelbox.containers.cgroup_v2:
    path: web
    freeze: true

- name: Inside a systemd service with Delegate=yes
  kernelbox.containers.cgroup_v2:
    parent: system.slice/kernelbox.service/containers
    path: web
    memory_max: 512M

- name: Kill everything inside and remove the group with its children
  kernelbox.containers.cgroup_v2:
    path: web
    state: absent
"""

RETURN = r"""
path:
  description: The group's path relative to the cgroup2 mount root.
  returned: always
  type: str
  sample: kernelbox/web
parent:
  description: The parent's path relative to the cgroup2 mount root.
  returned: always
  type: str
  sample: kernelbox
cgroup_path:
  description: The group's directory.
  returned: always
  type: str
  sample: /sys/fs/cgroup/kernelbox/web
exists:
  description: Whether the group exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
controllers:
  description: The controllers enabled for the group (its C(cgroup.controllers)).
  returned: always
  type: list
  elements: str
  sample: [cpu, io, memory, pids]
limits:
  description: The managed interface files and their values as the kernel prints them.
  returned: always
  type: dict
  sample: {"cpu.max": "150000 100000", "memory.max": "536870912", "pids.max": "256",
           "io.max": "8:0 rbps=max wbps=52428800 riops=2000 wiops=max"}
frozen:
  description: Whether the group itself is set frozen (C(cgroup.freeze)).
  returned: always
  type: bool
  sample: false
processes:
  description: The PIDs directly in the group (not in descendants).
  returned: always
  type: list
  elements: int
  sample: [4242]
stats:
  description:
    - Live statistics, null when the group does not exist. A section is null when its controller is not enabled
      for the group; C(pressure) is null where the kernel has no PSI.
  returned: always
  type: dict
  contains:
    populated:
      description: Whether a process lives in the group or a descendant (C(cgroup.events)).
      type: bool
    frozen:
      description: Whether the group is frozen, by itself or by an ancestor (C(cgroup.events)).
      type: bool
    processes:
      description: The number of processes directly in the group.
      type: int
    memory:
      description: C(current), C(peak) and C(swap_current) in bytes, and C(events) from C(memory.events) (C(oom),
        C(oom_kill), C(max), C(high), C(low)).
      type: dict
    pids:
      description: C(current), C(peak), and C(events_max), the number of forks refused by C(pids.max).
      type: dict
    cpu:
      description: C(cpu.stat) as integers, such as C(usage_usec), C(nr_throttled) and C(throttled_usec).
      type: dict
    io:
      description: C(io.stat) per device C(MAJ:MIN) (C(rbytes), C(wbytes), C(rios), C(wios), C(dbytes), C(dios)).
      type: dict
    pressure:
      description: PSI per resource (C(cpu), C(memory), C(io)), each with C(some) and C(full) and their C(avg10),
        C(avg60), C(avg300) and C(total).
      type: dict
  sample:
    populated: true
    frozen: false
    processes: 1
    memory: {current: 2297856, peak: 4452352, swap_current: 0, events: {oom: 0, oom_kill: 0, max: 0, high: 0, low: 0}}
    pids: {current: 1, peak: 3, events_max: 0}
    cpu: {usage_usec: 21541, nr_periods: 12, nr_throttled: 2, throttled_usec: 8061}
    io: {"7:0": {rbytes: 0, wbytes: 4194304, rios: 0, wios: 64, dbytes: 0, dios: 0}}
    pressure: {memory: {some: {avg10: 0.0, avg60: 0.0, avg300: 0.0, total: 0.0}}}
hierarchy:
  description: What the host's cgroup v2 offers.
  returned: always
  type: dict
  contains:
    mount:
      description: The cgroup2 mount point.
      type: str
    layout:
      description: V(unified) (pure cgroup v2) or V(hybrid) (cgroup v1 hierarchies mounted too).
      type: str
    controllers:
      description: The controllers available in cgroup v2 (the root's C(cgroup.controllers)).
      type: list
      elements: str
    v1_controllers:
      description: Controllers bound to cgroup v1 hierarchies (hybrid hosts).
      type: list
      elements: str
    kill:
      description: Whether C(cgroup.kill) exists (Linux 5.14).
      type: bool
    freeze:
      description: Whether the cgroup v2 freezer exists (Linux 5.2).
      type: bool
    pressure:
      description: Whether pressure stall information (PSI) is available.
      type: bool
    memory_peak:
      description: Whether C(memory.peak) exists (Linux 5.19).
      type: bool
  sample: {mount: /sys/fs/cgroup, layout: unified, controllers: [cpu, cpuset, io, memory, pids], v1_controllers: [],
           kill: true, freeze: true, pressure: true, memory_peak: true}
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason; one per file written.
  returned: always
  type: list
  elements: str
  sample: ["enable +memory +pids in /kernelbox/cgroup.subtree_control (needed by memory_max, pids_max)",
           "set memory.max to 536870912 (was max)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.cgroup_v2 import ARGUMENT_SPEC, CgroupResource


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    resource = CgroupResource(module.params, module.check_mode)
    resource.run_command = module.run_command
    flow.run(module, resource)


if __name__ == "__main__":
    main()
