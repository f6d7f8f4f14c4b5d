# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: cgroup v2 groups, without Ansible.

Public API (what the cgroup_v2 module and the container runtime call)::

    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup

    hierarchy = cgroup.find_hierarchy()      # the cgroup2 mount from mountinfo: /sys/fs/cgroup (pure v2)
                                             # or /sys/fs/cgroup/unified (hybrid); .controllers, .layout
    limits = cgroup.Limits(memory_max="512M", cpu_max={"cpus": 1.5}, pids_max=100,
                           io_max=[{"device": "/dev/sda", "wbps": "10M"}])   # module option names
    group = cgroup.create_leaf("web", parent="kernelbox", limits=limits)
                                             # resolve + containment check, mkdir the parents, enable the
                                             # controllers in every ancestor, mkdir, write the limits; idempotent
    cgroup.move_pid(group, pid)              # write cgroup.procs (0 = the calling process)
    changes = cgroup.apply_limits(group, limits)   # in place; [(file, before, after)] actually written
    stats = cgroup.read_stats(group)         # memory/pids/cpu/io/pressure, see read_stats()
    cgroup.kill_and_remove(group)            # cgroup.kill (or freeze+SIGKILL+thaw), wait populated 0,
                                             # rmdir bottom-up; fine if already gone

    group = cgroup.resolve("web", parent="kernelbox")   # a handle without creating anything
    group.path, group.relpath, group.exists(), group.procs(), group.populated(), group.frozen()
    cgroup.freeze(group, True)               # cgroup.freeze + wait for cgroup.events frozen
    cgroup.cgroup_of_pid(pid)                # 'kernelbox/web' (root-relative, no leading '/'), None if gone
    cgroup.cpu_weight_from_shares(1024)      # OCI cpu.shares -> cpu.weight (100), runc/crun's current formula

OCI ``linux.resources`` map onto Limits as: memory.limit -> memory_max (bytes),
memory.reservation -> memory_low, memory.swap (memory+swap) -> memory_swap_max =
swap - limit, cpu.quota/period -> cpu_max={"quota": q, "period": p}, cpu.shares
-> cpu_weight=cpu_weight_from_shares(s), cpu.cpus/mems -> cpuset_cpus/mems,
pids.limit -> pids_max (-1 or 0 = "max"), blockIO.throttle*Device ->
io_max=[{"device": "MAJ:MIN", "rbps"|"wbps"|"riops"|"wiops": rate}],
unified -> settings.  Every value is validated and normalised by Limits.

Errors: ``ValidationError`` for bad input (paths, limit values), ``KernelboxError``
for host conditions with a message ready for users (missing controllers with
the fix, the no-internal-process rule, containment), ``OSError`` with the file
named for everything else.

Paths: a group is named by a ``path`` relative to a ``parent``, which is
relative to the cgroup2 mount root (both may be written with a leading '/',
as /proc/PID/cgroup shows them; an absolute ``path`` must lie inside the
parent).  Containment is checked on whole components and again on the
resolved filesystem path, one O_NOFOLLOW directory at a time, so '..',
symlinked components and the sibling-prefix case ('foo' vs 'foo2') never
escape the parent.  Lookups never list a directory: the cost of an operation
does not grow with the number of sibling groups.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_limits
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.cgroup_limits import (
    IoRule, Limits, NormalisedLimits, cpu_weight_from_shares)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.cgroup_tree import (
    DEFAULT_PARENT, FIX_HYBRID, Cgroup, Hierarchy, check_containment, find_hierarchy, group_parts,
    hierarchy_from_mounts, missing_controllers_message, path_parts, require_controllers, resolve)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

__all__ = ["DEFAULT_PARENT", "FIX_HYBRID", "Cgroup", "Hierarchy", "IoRule", "Limits", "NormalisedLimits",
           "apply_limits", "cgroup_of_pid", "check_containment", "controllers_to_enable", "cpu_weight_from_shares",
           "create_leaf", "device_number", "enable_controllers", "ensure_group", "features", "find_hierarchy",
           "freeze", "frozen_ancestor", "group_parts", "hierarchy_from_mounts", "internal_process_conflict", "kill",
           "kill_and_remove", "limit_files", "make_group", "missing_controllers_message", "move_pid", "path_parts",
           "read_limit", "read_stats", "remove", "require_controllers", "resolve", "wait_until_empty", "write_limit"]

DEFAULT_TIMEOUT = 10.0


# --- controllers and creation --------------------------------------------------

def controllers_to_enable(group: Cgroup, needed: t.Iterable[str]) -> t.List[t.Tuple[Cgroup, t.List[str]]]:
    """[(ancestor, controllers missing from its cgroup.subtree_control)], root first.

    Ancestors that do not exist yet need every controller.
    """
    wanted = set(needed)
    plan = []
    for ancestor in group.ancestors():
        have = ancestor.subtree_control() if ancestor.exists() else set()
        missing = sorted(wanted - have)
        if missing:
            plan.append((ancestor, missing))
    return plan


def internal_process_conflict(ancestor: Cgroup) -> t.Optional[str]:
    """The error text when ``ancestor`` holds processes and so cannot hand controllers down."""
    if ancestor.is_root or not ancestor.exists():
        return None  # the root is exempt from the no-internal-process rule; new groups are empty
    pids = ancestor.procs()
    if not pids:
        return None
    shown = ", ".join(str(pid) for pid in pids[:10]) + (" ..." if len(pids) > 10 else "")
    return ("cannot enable controllers for the groups below %s: it holds processes itself (PIDs %s), and "
            "cgroup v2's no-internal-process rule lets a group either contain processes or distribute "
            "controllers to child groups, not both. Move those processes into a leaf group (for example "
            "%s/supervisor), or choose a parent without processes" % (ancestor.path, shown, ancestor.path))


def enable_controllers(ancestor: Cgroup, controllers: t.Iterable[str]) -> None:
    """Write '+ctrl ...' to the ancestor's cgroup.subtree_control."""
    conflict = internal_process_conflict(ancestor)
    if conflict:
        raise KernelboxError(conflict)
    wanted = sorted(controllers)
    try:
        ancestor.write("cgroup.subtree_control", " ".join("+" + c for c in wanted))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise KernelboxError(internal_process_conflict(ancestor) or
                                 "enabling %s in %s/cgroup.subtree_control failed: the group is busy (it holds "
                                 "processes or is threaded)" % (" ".join(wanted), ancestor.path))
        if exc.errno == errno.ENOENT:
            raise KernelboxError("enabling %s in %s/cgroup.subtree_control failed: not available there (the "
                                 "parent does not pass them down)" % (" ".join(wanted), ancestor.path))
        raise


def make_group(group: Cgroup) -> None:
    """mkdir one group (its parent must exist); an existing directory is fine."""
    try:
        os.mkdir(group.path, 0o755)
    except FileExistsError:
        if not group.exists():
            raise KernelboxError("%s exists and is not a cgroup directory" % group.path)


def ensure_group(group: Cgroup, controllers: t.Iterable[str] = ()) -> t.List[str]:
    """Create the missing ancestors and the group, enabling ``controllers`` top-down; returns what was done."""
    done = []
    needed = set(controllers)
    for ancestor in group.ancestors():
        if not ancestor.exists():
            make_group(ancestor)
            done.append("created %s" % ancestor.relpath)
        missing = sorted(needed - ancestor.subtree_control())
        if missing:
            enable_controllers(ancestor, missing)
            done.append("enabled %s in %s" % (" ".join(missing), ancestor.relpath or "/"))
    if not group.exists():
        make_group(group)
        done.append("created %s" % group.relpath)
    return done


# --- limits --------------------------------------------------------------------

def device_number(device: str) -> str:
    """'MAJ:MIN' of a whole block device, given as a path or as 'MAJ:MIN'."""
    if not device.startswith("/"):
        numbers = device
    else:
        try:
            info = os.stat(device)
        except FileNotFoundError:
            raise KernelboxError("io_max: device %s does not exist" % device)
        if not stat.S_ISBLK(info.st_mode):
            raise KernelboxError("io_max: %s is not a block device" % device)
        numbers = "%d:%d" % (os.major(info.st_rdev), os.minor(info.st_rdev))
    sysfs = "/sys/dev/block/%s" % numbers
    if not os.path.exists(sysfs):
        raise KernelboxError("io_max: no block device %s (%s)" % (numbers, device))
    if os.path.exists(os.path.join(sysfs, "partition")):
        disk = os.path.basename(os.path.dirname(os.path.realpath(sysfs)))
        raise KernelboxError("io_max: %s is a partition; the io controller limits whole disks (use /dev/%s)"
                             % (device, disk))
    return numbers


def limit_files(limits: t.Union[Limits, NormalisedLimits]) -> t.Dict[str, str]:
    """Every managed interface file -> its value as the kernel prints it, io.max devices resolved."""
    normal = limits.normalise() if isinstance(limits, Limits) else limits
    files = dict(normal.files)
    if normal.io_rules is not None:
        lines = [rule.line(device_number(rule.device)) for rule in normal.io_rules if not rule.unlimited]
        files["io.max"] = cgroup_limits.io_max_text(lines)
    return files


def read_limit(group: Cgroup, name: str) -> t.Optional[str]:
    """A limit file's current value in compared form; None when the file does not exist."""
    text = group.read_optional(name)
    if text is None:
        return None
    if name == "io.max":
        return cgroup_limits.io_max_text(text.splitlines())
    return " ".join(text.split())


def write_limit(group: Cgroup, name: str, value: str, current: t.Optional[str] = None) -> None:
    """Write one limit.  io.max is written per device, and devices no longer listed are reset to max."""
    if name != "io.max":
        group.write(name, value)
        return
    wanted = cgroup_limits.io_max_devices(value)
    before = cgroup_limits.io_max_devices(current if current is not None else (read_limit(group, name) or ""))
    for device in sorted(set(before) - set(wanted)):
        group.write(name, "%s rbps=max wbps=max riops=max wiops=max" % device)
    for device, settings in sorted(wanted.items()):
        if before.get(device) != settings:
            group.write(name, "%s %s" % (device, settings))


def apply_limits(group: Cgroup, limits: t.Union[Limits, NormalisedLimits, t.Mapping[str, str]]
                 ) -> t.List[t.Tuple[str, t.Optional[str], str]]:
    """Write the files whose value differs; [(file, before, after)] for each write, in write order."""
    files = dict(limits) if isinstance(limits, dict) else limit_files(limits)
    changes = []
    for name in cgroup_limits.ordered(files):
        before = read_limit(group, name)
        if before is None and not group.has_file(name):
            raise KernelboxError("%s has no %s: the %s controller is not enabled for it, or this kernel lacks "
                                 "the file" % (group.path, name, cgroup_limits.controller_of(name) or "core"))
        if before != files[name]:
            write_limit(group, name, files[name], before)
            changes.append((name, before, files[name]))
    return changes


def create_leaf(path: str, parent: str = DEFAULT_PARENT, limits: t.Optional[t.Union[Limits, NormalisedLimits]] = None,
                hierarchy: t.Optional[Hierarchy] = None) -> Cgroup:
    """Resolve, create (with controllers for ``limits`` in every ancestor) and apply ``limits``; idempotent."""
    normal = limits.normalise() if isinstance(limits, Limits) else (limits or NormalisedLimits())
    group = resolve(path, parent, hierarchy)
    needed = normal.controllers()
    require_controllers(group.hierarchy, needed)
    ensure_group(group, needed)
    apply_limits(group, normal)
    return group


def move_pid(group: Cgroup, pid: int) -> None:
    """Move process ``pid`` (all its threads) into the group; 0 moves the caller."""
    try:
        group.write("cgroup.procs", str(int(pid)))
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise KernelboxError("cannot move PID %d into %s: no such process" % (pid, group.path))
        if exc.errno == errno.EBUSY:
            raise KernelboxError("cannot move PID %d into %s: the group hands controllers to child groups "
                                 "(cgroup.subtree_control is not empty), and cgroup v2 allows processes only in "
                                 "leaf groups" % (pid, group.path))
        raise


def cgroup_of_pid(pid: int) -> t.Optional[str]:
    """The cgroup v2 path of ``pid`` without the leading '/' ('' is the root); None if it has exited."""
    try:
        with open("/proc/%d/cgroup" % pid, "r", encoding="utf-8", errors="surrogateescape") as handle:
            path = procfs.cgroup2_path_of(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if path is None else path.lstrip("/")


# --- freeze, kill, remove ------------------------------------------------------

def _wait_for(predicate: t.Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def freeze(group: Cgroup, frozen: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Freeze or thaw the group (and its descendants) and wait until cgroup.events agrees."""
    if not group.has_file("cgroup.freeze"):
        raise KernelboxError("%s has no cgroup.freeze: the cgroup v2 freezer needs Linux 5.2 or later" % group.path)
    group.write("cgroup.freeze", "1" if frozen else "0")
    if not frozen and frozen_ancestor(group):
        return  # thawed itself, but held frozen from above until that ancestor thaws: nothing to wait for
    if _wait_for(lambda: group.frozen() == frozen, timeout):
        return
    raise KernelboxError("%s did not %s within %.0f s (cgroup.events: %s)"
                         % (group.path, "freeze" if frozen else "thaw", timeout, group.events()))


def frozen_ancestor(group: Cgroup) -> t.Optional[Cgroup]:
    """The nearest ancestor whose cgroup.freeze is 1 (it keeps this group frozen), or None."""
    for ancestor in reversed(group.ancestors()):
        if not ancestor.is_root and ancestor.exists() and ancestor.read_optional("cgroup.freeze") == "1":
            return ancestor
    return None


def _all_pids(group: Cgroup) -> t.List[int]:
    pids = []
    for member in [group] + group.descendants():
        try:
            pids.extend(member.procs())
        except FileNotFoundError:
            continue
    return sorted(set(pids))


def _inside(pid: int, group: Cgroup) -> bool:
    path = cgroup_of_pid(pid)
    return path is not None and tuple(p for p in path.split("/") if p)[:len(group.parts)] == group.parts


def _signal_members(group: Cgroup) -> int:
    """SIGKILL every process of the frozen group through a pidfd, after re-checking membership."""
    count = 0
    for pid in _all_pids(group):
        try:
            fd = libc.pidfd_open(pid)
        except OSError:
            fd = None  # exited meanwhile, or no pidfd (Linux < 5.3): fall back to kill(2) below
        try:
            if not _inside(pid, group):
                continue  # the PID is no longer ours: never signal a recycled PID
            if fd is not None:
                libc.pidfd_send_signal(fd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            count += 1
        except (ProcessLookupError, OSError):
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return count


def kill(group: Cgroup, timeout: float = DEFAULT_TIMEOUT, use_cgroup_kill: t.Optional[bool] = None) -> None:
    """SIGKILL every process in the group and its descendants, then wait for populated 0.

    cgroup.kill (Linux 5.14) does it atomically, frozen or not.  Without it,
    freeze the group so nothing forks away, signal each member, and thaw.
    """
    if not group.exists() or not group.populated():
        return
    if use_cgroup_kill is None:
        use_cgroup_kill = group.has_file("cgroup.kill")
    if use_cgroup_kill:
        group.write("cgroup.kill", "1")
    else:
        can_freeze = group.has_file("cgroup.freeze")
        was_frozen = can_freeze and group.read("cgroup.freeze") == "1"
        for _round in range(10):
            if can_freeze:
                freeze(group, True, timeout)
            _signal_members(group)
            if can_freeze and not was_frozen:
                freeze(group, False, timeout)
            if _wait_for(lambda: not group.populated(), 0.5):
                break
    wait_until_empty(group, timeout)


def wait_until_empty(group: Cgroup, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait for cgroup.events 'populated 0'; explain what is left on timeout."""
    if _wait_for(lambda: not group.exists() or not group.populated(), timeout):
        return
    left = []
    for pid in _all_pids(group)[:10]:
        try:
            with open("/proc/%d/stat" % pid, "r") as handle:
                left.append("%d (state %s)" % (pid, procfs.parse_proc_stat(handle.read()).state))
        except OSError:
            continue
    raise KernelboxError("%s still holds processes %.0f s after SIGKILL: %s (a process in state D waits for I/O "
                         "and dies when it returns)" % (group.path, timeout, ", ".join(left) or "none listed"))


def remove(group: Cgroup, timeout: float = DEFAULT_TIMEOUT) -> t.List[str]:
    """rmdir the descendants bottom-up, then the group; the group must be empty.  Returns what was removed."""
    removed = []
    for member in group.descendants() + [group]:
        if not _wait_for(lambda member=member: _try_rmdir(member), timeout):
            raise KernelboxError("cannot remove %s: still busy after %.0f s (cgroup.events: %s)"
                                 % (member.path, timeout, member.read_optional("cgroup.events")))
        removed.append(member.relpath)
    return removed


def _try_rmdir(group: Cgroup) -> bool:
    try:
        os.rmdir(group.path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    return True


def kill_and_remove(group: Cgroup, timeout: float = DEFAULT_TIMEOUT) -> t.List[str]:
    """Kill everything inside, wait for populated 0, remove descendants and the group; fine if gone."""
    if not group.exists():
        return []
    kill(group, timeout)
    return remove(group, timeout)


# --- stats and features ---------------------------------------------------------

def _int_or_none(text: t.Optional[str]) -> t.Optional[int]:
    if text is None:
        return None
    text = text.strip()
    return None if text == "max" else int(text)


def read_stats(group: Cgroup) -> t.Dict[str, t.Any]:
    """Live statistics; a section is None when its controller is not enabled for the group.

    memory: current, peak, swap_current (bytes), events {low, high, max, oom, oom_kill, ...}
    pids:   current, peak, events_max (forks refused by pids.max)
    cpu:    cpu.stat as ints: usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec...
    io:     io.stat per 'MAJ:MIN': rbytes, wbytes, rios, wios, dbytes, dios
    pressure: {cpu|memory|io: {some|full: {avg10, avg60, avg300, total}}} where PSI is on
    """
    stats: t.Dict[str, t.Any] = {"populated": group.populated(), "frozen": group.frozen(),
                                 "processes": len(group.procs())}
    current = group.read_optional("memory.current")
    stats["memory"] = None if current is None else {
        "current": int(current),
        "peak": _int_or_none(group.read_optional("memory.peak")),
        "swap_current": _int_or_none(group.read_optional("memory.swap.current")),
        "events": procfs.parse_flat_keyed(group.read_optional("memory.events") or ""),
    }
    pids_current = group.read_optional("pids.current")
    stats["pids"] = None if pids_current is None else {
        "current": int(pids_current),
        "peak": _int_or_none(group.read_optional("pids.peak")),
        "events_max": procfs.parse_flat_keyed(group.read_optional("pids.events") or "").get("max", 0),
    }
    cpu = group.read_optional("cpu.stat")
    stats["cpu"] = None if cpu is None else procfs.parse_flat_keyed(cpu)
    io = group.read_optional("io.stat")
    stats["io"] = None if io is None else {
        device: {key: int(value) for key, value in values.items() if value.isdigit()}
        for device, values in procfs.parse_nested_keyed(io).items()}
    pressure = {}
    for resource in ("cpu", "memory", "io"):
        text = group.read_optional("%s.pressure" % resource)
        if text is not None:
            pressure[resource] = procfs.parse_pressure(text)
    stats["pressure"] = pressure or None
    return stats


def features(hierarchy: Hierarchy, probe: t.Optional[Cgroup] = None) -> t.Dict[str, t.Any]:
    """What this kernel's cgroup v2 offers; ``probe`` is an existing non-root group (core files such as
    cgroup.kill do not exist in the root), else the kernel release decides."""
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2] if x.isdigit())
    probe = probe if probe is not None and not probe.is_root and probe.exists() else None

    def has(name: str, since: t.Tuple[int, int]) -> bool:
        return probe.has_file(name) if probe is not None else release >= since

    root = hierarchy.root()
    return {
        "mount": hierarchy.mount,
        "layout": hierarchy.layout,
        "controllers": sorted(hierarchy.controllers),
        "v1_controllers": sorted(hierarchy.v1_controllers),
        "kill": has("cgroup.kill", (5, 14)),
        "freeze": has("cgroup.freeze", (5, 2)),
        "pressure": root.read_optional("cpu.pressure") is not None,
        "memory_peak": has("memory.peak", (5, 19)) if "memory" in hierarchy.controllers else False,
    }
