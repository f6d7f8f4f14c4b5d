# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: AppArmor and SELinux labels for a container's process.

``check(spec)`` runs before anything is made: a label the host cannot apply
(no such LSM, or an AppArmor profile that is not loaded) is refused naming the
field, never ignored, because running without it would leave the container
less confined than asked.  ``ExecLabels.apply()`` runs in the container's init
(or an exec'd process) before execve: it writes the label for the next exec to
``/proc/thread-self/attr/...``, opened through the host's procfs while the
process still sees it (before pivot_root) and checked to be procfs.
"""

from __future__ import annotations

import errno
import os
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
APPARMOR_PROFILES = "/sys/kernel/security/apparmor/profiles"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"


def apparmor_enabled() -> bool:
    try:
        with open(APPARMOR_ENABLED, encoding="ascii") as handle:
            return handle.read().strip() == "Y" and os.path.exists(APPARMOR_PROFILES)
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists(SELINUX_ENFORCE)


def loaded_apparmor_profiles() -> t.Set[str]:
    """Names of the loaded profiles ('docker-default (enforce)' -> 'docker-default')."""
    try:
        with open(APPARMOR_PROFILES, encoding="utf-8", errors="replace") as handle:
            return {line.rsplit(" (", 1)[0] for line in handle if line.strip()}
    except OSError:
        return set()


def check(spec: t.Any) -> None:
    """Refuse, naming the field, every label this host cannot apply."""
    profile = spec.process.apparmor_profile
    if profile:
        if not apparmor_enabled():
            raise ValidationError("process.apparmorProfile: %r cannot be applied: this host has no AppArmor (%s is "
                                  "not Y, or securityfs is not mounted); remove it or run on an AppArmor host"
                                  % (profile, APPARMOR_ENABLED))
        if profile != "unconfined" and profile not in loaded_apparmor_profiles():
            raise ValidationError("process.apparmorProfile: %r is not a loaded AppArmor profile (load it with "
                                  "apparmor_parser first)" % profile)
    labels = ((spec.process.selinux_label, "process.selinuxLabel"), (spec.linux.mount_label, "linux.mountLabel"))
    for value, key in labels:
        if value and not selinux_enabled():
            raise ValidationError("%s: %r cannot be applied: this host has no SELinux (%s is missing); remove it "
                                  "or run on an SELinux host" % (key, value, SELINUX_ENFORCE))


@dataclass
class ExecLabels:
    """What to write before execve: (attr file below /proc/thread-self/attr, content)."""

    writes: t.List[t.Tuple[str, bytes]]

    @classmethod
    def of(cls, process: t.Any) -> "ExecLabels":
        writes = []
        if process.apparmor_profile:
            writes.append(("apparmor/exec", b"exec " + process.apparmor_profile.encode()))
        if process.selinux_label:
            writes.append(("exec", process.selinux_label.encode()))
        return cls(writes)

    def apply(self) -> None:
        """In the process that will exec; raises OSError naming the attribute."""
        for name, data in self.writes:
            path = "/proc/thread-self/attr/" + name
            if name == "apparmor/exec" and not os.path.exists(path):
                path = "/proc/thread-self/attr/exec"  # kernels before 5.8 have one attr/exec
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if libc.fstatfs_type(fd) != libc.PROC_SUPER_MAGIC:
                    raise OSError(errno.EXDEV, "not on procfs", path)
                os.write(fd, data)
            finally:
                os.close(fd)
