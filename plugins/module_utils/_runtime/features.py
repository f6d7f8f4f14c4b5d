# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what this host's kernel offers containers, like ``runc features``.

``probe()`` reads /proc and /sys and asks the kernel directly where a file
cannot tell (a syscall called with arguments it must refuse: ENOSYS means
missing, any other error means present).  It creates nothing and changes
nothing.  ``missing`` names, in words a role can branch on, every piece
kernelbox uses that is absent, so a play can fail early or choose another
path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs, procscan
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

# Overlay options by the kernel release that introduced them (Documentation/filesystems/overlayfs.rst).
OVERLAY_OPTIONS = (("lowerdir", (3, 18)), ("upperdir", (3, 18)), ("workdir", (3, 18)),
                   ("default_permissions", (4, 5)), ("redirect_dir", (4, 10)), ("index", (4, 13)),
                   ("nfs_export", (4, 16)), ("xino", (4, 17)), ("metacopy", (4, 19)), ("volatile", (5, 10)),
                   ("userxattr", (5, 11)), ("uuid", (6, 6)), ("lowerdir+", (6, 8)), ("datadir+", (6, 8)))


def kernel_release(release: t.Optional[str] = None) -> t.Tuple[int, int]:
    text = release or os.uname().release
    numbers = []
    for part in text.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits or 0))
    while len(numbers) < 2:
        numbers.append(0)
    return numbers[0], numbers[1]


def _read(path: str) -> t.Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _int(path: str) -> t.Optional[int]:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def namespaces() -> t.Dict[str, bool]:
    return {kind: os.path.exists("/proc/self/ns/%s" % kind) for kind in procscan.NAMESPACE_TYPES}


def cgroups() -> t.Dict[str, t.Any]:
    """mode: pure (cgroup v2 only), hybrid (v2 beside v1 controllers) or none (no cgroup2 mounted)."""
    try:
        hierarchy = cgroup.find_hierarchy()
    except (KernelboxError, OSError) as exc:
        v1 = sorted({opt for m in procfs.read_mountinfo() if m.fstype == "cgroup"
                     for opt in m.super_options if opt not in ("rw", "ro") and "=" not in opt})
        return {"mode": "none", "mount": None, "controllers": [], "v1_controllers": v1,
                "problem": getattr(exc, "msg", None) or str(exc)}
    facts = cgroup.features(hierarchy)
    facts["mode"] = "pure" if hierarchy.layout == "unified" else "hybrid"
    return facts


def overlay(release: t.Tuple[int, int]) -> t.Dict[str, t.Any]:
    filesystems = _read("/proc/filesystems") or ""
    available = any(line.split()[-1] == "overlay" for line in filesystems.splitlines() if line.split())
    params_dir = "/sys/module/overlay/parameters"
    parameters = {}
    if os.path.isdir(params_dir):
        for name in sorted(os.listdir(params_dir)):
            value = _read(os.path.join(params_dir, name))
            if value is not None:
                parameters[name] = value
    return {
        "available": available,
        # Not loaded yet is not missing: mount(2) loads the module on first use.
        "loadable": available or os.path.exists("/sys/module/overlay") or _module_file_exists("overlay"),
        "options": [name for name, since in OVERLAY_OPTIONS if release >= since],
        "parameters": parameters,
        "in_user_namespace": release >= (5, 11),
    }


def _module_file_exists(name: str) -> bool:
    base = "/lib/modules/%s" % os.uname().release
    modules = _read(os.path.join(base, "modules.dep")) or ""
    return ("/%s.ko" % name) in modules


def user_namespaces() -> t.Dict[str, t.Any]:
    limits = {}
    for kind in procscan.NAMESPACE_TYPES:
        value = _int("/proc/sys/user/max_%s_namespaces" % kind)
        if value is not None:
            limits[kind] = value
    unprivileged = _int("/proc/sys/kernel/unprivileged_userns_clone")
    return {
        "available": os.path.exists("/proc/self/ns/user"),
        "max_user_namespaces": limits.get("user"),
        "unprivileged_clone": None if unprivileged is None else unprivileged == 1,
        "namespace_limits": limits,
    }


def seccomp_facts() -> t.Dict[str, t.Any]:
    with open("/proc/self/status", encoding="utf-8") as handle:
        status = procfs.parse_status(handle.read())
    actions = (_read("/proc/sys/kernel/seccomp/actions_avail") or "").split()
    return {
        "available": "Seccomp" in status,
        "filter": "Seccomp_filters" in status or bool(actions),
        "actions": actions,
        "actions_logged": (_read("/proc/sys/kernel/seccomp/actions_logged") or "").split(),
        "notify": "user_notif" in actions,
        "arch": os.uname().machine,
    }


def _syscall_present(name: str, *args: t.Any) -> t.Optional[bool]:
    """Call ``name`` with arguments it must refuse: ENOSYS means missing.  None: number unknown here."""
    try:
        libc.syscall(name, *args)
    except OSError as exc:
        if exc.errno == errno.ENOSYS and "no syscall number" in str(exc):
            return None
        return exc.errno != errno.ENOSYS
    return True


def pidfd() -> t.Dict[str, t.Any]:
    try:
        fd = libc.pidfd_open(os.getpid())
    except OSError as exc:
        return {"available": False, "send_signal": False, "problem": exc.strerror}
    try:
        try:
            libc.pidfd_send_signal(fd, 0)
            send = True
        except OSError as exc:
            send = exc.errno != errno.ENOSYS
    finally:
        os.close(fd)
    return {"available": True, "send_signal": send}


def syscalls() -> t.Dict[str, t.Optional[bool]]:
    bad = ctypes.c_int(-1)
    return {
        "close_range": _syscall_present("close_range", ctypes.c_uint(5), ctypes.c_uint(1), ctypes.c_uint(0)),
        "mount_api": _syscall_present("fsopen", None, ctypes.c_uint(0xFFFFFFFF)),
        "mount_setattr": _syscall_present("mount_setattr", bad, None, ctypes.c_uint(0), None, ctypes.c_size_t(0)),
        "openat2": _openat2_present(),
    }


def _openat2_present() -> bool:
    try:
        libc.openat2(-1, "", 0, 0xFFFFFFFF)
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    return True


def probe() -> t.Dict[str, t.Any]:
    """The host's facts for containers; ``missing`` lists what kernelbox would use but cannot."""
    release = kernel_release()
    facts: t.Dict[str, t.Any] = {
        "kernel": {"release": os.uname().release, "version": "%d.%d" % release, "machine": os.uname().machine},
        "namespaces": namespaces(),
        "cgroup": cgroups(),
        "overlay": overlay(release),
        "user_namespaces": user_namespaces(),
        "seccomp": seccomp_facts(),
        "pidfd": pidfd(),
        "time_namespace": os.path.exists("/proc/self/ns/time"),
        "syscalls": syscalls(),
    }
    facts["missing"] = missing(facts)
    return facts


def missing(facts: t.Mapping[str, t.Any]) -> t.List[str]:
    """Names of what is absent, e.g. 'namespace:time', 'cgroup:v2', 'cgroup-controller:memory'."""
    found = ["namespace:%s" % kind for kind, present in sorted(facts["namespaces"].items()) if not present]
    group = facts["cgroup"]
    if group.get("mode") == "none":
        found.append("cgroup:v2")
    else:
        for controller in ("cpu", "io", "memory", "pids"):
            if controller not in group.get("controllers", []):
                found.append("cgroup-controller:%s" % controller)
        for key in ("kill", "freeze", "pressure"):
            if not group.get(key):
                found.append("cgroup:%s" % key)
    if not facts["overlay"]["loadable"]:
        found.append("overlay")
    users = facts["user_namespaces"]
    if not users["available"] or users.get("max_user_namespaces") == 0:
        found.append("user-namespaces")
    if not facts["seccomp"]["filter"]:
        found.append("seccomp")
    if not facts["pidfd"]["available"]:
        found.append("pidfd")
    for name, present in sorted(facts["syscalls"].items()):
        if present is False:
            found.append("syscall:%s" % name)
    return found
