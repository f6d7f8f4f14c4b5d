# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the last steps before a container process execs.

Shared by the launcher (a new container's PID 1) and by ``container_exec``
(a process that joins a running container with setns): both must end up with
the same credentials, capabilities, no_new_privs and seccomp filter.

``prepare(process, seccomp_profile)`` runs in the parent and does every piece
of work that can be done before fork (capability masks, the compiled seccomp
program, argv/env, PATH candidates).  In the child, ``confine(prepared)``
applies rlimits, umask, credentials and capabilities, no_new_privs and the
seccomp filter in the right order, and ``execute(prepared, fds, status_fd)``
lays out the fds, closes every other one and execs.  Both raise
``StepFailure`` naming the step; they never return on success (execute).
"""

from __future__ import annotations

import copy
import errno
import fcntl
import os
import resource
import signal
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities as caps
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp_lib
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import StepFailure, _fail
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import Process

DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SIGNALS = tuple(sig for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP))


@dataclass
class Prepared:
    """A process's confinement and command, ready to apply in a forked child."""

    credentials: caps.Credentials
    rlimits: t.List[t.Tuple[int, int, int]]
    umask: t.Optional[int]
    no_new_privileges: bool
    seccomp_program: t.Optional[bytes]
    seccomp_flags: int
    argv: t.List[bytes]
    env: t.Dict[bytes, bytes]
    candidates: t.List[bytes] = field(default_factory=list)


# id(profile) -> (a private copy of the profile as compiled, the program).  A hit needs the
# profile to still be equal to that copy, so changing a profile in place recompiles it.
_PROGRAM_CACHE: t.Dict[int, t.Tuple["seccomp_lib.Profile", bytes]] = {}


def compile_seccomp(profile: "seccomp_lib.Profile") -> bytes:
    """The BPF program for ``profile``; compiling (about a millisecond) happens once per profile."""
    cached = _PROGRAM_CACHE.get(id(profile))
    if cached is not None and cached[0] == profile:
        return cached[1]
    program = seccomp_lib.compile_profile(profile)
    if len(_PROGRAM_CACHE) > 32:
        _PROGRAM_CACHE.clear()
    _PROGRAM_CACHE[id(profile)] = (copy.deepcopy(profile), program)
    return program


def prepare(process: "Process", seccomp_profile: t.Optional["seccomp_lib.Profile"]) -> Prepared:
    """Everything the child needs, computed in the parent.  Raises ValidationError or StepFailure."""
    creds = caps.prepare_credentials(process.user.uid, process.user.gid, process.user.additional_gids,
                                     process.capabilities)
    rlimits = []
    for limit in process.rlimits:
        number = getattr(resource, limit.type, None)
        if number is None:
            raise StepFailure("rlimits", 22, "%s is not supported by this Python/kernel" % limit.type)
        rlimits.append((number, _rlim(limit.soft), _rlim(limit.hard)))
    env: t.Dict[bytes, bytes] = {}
    for entry in process.env:
        name, _sep, value = entry.partition("=")
        env[os.fsencode(name)] = os.fsencode(value)
    argv = [os.fsencode(arg) for arg in process.args]
    program = None
    flags = 0
    if seccomp_profile is not None:
        program = compile_seccomp(seccomp_profile)
        flags = seccomp_profile.install_flags()
    return Prepared(credentials=creds, rlimits=rlimits, umask=process.user.umask,
                    no_new_privileges=process.no_new_privileges, seccomp_program=program, seccomp_flags=flags,
                    argv=argv, env=env, candidates=_candidates(argv[0], env))


def _rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value >= (1 << 64) - 1 else value


def _candidates(command: bytes, env: t.Dict[bytes, bytes]) -> t.List[bytes]:
    """execvp's search order, with the container's PATH (resolved inside the container at exec)."""
    if b"/" in command:
        return [command]
    search = env.get(b"PATH", os.fsencode(DEFAULT_SEARCH_PATH))
    return [os.path.join(entry or b".", command) for entry in search.split(b":")]


def confine(prepared: Prepared, progress: t.Optional[t.Callable[[str], None]] = None) -> None:
    """rlimits, umask, credentials and capabilities, no_new_privs, seccomp: in the child.

    With no_new_privs the filter goes last, so it only has to allow the
    syscalls exec needs.  Without it, installing a filter needs CAP_SYS_ADMIN,
    so the filter goes in before the capabilities are dropped (as runc does).
    ``progress('seccomp')`` is called just before the filter goes in: a
    profile that kills the process leaves no other trace of where it died.
    """
    for number, soft, hard in prepared.rlimits:
        try:
            resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError) as exc:
            raise StepFailure("rlimits", getattr(exc, "errno", None) or 1,
                              "setrlimit(%d, %d, %d): %s (raising a hard limit needs CAP_SYS_RESOURCE in "
                              "the host's user namespace)" % (number, soft, hard, exc))
    if prepared.umask is not None:
        os.umask(prepared.umask)
    if not prepared.no_new_privileges:
        _install_seccomp(prepared, progress)
    try:
        caps.apply_credentials(prepared.credentials)
    except OSError as exc:
        creds = prepared.credentials
        ids = "uid %d gid %d%s" % (creds.uid, creds.gid, " groups %s" % creds.groups if creds.groups else "")
        if exc.errno == errno.EINVAL:  # setgroups/setresgid/setresuid with an id the user namespace does not map
            raise StepFailure("capabilities", exc.errno, "%s: one of these ids is outside the user namespace's id "
                                                         "map" % ids)
        raise _fail("capabilities", exc, ids)
    if prepared.no_new_privileges:
        try:
            libc.set_no_new_privs()
        except OSError as exc:
            raise _fail("no_new_privs", exc, "prctl(PR_SET_NO_NEW_PRIVS)")
        _install_seccomp(prepared, progress)


def _install_seccomp(prepared: Prepared, progress: t.Optional[t.Callable[[str], None]]) -> None:
    if prepared.seccomp_program is None:
        return
    if progress is not None:
        progress("seccomp")
    try:
        seccomp_lib.install(prepared.seccomp_program, prepared.seccomp_flags)
    except OSError as exc:
        raise _fail("seccomp", exc, "install filter")


def execute(prepared: Prepared, fds: t.Sequence[int], status_fd: int, ready: bytes = b"") -> t.NoReturn:
    """Make ``fds`` the process's 0, 1, 2, 3..., close every other fd, reset signals, execve.

    ``status_fd`` (close-on-exec) stays open so an exec failure can still be
    reported; ``ready`` is written to it just before the first execve, so
    EOF after ``ready`` means the exec happened.  Raises StepFailure('exec')
    whose ``status_fd`` attribute is where ``status_fd`` now lives.
    """
    count = len(fds)
    try:
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, count) for fd in fds]
        status = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, count)
        for target, fd in enumerate(moved):
            os.dup2(fd, target, inheritable=True)
        libc.close_fds_above(count, keep=(status,))
    except OSError as exc:
        raise _fail("fds", exc, "arrange fds 0..%d" % (count - 1))
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in _SIGNALS:
        try:
            if signal.getsignal(sig) is not signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    libc.prctl(libc.PR_SET_PDEATHSIG, 0)
    if ready:
        os.write(status, ready)
    first_error: t.Optional[OSError] = None
    for path in prepared.candidates:
        try:
            os.execve(path, prepared.argv, prepared.env)
        except OSError as exc:
            if first_error is None or (first_error.errno in (2, 20) and exc.errno not in (2, 20)):
                first_error = exc
    if first_error is None:  # no candidate at all (an empty PATH entry list)
        first_error = OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    failure = _fail("exec", first_error, os.fsdecode(prepared.argv[0]))
    failure.status_fd = status  # the caller's status_fd number was closed above
    raise failure
