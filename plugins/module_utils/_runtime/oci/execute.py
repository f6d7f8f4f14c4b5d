# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the OCI ``exec``, over the same joining code as container_exec.

The process is described by an OCI ``process`` object (``--process FILE``, as
conmon and containerd's shim pass it) or by the container's own process with
the command and flags given.  It is validated against the container's spec
(its user must be mapped), confined by exactly the launcher's code with the
container's seccomp profile, and never given more than the container's init
holds: every capability set is intersected with the init's bounding set, and
no_new_privs stays on when the init has it (exec_request.restrict).

``--detach`` leaves the process to the caller's subreaper (conmon) and returns
once it has exec'd, with its PID in ``--pid-file``; otherwise the runtime
waits for it and exits with its status.
"""

from __future__ import annotations

import json
import os
import signal
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import store as oci_store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import tty
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci.store import Store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine, console
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request, execution
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import lsm
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import StepFailure
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


@dataclass
class ExecOptions:
    args: t.List[str] = field(default_factory=list)
    process_file: t.Optional[str] = None
    detach: bool = False
    pid_file: t.Optional[str] = None
    console_socket: t.Optional[str] = None
    tty: bool = False
    cwd: t.Optional[str] = None
    env: t.List[str] = field(default_factory=list)
    user: t.Optional[str] = None
    additional_gids: t.List[int] = field(default_factory=list)
    caps: t.List[str] = field(default_factory=list)
    no_new_privs: bool = False
    preserve_fds: int = 0
    apparmor: t.Optional[str] = None
    process_label: t.Optional[str] = None


def _process(spec: specs.Spec, options: ExecOptions) -> specs.Process:
    """The process to run, validated as part of the container's spec (its ids must be mapped, ...)."""
    if options.process_file:
        try:
            with open(options.process_file, "rb") as handle:
                data = json.loads(handle.read(16 << 20).decode("utf-8"))
        except OSError as exc:
            raise KernelboxError("--process %s: %s" % (options.process_file, exc.strerror))
        except ValueError as exc:
            raise KernelboxError("--process %s: not valid JSON: %s" % (options.process_file, exc))
        try:
            process = specs._from(specs.Process, data, "process")  # pylint: disable=protected-access
        except ValidationError as exc:
            raise KernelboxError("--process %s: %s" % (options.process_file, exc))
    else:
        if not options.args:
            raise KernelboxError("exec needs a command (after the container id) or --process")
        process = spec.copy().process
        process.args = list(options.args)
        process.terminal = options.tty
        process.console_size = None
    _apply_flags(process, options)
    whole = spec.copy()
    whole.process = process
    try:
        whole.validate()
    except ValidationError as exc:
        raise KernelboxError("exec: %s" % exc)
    try:
        lsm.check(whole)
    except ValidationError as exc:
        raise KernelboxError("exec: %s" % exc)
    return whole.process


def _apply_flags(process: specs.Process, options: ExecOptions) -> None:
    process.env = list(process.env) + list(options.env)
    if options.cwd:
        process.cwd = options.cwd
    if options.user:
        uid_text, _sep, gid_text = options.user.partition(":")
        try:
            process.user.uid = int(uid_text)
            process.user.gid = int(gid_text) if gid_text else process.user.gid
        except ValueError:
            raise KernelboxError("--user %r: give UID[:GID] as numbers" % options.user)
    if options.additional_gids:
        process.user.additional_gids = list(options.additional_gids)
    for name in options.caps:
        for key in ("bounding", "effective", "permitted"):
            getattr(process.capabilities, key).append(name)
    if options.no_new_privs:
        process.no_new_privileges = True
    if options.apparmor:
        process.apparmor_profile = options.apparmor
    if options.process_label:
        process.selinux_label = options.process_label


def run(store: Store, container_id: str, options: ExecOptions) -> int:
    """The OCI exec; the exit status to leave with (0 when detached)."""
    record = store.load(container_id)
    current = oci_store.status(record)
    if current == oci_store.STOPPED:
        raise KernelboxError("cannot exec in a stopped container")
    if current == oci_store.PAUSED:
        raise KernelboxError("cannot exec in a paused container")
    spec = specs.from_oci(record.config)
    process = _process(spec, options)
    if process.terminal and options.detach and not options.console_socket:
        raise KernelboxError("cannot allocate a tty: --detach needs a --console-socket to receive it")
    if options.console_socket and not process.terminal:
        raise KernelboxError("cannot use --console-socket without a terminal (--tty or process.terminal)")
    extra = list(range(3, 3 + options.preserve_fds))
    try:
        target = execution.Target.open(record.pid, record.starttime)
    except execution.TargetGone:
        raise KernelboxError("cannot exec in a stopped container")
    opened: t.List[int] = []
    ours = None
    try:
        request = _request(spec, process, target, containers.group_of(record))
        console_fd = None
        if process.terminal:
            if options.console_socket:
                console_fd = console.connect(options.console_socket)
            else:
                ours, console_fd = tty.socket_pair()
            opened.append(console_fd)
        size = process.console_size
        labels = lsm.ExecLabels.of(process)
        detached = execution.Detached(console_socket=console_fd,
                                      console_size=(size.height, size.width) if size is not None else None,
                                      labels=labels if labels.writes else None)
        if not options.detach:
            libc.set_child_subreaper()  # the process comes back to us when the joiner exits
        stdio, null = _stdio()
        opened += null
        try:
            pid = execution.spawn(target, request, stdio + extra, detached)
        except execution.ExecError as exc:
            raise KernelboxError("exec failed: %s" % exc.msg)
    finally:
        target.close()
        for fd in opened:
            oci_store.close_quietly(fd)
    if options.pid_file:
        kbstate.write_bytes_atomic(os.path.abspath(options.pid_file), b"%d" % pid, mode=0o644)
    if options.detach:
        return 0
    if ours is not None:
        tty.relay_from(ours)
    return _wait(pid)


def _request(spec: specs.Spec, process: specs.Process, target: execution.Target,
             group: t.Any) -> execution.Request:
    try:
        prepared = confine.prepare(process, spec.linux.seccomp)
    except StepFailure as exc:
        raise KernelboxError("exec: %s" % exc)
    status = target.credentials()
    exec_request.restrict(prepared, status.cap_bounding, status.no_new_privs)
    if status.seccomp_mode != 0 and prepared.seccomp_program is None:
        raise KernelboxError("exec: the container's init runs under a seccomp filter its spec does not hold; "
                             "refusing to run a process unconfined")
    return execution.Request(argv=list(process.args), prepared=prepared, namespaces=list(execution.NAMESPACES),
                             cwd=process.cwd, cgroup=group if group is not None and group.exists() else None)


def _stdio() -> t.Tuple[t.List[int], t.List[int]]:
    fds, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            opened.append(null)
            fds.append(null)
    return fds, opened


def _wait(pid: int) -> int:
    """Wait for the exec'd process (re-parented to us), forwarding the usual signals."""
    def forward(signum: int, _frame: t.Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    while True:
        try:
            _pid, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
