# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a process's confinement, prepared in the parent, applied in the child.

Confinement is what a container process runs under besides its namespaces:
uid/gid/groups, the five capability sets, no_new_privs, the seccomp program,
rlimits and umask.  ``prepare()`` computes all of it from a spec's
``process`` and ``linux.seccomp`` in the parent (a bad profile fails before
anything is forked), and ``apply()`` does the syscalls in the child, in the
one order that works:

1. rlimits and umask (lowering needs no privilege; raising a hard limit needs
   CAP_SYS_RESOURCE, still held);
2. seccomp *first* when no_new_privs is off: installing a filter without
   no_new_privs needs CAP_SYS_ADMIN, which step 3 drops (runc does the same);
3. uid/gid/groups and capabilities (``capabilities.apply_credentials``);
4. no_new_privs;
5. seccomp when no_new_privs is on (it needs no privilege then).

Shared by everything that starts a process in a container: ``container_exec``
(``execution.py``) uses it, and the launcher can too.  Nothing here is
exec-specific: ``restrict()`` is how exec makes sure it never runs with more
than the container's init has.
"""

from __future__ import annotations

import copy
import os
import resource
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import capabilities, seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc


class ConfineFailure(OSError):
    """One step of ``apply`` failed; ``step`` names it for the user."""

    def __init__(self, step: str, err: int, detail: str) -> None:
        super().__init__(err, "%s: %s" % (step, detail))
        self.step = step


@dataclass
class Confinement:
    credentials: capabilities.Credentials
    no_new_privs: bool
    seccomp_program: t.Optional[bytes] = None
    seccomp_flags: int = 0
    rlimits: t.List[t.Tuple[int, int, int]] = field(default_factory=list)  # (RLIMIT_*, soft, hard)
    umask: t.Optional[int] = None

    def summary(self) -> t.Dict[str, t.Any]:
        """What the process gets, in words (for results and errors)."""
        creds = self.credentials
        bounding = [cap for cap in range(capabilities.last_cap() + 1) if cap not in creds.drop_bounding]
        return {
            "uid": creds.uid, "gid": creds.gid, "groups": list(creds.groups or []),
            "capabilities": {
                "bounding": capabilities.names_of(sum(1 << cap for cap in bounding)),
                "effective": capabilities.names_of(creds.effective),
                "permitted": capabilities.names_of(creds.permitted),
                "inheritable": capabilities.names_of(creds.inheritable),
                "ambient": capabilities.names_of(sum(1 << cap for cap in creds.ambient)),
            },
            "no_new_privileges": self.no_new_privs,
            "seccomp": self.seccomp_program is not None,
        }


def _rlimit_number(name: str) -> int:
    return int(getattr(resource, name))


def prepare(process: t.Any, seccomp_profile: t.Optional[t.Mapping[str, t.Any]],
            uid: t.Optional[int] = None, gid: t.Optional[int] = None,
            groups: t.Optional[t.Sequence[int]] = None) -> Confinement:
    """From a validated ``spec.process`` and ``spec.linux.seccomp``; ``uid``/``gid``/``groups`` override the spec's.

    Raises ValidationError for a profile or capability this kernel cannot apply.
    """
    user = process.user
    creds = capabilities.prepare_credentials(
        user.uid if uid is None else uid, user.gid if gid is None else gid,
        list(user.additional_gids if groups is None else groups), process.capabilities)
    program, flags = None, 0
    if seccomp_profile is not None:
        profile = seccomp.from_oci(copy.deepcopy(dict(seccomp_profile)))
        program, flags = seccomp.program_for(profile, process.capabilities.bounding)
    return Confinement(
        credentials=creds, no_new_privs=bool(process.no_new_privileges),
        seccomp_program=program, seccomp_flags=flags,
        rlimits=[(_rlimit_number(limit.type), limit.soft, limit.hard) for limit in process.rlimits],
        umask=user.umask)


def restrict(confinement: Confinement, bounding: int, no_new_privs: bool) -> Confinement:
    """Never more than a reference process has: intersect every set with its ``bounding`` mask
    (CapBnd of /proc/PID/status) and keep no_new_privs on if it has it."""
    creds = copy.deepcopy(confinement.credentials)
    top = capabilities.last_cap()
    creds.drop_bounding = sorted(set(creds.drop_bounding) | {cap for cap in range(top + 1)
                                                              if not bounding & (1 << cap)})
    creds.effective &= bounding
    creds.permitted &= bounding
    creds.inheritable &= bounding
    creds.ambient = [cap for cap in creds.ambient if bounding & (1 << cap)]
    result = copy.copy(confinement)
    result.credentials = creds
    result.no_new_privs = confinement.no_new_privs or no_new_privs
    return result


def from_masks(uid: int, gid: int, groups: t.Sequence[int], bounding: int, effective: int, permitted: int,
               inheritable: int, ambient: int, no_new_privs: bool) -> Confinement:
    """A confinement copied from another process's status (exec by PID): same ids, sets and no_new_privs."""
    top = capabilities.last_cap()
    creds = capabilities.Credentials(
        uid=uid, gid=gid, groups=list(groups),
        drop_bounding=[cap for cap in range(top + 1) if not bounding & (1 << cap)],
        effective=effective & permitted & bounding, permitted=permitted & bounding,
        inheritable=inheritable & bounding,
        ambient=[cap for cap in range(top + 1) if ambient & (1 << cap) and permitted & inheritable & (1 << cap)])
    return Confinement(credentials=creds, no_new_privs=no_new_privs)


def apply(confinement: Confinement) -> None:
    """In the child, right before execve; raises ConfineFailure naming the step."""
    step = "rlimits"
    try:
        for number, soft, hard in confinement.rlimits:
            resource.setrlimit(number, (_rlim(soft), _rlim(hard)))
        if confinement.umask is not None:
            os.umask(confinement.umask)
        if confinement.seccomp_program is not None and not confinement.no_new_privs:
            step = "seccomp"
            seccomp.install(confinement.seccomp_program, confinement.seccomp_flags)
        step = "credentials"
        capabilities.apply_credentials(confinement.credentials)
        if confinement.no_new_privs:
            step = "no_new_privs"
            libc.set_no_new_privs()
        if confinement.seccomp_program is not None and confinement.no_new_privs:
            step = "seccomp"
            seccomp.install(confinement.seccomp_program, confinement.seccomp_flags)
    except (OSError, ValueError) as exc:
        err = getattr(exc, "errno", None) or 0
        raise ConfineFailure(step, err, getattr(exc, "strerror", None) or str(exc))


def _rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value >= (1 << 64) - 1 else value
