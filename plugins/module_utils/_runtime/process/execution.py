# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: run a command inside a running process's namespaces (``nsenter -t PID -a``).

Nothing here creates a namespace.  ``Target.open(pid, starttime)`` pins the
process: a pidfd and a /proc/PID directory fd, opened first and then checked
against the start time, so every later read (``ns/*``, ``root``, ``status``)
goes through the directory fd and can never hit a recycled PID.
``run(target, request)`` then does::

    module process (M)
      fork -> joiner (J)                       invisible inside: it never enters the PID namespace
          PR_SET_DUMPABLE 0                    first of all (CVE-2019-5736, below)
          PR_SET_PDEATHSIG SIGKILL             it dies with M
          join the exec's cgroup               write 0 to <container cgroup>/kb-exec-*/cgroup.procs
          close every fd it does not need
          setns cgroup ipc uts net pid time mnt    as host root, who may enter all of them
          setns user                           last: entering it first would leave no privilege over
                                               namespaces the container shares with the host
          fork -> command (C)                  setns(pid) and setns(time) apply to children only
              setsid, default signal dispositions, empty signal mask
              chroot to the container's root   fchdir(/proc/PID/root opened in M) + chroot(".")
              chdir to cwd                     resolved inside the root (protect.enter_cwd)
              rlimits, umask, seccomp?, uid/gid/groups + capabilities, no_new_privs, seccomp?
              fds 0-2, close the rest, execve  (confine.confine and confine.execute: exactly what the
                                               launcher does for a container's PID 1)
          wait for C, report its wait status to M

**CVE-2019-5736.**  Until execve, J and C run the host's Python: /proc/<J or
C>/exe is the host interpreter, and a root process inside that could open it
(or ptrace J/C and write to it) would overwrite it.  Both are non-dumpable
from before they enter anything (dumpability survives fork; only execve
resets it), so the kernel refuses /proc/PID/exe, /proc/PID/fd, /proc/PID/mem
and ptrace to anyone without CAP_SYS_PTRACE in the *initial* user namespace.
A container with its own user namespace therefore cannot reach them even
with CAP_SYS_PTRACE; a container without one that was given CAP_SYS_PTRACE
is root on the host in every sense that matters, and can.  J additionally
never enters the container's PID namespace, so it is not even visible there.

**Cgroup and timeouts.**  The command runs in its own child group of the
container's cgroup (``kb-exec-<M pid>-<M start time>``), so it is charged to
the container and bound by its limits, and a timeout kills exactly its
processes (cgroup.kill) and never the container's.  When the command exits,
processes it left behind move up into the container's group and keep
running there, as with ``docker exec``; the child group is removed.  Groups
left by a killed module are removed by the next exec into that container.
Without a cgroup to use (exec by PID), a timeout kills the command's session
and process tree, deepest first.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import fcntl
import json
import os
import select
import selectors
import signal
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine, console, inroot
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import protect
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs, procscan
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

# Entered in this order as host root, then the user namespace (see the module docstring).
JOIN_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "time", "mnt")
NAMESPACES = ("user",) + JOIN_ORDER
EXEC_GROUP_PREFIX = "kb-exec-"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_CHUNK = 65536
DEFAULT_OUTPUT_LIMIT = 1 << 20  # per stream; what a module result can carry without costing the controller dear
_REPORT_LIMIT = 1 << 16         # the joiner's own status lines: a few hundred bytes
_KILL_WAIT = 10.0


class ExecError(KernelboxError):
    """The command could not be started: ``step`` and ``errno`` say where and why."""


class TargetGone(KernelboxError):
    """The process to join does not exist (any more)."""


# --- the target ---------------------------------------------------------------

class Target:
    """A running process, pinned by a pidfd and a /proc/PID directory fd."""

    def __init__(self, pid: int, starttime: int, pidfd: int, proc_fd: int) -> None:
        self.pid = pid
        self.starttime = starttime
        self.pidfd = pidfd
        self.proc_fd = proc_fd

    @classmethod
    def open(cls, pid: int, starttime: t.Optional[int] = None) -> "Target":
        """Pin ``pid``; with ``starttime`` it must be that very process (PID + start time identity)."""
        try:
            pidfd = libc.pidfd_open(pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise TargetGone("process %d does not exist" % pid)
            raise
        try:
            proc_fd = os.open("/proc/%d" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(pidfd)
            raise TargetGone("process %d does not exist" % pid)
        target = cls(pid, 0, pidfd, proc_fd)
        try:
            parsed = procfs.parse_proc_stat(target.read("stat"))
        except OSError:  # ESRCH: it exited between the two opens
            parsed = None
        problem = None
        if parsed is None or parsed.state in ("Z", "X") or not target.alive():
            problem = "process %d has exited" % pid
        elif starttime is not None and parsed.starttime != starttime:
            problem = ("process %d is not the one recorded (start time %d, expected %d): the PID was reused"
                       % (pid, parsed.starttime, starttime))
        if problem is not None:
            target.close()
            raise TargetGone(problem)
        target.starttime = parsed.starttime
        return target

    def read(self, name: str) -> str:
        """A file of /proc/PID through the pinned directory fd (ESRCH once the process is gone)."""
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc_fd)
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def alive(self) -> bool:
        """False once the process has exited (its pidfd becomes readable)."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def namespace_fd(self, kind: str) -> int:
        return os.open("ns/%s" % kind, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc_fd)

    def root_fd(self) -> int:
        """The process's root directory (in its own mount namespace), as an O_PATH fd."""
        return os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.proc_fd)

    def credentials(self) -> procscan.Credentials:
        return procscan.parse_credentials(self.read("status"))

    def id_map(self, kind: str) -> procscan.IdMap:
        return procscan.parse_id_map(self.read("%s_map" % kind))

    def cgroup_path(self) -> t.Optional[str]:
        """Its cgroup v2 path relative to the mount root, without the leading '/'."""
        path = procfs.cgroup2_path_of(self.read("cgroup"))
        return None if path is None else path.strip("/")

    def close(self) -> None:
        for fd in (self.pidfd, self.proc_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.pidfd = self.proc_fd = -1

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()


def own_namespace(kind: str) -> t.Tuple[int, int]:
    info = os.stat("/proc/self/ns/%s" % kind)
    return info.st_dev, info.st_ino


# --- the request ------------------------------------------------------------------

@dataclass
class Request:
    """What to run and how: ``prepared`` (confine.prepare) holds the argv, environment and confinement."""

    argv: t.List[str]
    prepared: confine.Prepared
    namespaces: t.Sequence[str] = NAMESPACES   # the ones asked for; user is always joined when it differs
    cwd: t.Optional[str] = None                # None: '/' (of the container's root, when mnt is joined)
    stdin: t.Optional[bytes] = None
    timeout: t.Optional[float] = None
    cgroup: t.Optional[t.Any] = None           # the container's cgroup (a _kernel.cgroup.Cgroup), or None
    output_limit: t.Optional[int] = DEFAULT_OUTPUT_LIMIT  # bytes kept of stdout, and of stderr; None keeps all
    hold: float = 0.0                          # tests only: pause inside, before confinement (KERNELBOX_TEST_EXEC_HOLD)
    # A host file given to the command as its stdin or stdout instead of a pipe (``stdin`` is then
    # ignored, and ``Result.stdout`` stays empty): file transfers stream through them, never through memory.
    stdin_fd: t.Optional[int] = None
    stdout_fd: t.Optional[int] = None
    # Run this function (with the command's stdin, stdout and stderr fds) instead of execve, once
    # confined exactly as the command would be; its return value is the exit code.  The process stays
    # the host's Python, non-dumpable, so only code of ours runs there (file transfers into the root).
    inside: t.Optional[t.Callable[[int, int, int], int]] = None


@dataclass
class Result:
    rc: t.Optional[int]                  # exit code, or -N when killed by signal N (as ansible.builtin.command)
    stdout: bytes
    stderr: bytes
    started: float                       # time.time() at fork
    ended: float
    timed_out: bool = False
    killed: int = 0                      # processes killed at the timeout
    joined: t.List[str] = field(default_factory=list)  # namespaces actually entered
    moved: int = 0                       # processes left behind and moved into the container's group
    stdout_dropped: int = 0              # bytes read past Request.output_limit and thrown away
    stderr_dropped: int = 0


class Capture:
    """What a command wrote to one pipe: the first ``limit`` bytes kept, the rest counted and dropped.

    The pipe is always drained to the end, so a command that writes more than
    the limit never blocks on a full pipe; memory stays at ``limit``.
    """

    def __init__(self, limit: t.Optional[int]) -> None:
        self.limit = limit
        self.chunks: t.List[bytes] = []
        self.kept = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = len(data) if self.limit is None else max(0, min(len(data), self.limit - self.kept))
        if room:
            self.chunks.append(data[:room] if room < len(data) else data)
            self.kept += room
        self.dropped += len(data) - room

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def plan_namespaces(target: Target, wanted: t.Iterable[str]) -> t.List[str]:
    """Which namespaces to enter: the ones asked for that differ from ours, plus user whenever it differs."""
    wanted = set(wanted) | {"user"}
    chosen = []
    for kind in NAMESPACES:
        if kind not in wanted:
            continue
        try:
            info = os.stat("ns/%s" % kind, dir_fd=target.proc_fd)
        except FileNotFoundError:
            continue  # the kernel lacks this namespace type (time before 5.6)
        if (info.st_dev, info.st_ino) != own_namespace(kind):
            chosen.append(kind)
    return chosen


# --- running ------------------------------------------------------------------------

def run(target: Target, request: Request) -> Result:
    """Run ``request`` in ``target``'s namespaces; raises ExecError if it could not start."""
    joined = plan_namespaces(target, request.namespaces)
    ns_fds: t.Dict[str, int] = {}
    pipes: t.List[int] = []
    root_fd = -1
    group = None
    result = None
    try:
        for kind in joined:
            ns_fds[kind] = target.namespace_fd(kind)
        if "mnt" in joined:
            root_fd = target.root_fd()
        if not target.alive():  # everything above came through the pinned fd: this closes the last gap
            raise TargetGone("process %d has exited" % target.pid)
        request, host_groups = _groups_outside(target, request, joined)
        if request.cgroup is not None:
            group = open_exec_group(request.cgroup)
        stdin_w, stdin_r = _pipe_unless(request.stdin_fd, pipes, child_reads=True)
        out_r, out_w = _pipe_unless(request.stdout_fd, pipes)
        err_r, err_w = _pipe_unless(None, pipes)
        report_r, report_w = _pipe_unless(None, pipes)
        parent = os.getpid()
        started = time.time()
        pid = os.fork()
        if pid == 0:  # the joiner: never returns
            _joiner(parent, request, joined, ns_fds, root_fd, group, host_groups, (stdin_r, out_w, err_w), report_w)
        for fd in (stdin_r, out_w, err_w, report_w):
            if fd in pipes:
                os.close(fd)
                pipes.remove(fd)
        result = _supervise(pid, request, group, pipes, (stdin_w, out_r, err_r, report_r))
        result.started = started
        result.joined = joined
        if group is not None:
            result.moved = _retire_exec_group(group, keep_leftovers=not result.timed_out)
            group = None
        return result
    finally:
        for fd in list(ns_fds.values()) + pipes + ([root_fd] if root_fd >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        if group is not None:  # it failed to start: nothing of it may stay
            _retire_exec_group(group, keep_leftovers=False)


def _pipe_unless(given: t.Optional[int], opened: t.List[int], child_reads: bool = False) -> t.Tuple[int, int]:
    """(our end, the child's end) of a close-on-exec pipe, recorded in ``opened``; or (-1, ``given``) when
    the caller gives the child's fd itself."""
    if given is not None:
        return -1, given
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    opened.extend((read_end, write_end))
    return (write_end, read_end) if child_reads else (read_end, write_end)


def _groups_outside(target: Target, request: Request,
                    joined: t.List[str]) -> t.Tuple[Request, t.Optional[t.List[int]]]:
    """Where the target's user namespace denies setgroups (made unprivileged, as by ``unshare -r``), the
    supplementary groups are set before entering it, as host gids, and left alone inside."""
    groups = request.prepared.credentials.groups
    if "user" not in joined or groups is None or target.read("setgroups").strip() != "deny":
        return request, None
    gid_map = target.id_map("gid")
    outside = [procscan.outside_id(gid, gid_map) for gid in groups]
    if None in outside:
        raise ExecError("cannot join process %d as groups %s: its user namespace denies setgroups and does not "
                        "map %s" % (target.pid, groups, [g for g, o in zip(groups, outside) if o is None]))
    changed = dataclasses.replace(request, prepared=copy.deepcopy(request.prepared))
    changed.prepared.credentials.groups = None
    return changed, [gid for gid in outside if gid is not None]


def _joiner(parent: int, request: Request, joined: t.List[str], ns_fds: t.Dict[str, int], root_fd: int,
            group: t.Any, host_groups: t.Optional[t.List[int]], stdio: t.Sequence[int], report_w: int,
            detached: t.Optional["Detached"] = None) -> t.NoReturn:
    step = "dumpable"
    try:
        libc.set_dumpable(False)
        step = "pdeathsig"
        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the module died before we could tie our life to it
        if group is not None:
            step = "cgroup"
            group.write("cgroup.procs", "0")
        step = "close fds"
        keep = list(ns_fds.values()) + [root_fd, report_w] + list(stdio)
        if detached is not None and detached.console_socket is not None:
            keep.append(detached.console_socket)
        libc.close_fds_above(3, keep=[fd for fd in keep if fd >= 0])
        if host_groups is not None:
            step = "setgroups"
            os.setgroups(host_groups)
        for kind in JOIN_ORDER + ("user",):
            if kind in ns_fds:
                step = "setns %s" % kind
                fd = ns_fds.pop(kind)
                libc.setns(fd, libc.NAMESPACE_FLAGS[kind])
                os.close(fd)
        step = "fork"
        pid = os.fork()
        if pid == 0:
            _command(request, "mnt" in joined, root_fd, stdio, report_w, detached)
        if detached is not None:  # left to the nearest subreaper (an OCI exec's caller, or conmon)
            _report(report_w, {"pid": pid})
            os._exit(0)
        for fd in list(stdio) + [root_fd]:
            if fd >= 0:
                os.close(fd)
        try:
            _pid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = -1
        _report(report_w, {"status": status})
        os._exit(0)
    except BaseException as exc:  # the joiner must never unwind into the module's code
        _report_failure(report_w, step, exc)
        os._exit(1)


def _command(request: Request, chroot: bool, root_fd: int, stdio: t.Sequence[int], report_w: int,
             detached: t.Optional["Detached"] = None) -> t.NoReturn:
    """The command's process: into the root and cwd, confined like the container, then execve."""
    step = "setup"
    try:
        os.setsid()  # its own session: the timeout fallback can kill it as a group
        if chroot:
            step = "chroot"
            expected = os.fstat(root_fd)
            os.fchdir(root_fd)
            os.chroot(".")
            here = os.stat("/")
            if (here.st_dev, here.st_ino) != (expected.st_dev, expected.st_ino):
                raise OSError(errno.EXDEV, "the new root is not the container's root")
            os.close(root_fd)
        step = "cwd"
        protect.enter_cwd(request.cwd or "/")
        if request.hold > 0:  # tests only: the most exposed moment, inside and still fully privileged
            time.sleep(request.hold)
        if detached is not None:
            step = "labels"
            if detached.labels is not None:
                detached.labels.apply()
            if detached.console_socket is not None:
                step = "terminal"
                slave = _terminal(detached)
                stdio = [slave, slave, slave] + list(stdio[3:])
        confine.confine(request.prepared)
        if request.inside is not None:
            step = "inside"
            os._exit(request.inside(*stdio) & 0xFF)
        confine.execute(request.prepared, list(stdio), report_w)
    except BaseException as exc:  # the child must never unwind into the module's code
        _report_failure(failure_fd(exc, report_w), getattr(exc, "step", step), exc)
    os._exit(127)


def _terminal(detached: "Detached") -> int:
    """A pty from the container's devpts: master to the console socket, slave our controlling terminal."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pts = inroot.resolve(root, "/dev/pts", strict=True)
    finally:
        os.close(root)
    try:
        master, slave, name = console.open_pair("/proc/self/fd/%d/ptmx" % pts)
    finally:
        os.close(pts)
    if detached.console_size is not None:
        console.set_size(master, *detached.console_size)
    console.send_master(detached.console_socket if detached.console_socket is not None else -1, master, name)
    os.close(master)
    fcntl.ioctl(slave, console.TIOCSCTTY, 0)  # a session leader already (setsid above)
    return slave


@dataclass
class Detached:
    """How ``spawn`` starts a process that outlives the call (an OCI exec): its terminal and labels."""

    console_socket: t.Optional[int] = None
    console_size: t.Optional[t.Tuple[int, int]] = None
    labels: t.Any = None  # lsm.ExecLabels


def spawn(target: Target, request: Request, stdio: t.Sequence[int], detached: Detached,
          timeout: float = 60.0) -> int:
    """Start ``request`` in ``target``'s namespaces and leave it running; its host PID once it has exec'd.

    Like ``run``, but the joiner exits as soon as the process is forked, so the
    process is re-parented to the caller's nearest subreaper (the caller
    itself if it is one), and ``stdio`` (0, 1, 2, and more) are its own fds.
    ``request.cgroup`` is joined directly (an OCI exec joins the container's
    group, not a group of its own).  Raises ExecError if it did not exec.
    """
    joined = plan_namespaces(target, request.namespaces)
    ns_fds: t.Dict[str, int] = {}
    root_fd = -1
    report_r = report_w = -1
    try:
        for kind in joined:
            ns_fds[kind] = target.namespace_fd(kind)
        if "mnt" in joined:
            root_fd = target.root_fd()
        if not target.alive():
            raise TargetGone("process %d has exited" % target.pid)
        request, host_groups = _groups_outside(target, request, joined)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        joiner = os.fork()
        if joiner == 0:
            _joiner(parent, request, joined, ns_fds, root_fd, request.cgroup, host_groups, list(stdio), report_w,
                    detached)
        os.close(report_w)
        report_w = -1
        raw = _read_all(report_r, time.monotonic() + timeout)
        _reap(joiner)
    finally:
        for fd in list(ns_fds.values()) + [root_fd, report_r, report_w]:
            if fd >= 0:
                os.close(fd)
    messages = _messages(raw)
    failure = next((m for m in messages if "step" in m), None)
    if failure is not None:
        raise ExecError("could not start %s: step '%s' failed: %s%s"
                        % (request.argv[0], failure["step"], failure["msg"],
                           " [errno %s %s]" % (failure["errno"], errno.errorcode.get(failure["errno"], "?"))
                           if failure.get("errno") else ""), step=failure["step"], errno=failure.get("errno"))
    pid = next((m["pid"] for m in messages if "pid" in m), None)
    if pid is None:
        raise ExecError("could not start %s: the joining process died without a report" % request.argv[0])
    return int(pid)


def _read_all(fd: int, deadline: float) -> bytes:
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise ExecError("the process did not exec in time")
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def failure_fd(exc: BaseException, report_w: int) -> int:
    """Where to report ``exc``: a StepFailure from confine.execute carries the fd the report pipe moved to;
    every other StepFailure carries None (the pipe is still ``report_w``)."""
    moved = getattr(exc, "status_fd", None)
    return report_w if moved is None else moved


def _report(fd: int, message: t.Dict[str, t.Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _report_failure(fd: int, step: str, exc: BaseException) -> None:
    err = getattr(exc, "errno", None)
    text = getattr(exc, "detail", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    if filename and str(filename) not in text:
        text = "%s: %s" % (text, filename)
    _report(fd, {"step": step, "errno": err, "msg": text})


def _supervise(pid: int, request: Request, group: t.Any, pipes: t.List[int],
               ends: t.Tuple[int, int, int, int]) -> Result:
    """Feed stdin, collect stdout/stderr and the report, enforce the deadline, reap the joiner.

    Like ansible.builtin.command, it returns when the command has exited *and*
    its stdout and stderr are closed (a background process that keeps them
    open keeps the exec running, until the timeout).  ``pipes`` (our ends of
    them: ``ends``, -1 where the caller gave its own fd) are closed here.
    """
    stdin_w, out_r, err_r, report_r = ends
    deadline = None if request.timeout is None else time.monotonic() + request.timeout
    pending = memoryview(request.stdin or b"")
    captured = {out_r: Capture(request.output_limit), err_r: Capture(request.output_limit),
                report_r: Capture(_REPORT_LIMIT)}
    timed_out = False
    killed = 0
    with selectors.DefaultSelector() as selector:
        for fd in (out_r, err_r, report_r):
            if fd >= 0:
                selector.register(fd, selectors.EVENT_READ)
        if pending and stdin_w >= 0:
            os.set_blocking(stdin_w, False)
            selector.register(stdin_w, selectors.EVENT_WRITE)
        elif stdin_w >= 0:
            os.close(stdin_w)
        while selector.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0 and not timed_out:
                timed_out = True
                killed = _kill_command(pid, group)
                deadline = time.monotonic() + _KILL_WAIT  # drain what the dead processes wrote
                continue
            if wait == 0.0:
                break  # something outside our reach still holds a pipe: give up on it
            for key, _events in selector.select(wait):
                fd = key.fd
                if fd == stdin_w:
                    try:
                        pending = pending[os.write(fd, pending[:_READ_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        os.close(fd)
                    continue
                data = os.read(fd, _READ_CHUNK)
                if data:
                    captured[fd].add(data)
                else:
                    selector.unregister(fd)
                    os.close(fd)
        for key in list(selector.get_map().values()):
            selector.unregister(key.fd)
            os.close(key.fd)
    pipes[:] = []
    joiner_status = _reap(pid)
    messages = _messages(captured[report_r].data)
    failure = next((m for m in messages if "step" in m), None)
    if failure is not None and not timed_out:
        raise ExecError("could not start %s: step '%s' failed: %s%s"
                        % (request.argv[0], failure["step"], failure["msg"],
                           " [errno %s %s]" % (failure["errno"], errno.errorcode.get(failure["errno"], "?"))
                           if failure.get("errno") else ""),
                        step=failure["step"], errno=failure.get("errno"))
    status = next((m["status"] for m in messages if "status" in m), None)
    if (status is None and joiner_status is not None and os.WIFSIGNALED(joiner_status)
            and os.WTERMSIG(joiner_status) == signal.SIGKILL):
        # The joiner shares the command's cgroup: a kill of that group (our timeout, or the container's
        # supervisor clearing its leaf after the init died) took both before the joiner could report.
        status = joiner_status
    if status is None or status < 0:
        rc = -int(signal.SIGKILL) if timed_out else None
    elif os.WIFSIGNALED(status):
        rc = -os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    out, err = captured[out_r], captured[err_r]
    return Result(rc=rc, stdout=out.data, stderr=err.data, started=0.0, ended=time.time(), timed_out=timed_out,
                  killed=killed, stdout_dropped=out.dropped, stderr_dropped=err.dropped)


def _messages(raw: bytes) -> t.List[t.Dict[str, t.Any]]:
    found = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _reap(pid: int) -> t.Optional[int]:
    """Wait for our child ``pid``; its wait status (None if it was reaped already)."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


# --- the exec's own cgroup, and killing -----------------------------------------------

def _exec_group_name() -> str:
    """Named after the module process (PID + start time), so a stale group is recognised as such."""
    with open("/proc/self/stat", encoding="utf-8") as handle:
        starttime = procfs.parse_proc_stat(handle.read()).starttime
    return "%s%d-%d" % (EXEC_GROUP_PREFIX, os.getpid(), starttime)


def open_exec_group(container: t.Any) -> t.Any:
    """Create this exec's child group under the container's cgroup, removing stale ones first."""
    remove_stale_exec_groups(container)
    group = cgroup.Cgroup(container.hierarchy, container.parts + (_exec_group_name(),))
    cgroup.make_group(group)
    return group


def remove_stale_exec_groups(container: t.Any) -> t.List[str]:
    """Groups of execs whose module process is gone (killed mid-run): kill what is in them, remove them."""
    removed = []
    try:
        children = container.children()
    except FileNotFoundError:
        return removed
    for child in children:
        name = child.parts[-1]
        if not name.startswith(EXEC_GROUP_PREFIX):
            continue
        owner = name[len(EXEC_GROUP_PREFIX):].split("-")
        if len(owner) == 2 and all(part.isdigit() for part in owner) and _alive(int(owner[0]), int(owner[1])):
            continue
        try:
            cgroup.kill_and_remove(child, timeout=_KILL_WAIT)
            removed.append(child.relpath)
        except (OSError, KernelboxError):
            continue
    return removed


def _alive(pid: int, starttime: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as handle:
            return procfs.parse_proc_stat(handle.read()).starttime == starttime
    except OSError:
        return False


def _kill_command(joiner: int, group: t.Any) -> int:
    """SIGKILL everything this exec started; returns how many processes that was."""
    if group is not None:
        count = len([pid for pid in _group_pids(group) if pid != joiner])
        try:
            cgroup.kill(group, timeout=_KILL_WAIT)
        except (OSError, KernelboxError):
            pass
        _signal(joiner, signal.SIGKILL)  # in case the deadline came before it joined the group
        return count
    return kill_tree(joiner)


def _group_pids(group: t.Any) -> t.List[int]:
    try:
        return group.procs()
    except OSError:
        return []


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def kill_tree(root: int, rounds: int = 20) -> int:
    """SIGKILL ``root``'s descendants deepest first (so none is re-parented away before its turn), then root.

    Repeated until nothing below ``root`` is left: a child forked meanwhile is caught by the next round.
    """
    killed: t.Set[int] = set()
    for _round in range(rounds):
        entries = procscan.scan()
        tree = [pid for pid in procscan.descendants(root, procscan.children_map(entries))
                if entries.get(pid) is not None and entries[pid].state not in ("Z", "X")]
        if not tree or tree == [root] and root in killed:
            break
        for pid in reversed(tree):
            if _signal(pid, signal.SIGKILL):
                killed.add(pid)
        time.sleep(0.01)
    return len(killed - {root})


def _retire_exec_group(group: t.Any, keep_leftovers: bool) -> int:
    """After the command: move what it left running into the container's group (or kill it), remove ours.

    Returns how many processes were moved.  The group is frozen while its
    members move, so none can fork a child that stays behind.
    """
    moved = 0
    try:
        if not group.exists():
            return 0
        if keep_leftovers and _group_pids(group):
            parent = group.parent()
            cgroup.freeze(group, True, timeout=_KILL_WAIT)
            try:
                for pid in _group_pids(group):
                    try:
                        parent.write("cgroup.procs", str(pid))  # a process moved out of a frozen group thaws
                        moved += 1
                    except OSError:
                        continue
            finally:
                if group.exists():
                    cgroup.freeze(group, False, timeout=_KILL_WAIT)
        cgroup.kill_and_remove(group, timeout=_KILL_WAIT)
    except (OSError, KernelboxError):
        pass
    return moved
