# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what runs in the launcher's children, before exec.

launch.py (the caller's side) builds a ``Plan`` and forks or clones; the
functions here run in the setup process (two-process path) and in the
container's init.  They only make syscalls and report on the status pipe:
``E<step><US><errno><US><detail>`` for a failure, ``U`` (user namespace
made), ``P <pid>`` (init forked), ``T<step>`` (about to do something that
may kill the process), ``X <type>=<inode>...`` (about to exec).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import select
import signal
import socket
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import fd_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import console
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import hooks as hook_runner
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import lsm
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import protect
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import StepFailure
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, netdev

# OCI namespace type -> (clone flag, name under /proc/PID/ns)
NAMESPACES = {
    "user": (libc.CLONE_NEWUSER, "user"),
    "pid": (libc.CLONE_NEWPID, "pid"),
    "network": (libc.CLONE_NEWNET, "net"),
    "ipc": (libc.CLONE_NEWIPC, "ipc"),
    "uts": (libc.CLONE_NEWUTS, "uts"),
    "mount": (libc.CLONE_NEWNS, "mnt"),
    "cgroup": (libc.CLONE_NEWCGROUP, "cgroup"),
    "time": (libc.CLONE_NEWTIME, "time"),
}
SEP = "\x1f"
INIT_NAME = "kernelbox-init"  # /proc/PID/comm until exec replaces it: how the caller tells a death in exec


@dataclass
class Plan:
    joins: t.List[t.Tuple[int, int, str]] = field(default_factory=list)  # (fd, flag, what), user first
    new_userns: bool = False
    any_userns: bool = False
    own_sysfs: bool = False  # make sysfs in the setup process (userns without its own netns)
    unshare_flags: int = 0
    uid_map: bytes = b""
    gid_map: bytes = b""
    deny_setgroups: bool = False
    timens_offsets: t.Optional[bytes] = None
    oom_score_adj: t.Optional[bytes] = None
    cgroup_procs: t.Optional[int] = None  # the cgroup's cgroup.procs, opened for writing
    cgroup_dir: t.Optional[int] = None    # the cgroup's directory, for clone3's CLONE_INTO_CGROUP
    rootfs: t.Optional[rootfs.RootfsPlan] = None
    hostname: t.Optional[str] = None
    domainname: t.Optional[str] = None
    cwd: str = "/"
    prepared: t.Optional[confine.Prepared] = None
    stdio: t.List[int] = field(default_factory=list)
    opened: t.List[int] = field(default_factory=list)
    exec_labels: t.Optional[lsm.ExecLabels] = None
    # OCI create stages (see the module docstring); all off for container_process.
    console_socket: t.Optional[int] = None
    console_size: t.Optional[t.Tuple[int, int]] = None
    pause_before_pivot: bool = False
    hook_state: bytes = b""  # the state JSON for hooks run by init; its pid is filled in there
    create_hooks: t.List[hook_runner.HookCall] = field(default_factory=list)
    start_hooks: t.List[hook_runner.HookCall] = field(default_factory=list)
    start_gate: t.Optional[int] = None

    def close(self) -> None:
        if self.rootfs is not None:
            self.rootfs.close()
        for fd in self.opened:
            try:
                os.close(fd)
            except OSError:
                pass
        self.opened = []


def report(fd: int, step: str, err: int, detail: str) -> None:
    text = "E%s%s%d%s%s\n" % (step, SEP, err, SEP, detail.replace("\n", " "))
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        pass


def child_main(status_fd: int, body: t.Callable[[], None]) -> t.NoReturn:
    """Run ``body`` in a forked child; report any failure on the status pipe; never return."""
    gc.disable()  # no collector passes touching (and copying) the parent's pages
    step = "setup"
    try:
        body()
    except StepFailure as exc:
        report(exc.status_fd if exc.status_fd is not None else status_fd, exc.step, exc.errno, exc.detail)
    except OSError as exc:
        report(status_fd, step, exc.errno or 0, str(exc))
    except BaseException as exc:  # the child must never unwind into the caller's code
        report(status_fd, step, 0, "%s: %s" % (type(exc).__name__, exc))
    os._exit(1)


def _step(step: str, func: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
    try:
        return func(*args)
    except OSError as exc:
        raise StepFailure(step, exc.errno or 0, str(exc.strerror or exc) if not exc.filename
                          else "%s (%s)" % (exc.strerror, exc.filename))


def setup_process(plan: Plan, parent: int, from_parent: int, status_fd: int) -> t.NoReturn:
    def body() -> None:
        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the caller died before we set the death signal
        # Nothing else running as the container's ids may ptrace or open /proc files of the
        # setup (CVE-2016-9962); exec makes the command dumpable again as usual.
        libc.set_dumpable(False)
        # The cwd follows into the new mount namespace: init attaches the rootfs clone here.
        _step("rootfs", os.fchdir, _root_dir(plan))
        timens_fd = None
        if plan.timens_offsets:
            # Opened while still host root: once the ids switch, /proc/self is not ours to open.
            timens_fd = _step("time offsets", os.open, "/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)
        for fd, flag, what in plan.joins:
            try:
                libc.setns(fd, flag)
            except OSError as exc:
                raise StepFailure("join namespaces", exc.errno or 0, "setns %s: %s" % (what, exc.strerror))
        if plan.own_sysfs:
            rootfs.make_sysfs(plan.rootfs)
        if plan.new_userns:
            _step("user namespace", libc.unshare, libc.CLONE_NEWUSER)
        os.write(status_fd, b"U\n")
        if os.read(from_parent, 1) != b"G":
            os._exit(1)  # the caller gave up
        _enter_remaining_namespaces(plan, plan.unshare_flags)
        if timens_fd is not None:
            # Before the first process enters the new time namespace: B, forked next.
            _step("time offsets", os.write, timens_fd, plan.timens_offsets)
            os.close(timens_fd)
        pid = _step("fork", os.fork)
        if pid == 0:
            child_main(status_fd, lambda: _init_process(plan, from_parent, status_fd))
        os.write(status_fd, b"P %d\n" % pid)
        os._exit(0)

    child_main(status_fd, body)


def direct_init(plan: Plan, from_parent: int, status_fd: int) -> None:
    """The direct path: cloned already inside the new user and PID namespaces, as PID 1."""
    libc.set_pdeathsig(signal.SIGKILL)
    libc.set_dumpable(False)
    _step("rootfs", os.fchdir, _root_dir(plan))
    if os.read(from_parent, 1) != b"G":
        os._exit(1)  # the caller died or gave up
    _enter_remaining_namespaces(plan, plan.unshare_flags & ~libc.CLONE_NEWPID)
    _init_process(plan, from_parent, status_fd)


def _enter_remaining_namespaces(plan: Plan, flags: int) -> None:
    """Root inside the user namespace (the maps exist now), then every namespace left to make."""
    if plan.any_userns:
        _step("user namespace", os.setresgid, 0, 0, 0)
        _step("user namespace", os.setresuid, 0, 0, 0)
    if flags:
        _step("namespaces", libc.unshare, flags)
    if flags & libc.CLONE_NEWNET:
        # A new network namespace has only lo, and it is down: runc brings it up, so 127.0.0.1 works.
        _step("loopback", netdev.link_up, "lo")
    if flags & libc.CLONE_NEWNS:
        # First, before any mount: nothing made in here may propagate to the host.
        _step("mounts", libc.mount, None, "/", None, libc.MS_REC | libc.MS_SLAVE)


def _root_dir(plan: Plan) -> int:
    if plan.rootfs is None or plan.rootfs.root_dir is None:
        raise StepFailure("rootfs", errno.EBADF, "internal error: the rootfs was not captured")
    return plan.rootfs.root_dir


def _init_process(plan: Plan, from_parent: int, status_fd: int) -> None:
    if plan.rootfs is None or plan.prepared is None:
        raise StepFailure("setup", errno.EINVAL, "internal error: the launch plan is incomplete")
    libc.set_process_name(INIT_NAME)
    # Through the host's /proc, while it is still there (the container may mount none).
    namespaces = " ".join("%s=%d" % (kind, os.stat("/proc/self/ns/" + name).st_ino)
                          for kind, (_flag, name) in NAMESPACES.items())
    root_fd = rootfs.setup_before_pivot(plan.rootfs)
    if plan.pause_before_pivot:
        os.write(status_fd, b"H\n")
        if os.read(from_parent, 1) != b"h":
            os._exit(1)  # the caller's hooks failed, or it died
    _run_hooks("createContainer", plan.create_hooks, plan.hook_state, "creating")
    if plan.exec_labels is not None:  # through the host's procfs, still visible here
        _step("labels", plan.exec_labels.apply)
    stdio = plan.stdio
    terminal = _terminal(plan, root_fd) if plan.console_socket is not None else None
    if terminal is not None:
        stdio = [terminal, terminal, terminal] + plan.stdio[3:]
    rootfs.pivot(root_fd)
    protect.write_sysctls(plan.rootfs.sysctl)
    protect.mask_and_protect(plan.rootfs)
    if plan.hostname is not None:
        _step("hostname", libc.sethostname, plan.hostname)
    if plan.domainname is not None:
        _step("domainname", libc.setdomainname, plan.domainname)
    protect.enter_cwd(plan.cwd)
    if terminal is not None:
        _step("terminal", console.make_controlling, terminal)
    confine.confine(plan.prepared, lambda step: os.write(status_fd, ("T%s\n" % step).encode()))
    if select.select([from_parent], [], [], 0)[0]:
        os._exit(1)  # the caller died (EOF) or gave up: never exec an orphan
    if plan.start_gate is not None:
        status_fd = _wait_at_gate(plan, status_fd, namespaces)
    else:
        _run_hooks("startContainer", plan.start_hooks, plan.hook_state, "created")
    confine.execute(plan.prepared, stdio, status_fd, ready=("X %s\n" % namespaces).encode())


def _run_hooks(name: str, calls: t.List[hook_runner.HookCall], state: bytes, status: str) -> None:
    """Hooks init runs itself, in the container's namespaces: the state's pid is init's own (1)."""
    if not calls:
        return
    data = json.loads(state.decode())
    data.update(status=status, pid=os.getpid())
    try:
        hook_runner.run(name, calls, json.dumps(data).encode())
    except hook_runner.HookError as exc:
        raise StepFailure("%s hooks" % name, errno.ECANCELED, str(exc))
    except OSError as exc:
        raise StepFailure("%s hooks" % name, exc.errno or 0, str(exc))


def _terminal(plan: Plan, root_fd: int) -> int:
    """The pty: made in the container's devpts, master sent to the console socket, slave on /dev/console."""
    try:
        pts = rootfs.resolve(root_fd, "/dev/pts", strict=True)
        try:
            master, slave, name = console.open_pair(fd_path(pts) + "/ptmx")
        finally:
            os.close(pts)
        if plan.console_size is not None:
            console.set_size(master, *plan.console_size)
        rootfs.bind_console(root_fd, slave)
        console.send_master(plan.console_socket or -1, master, name)
        os.close(master)
    except OSError as exc:
        raise StepFailure("terminal", exc.errno or 0, str(exc.strerror or exc))
    return slave


def _wait_at_gate(plan: Plan, status_fd: int, namespaces: str) -> int:
    """Created: report, wait for ``start``, run the startContainer hooks; returns the fd exec reports to.

    Everything this process holds of the caller's is let go first: the caller
    (an OCI ``create``) exits now, and init lives on without it.
    """
    _step("exec", _check_command, plan.prepared)
    libc.prctl(libc.PR_SET_PDEATHSIG, 0)
    os.write(status_fd, ("C %s\n" % namespaces).encode())
    with socket.socket(fileno=plan.start_gate if plan.start_gate is not None else -1) as listener:
        while True:
            try:
                connection, _addr = listener.accept()  # close-on-exec: ``start`` sees EOF once we exec
            except OSError as exc:
                raise StepFailure("start", exc.errno or 0, "start gate: %s" % exc.strerror)
            if connection.recv(1) == b"S":
                break
            connection.close()  # not a start request: keep waiting
    reply = connection.detach()
    try:
        _run_hooks("startContainer", plan.start_hooks, plan.hook_state, "created")
    except StepFailure as exc:
        exc.status_fd = reply
        raise
    return reply


def _check_command(prepared: confine.Prepared) -> None:
    """The command must exist and be executable now (as the container's user): an error of create, not start."""
    for candidate in prepared.candidates:
        if os.access(candidate, os.X_OK):
            return
    raise OSError(errno.ENOENT, "%s: no such executable in the container" % os.fsdecode(prepared.argv[0]))
