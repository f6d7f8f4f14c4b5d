# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: does systemd let us manage a cgroup subtree?

On a systemd host, cgroup v2 has a single writer per subtree
(systemd.io/CGROUP_DELEGATION): systemd owns the whole tree except the
cgroups of units with ``Delegate=yes``, whose inside belongs to the unit's
own manager.  Outside a delegated unit, systemd may rewrite
cgroup.subtree_control (dropping controllers our groups need) or act on
processes it believes are its own.

Detection, most trustworthy first:

1. Is systemd the init system?  sd_booted(): /run/systemd/system is a directory.
2. Which unit owns the parent?  The deepest path component ending in
   ``.service`` or ``.scope`` (slices cannot be delegated).  None means the
   parent sits directly under the root or under slices only.
3. Is that unit delegated?  systemd >= 251 marks the cgroup of a delegated unit
   with the extended attribute ``trusted.delegate=1`` (``user.delegate`` for
   user managers); its presence is proof.  Its absence is proof only on those
   versions, so older hosts are asked ``systemctl show -p Delegate --value UNIT``
   through a caller-supplied query (the module runs it with run_command).

Reading a unit file is not used: drop-ins, transient units and templates
make it unreliable, while the xattr and systemctl report the live unit.
"""

from __future__ import annotations

import errno
import os
import typing as t
from dataclasses import dataclass

SYSTEMD_RUN_DIR = "/run/systemd/system"
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
_UNIT_SUFFIXES = (".service", ".scope")


@dataclass
class Delegation:
    systemd: bool
    unit: t.Optional[str] = None  # e.g. "kernelbox.service"
    unit_cgroup: t.Optional[str] = None  # its cgroup path relative to the mount root
    delegated: t.Optional[bool] = None  # None: not under a unit, or could not tell
    evidence: str = ""


def systemd_booted(run_dir: str = SYSTEMD_RUN_DIR) -> bool:
    return os.path.isdir(run_dir)


def owning_unit(parts: t.Sequence[str]) -> t.Optional[int]:
    """Index of the deepest component that is a service or scope unit, or None."""
    for index in range(len(parts) - 1, -1, -1):
        if parts[index].endswith(_UNIT_SUFFIXES):
            return index
    return None


def delegate_xattr(path: str) -> t.Optional[bool]:
    """True/False from the delegate xattrs of a cgroup directory; None when xattrs cannot be read."""
    for name in DELEGATE_XATTRS:
        try:
            value = os.getxattr(path, name)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, getattr(errno, "ENOATTR", errno.ENODATA)):
                continue
            if exc.errno in (errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                return None
            raise
        return value.strip() in (b"1", b"yes", b"true")
    return False


def check(mount: str, parent_parts: t.Sequence[str], query: t.Optional[t.Callable[[str], t.Optional[str]]] = None,
          run_dir: str = SYSTEMD_RUN_DIR) -> Delegation:
    """How systemd relates to the parent at ``mount``/``parent_parts``.

    ``query(unit)`` returns systemctl's Delegate value ('yes'/'no') or None.
    """
    if not systemd_booted(run_dir):
        return Delegation(systemd=False, evidence="systemd is not the init system (%s is missing)" % run_dir)
    index = owning_unit(parent_parts)
    if index is None:
        return Delegation(systemd=True, evidence="the parent is not inside a service or scope unit")
    unit = parent_parts[index]
    unit_cgroup = "/".join(parent_parts[:index + 1])
    unit_path = os.path.join(mount, unit_cgroup)
    marked = delegate_xattr(unit_path) if os.path.isdir(unit_path) else None
    if marked:
        return Delegation(True, unit, unit_cgroup, True, "trusted.delegate=1 on %s" % unit_path)
    answer = query(unit) if query else None
    if answer is not None and answer.strip().lower() in ("yes", "true", "1"):
        return Delegation(True, unit, unit_cgroup, True, "systemctl show: Delegate=yes")
    if answer is not None and answer.strip():
        return Delegation(True, unit, unit_cgroup, False,
                          "systemctl show: Delegate=%s, and no delegate xattr on %s" % (answer.strip(), unit_path))
    if marked is False:
        return Delegation(True, unit, unit_cgroup, None,
                          "no trusted.delegate xattr on %s (systemd >= 251 sets it on delegated units) and "
                          "systemctl could not confirm" % unit_path)
    return Delegation(True, unit, unit_cgroup, None, "could not read the delegate xattr of %s" % unit_path)


def warning(delegation: Delegation, parent: str) -> t.Optional[str]:
    """The warning text for a parent systemd does not delegate to us; None when all is well."""
    if not delegation.systemd or delegation.delegated:
        return None
    fix = ("Run the groups inside a unit with Delegate=yes (a service with '[Service] Delegate=yes', or "
           "'systemd-run --scope -p Delegate=yes ...') and set parent to a path inside that unit's cgroup, "
           "for example system.slice/kernelbox.service/containers")
    if delegation.unit is None:
        return ("parent /%s is not inside a systemd unit with Delegate=yes. On systemd hosts systemd owns the "
                "cgroup tree outside delegated units (systemd.io/CGROUP_DELEGATION) and may rewrite "
                "cgroup.subtree_control, removing controllers these groups need. %s." % (parent, fix))
    if delegation.delegated is False:
        return ("parent /%s belongs to the systemd unit %s, which is not delegated (%s). systemd manages that "
                "subtree: it may rewrite its controllers or kill its processes when the unit stops. Add "
                "Delegate=yes to %s, or %s." % (parent, delegation.unit, delegation.evidence, delegation.unit,
                                                fix[0].lower() + fix[1:]))
    return ("parent /%s belongs to the systemd unit %s and delegation could not be confirmed (%s). Make sure %s "
            "has Delegate=yes." % (parent, delegation.unit, delegation.evidence, delegation.unit))
