# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: start a container from a Spec, runc-style, with ctypes only.

``start(spec, stdout=..., stderr=...)`` returns ``Launched`` once the
container's command has exec'd, or raises ``LaunchError`` naming the step and
the errno, with nothing left behind: no process, no mount on the host, nothing
in the cgroup (every mount is made inside the container's own mount namespace,
which dies with its last process).

The order of steps is the issue's.  Usually one process does it all (the
*direct* path)::

    caller (P)                              init (clone(CLONE_NEWUSER|CLONE_NEWPID): PID 1)
    ----------                              ------------------------------------------------
    plan: capabilities, seccomp program,
    rootfs/bind/device clones (open_tree)
    clone3 into the cgroup -------------->  waits for G     (CLONE_INTO_CGROUP: a member from birth)
    uid_map, setgroups, gid_map
    oom_score_adj (and cgroup.procs <- init where clone3 cannot: kernels before 5.7)
    G ----------------------------------->  setresuid(0), unshare(mnt, net, ipc, uts, cgroup),
                                            lo up (a new netns), / rslave, attach the rootfs,
                                            mounts, devices,
                                            /etc files, pivot_root, sysctl, masked and
                                            read-only paths, hostname, cwd, rlimits,
                                            capabilities, no_new_privs, seccomp, fds
    EOF after X: it exec'd        <--X ns-- execve (the close-on-exec status pipe closes)

A new time namespace (its offsets must be written before its first process
exists), a namespace joined by path (a named netns must be entered while
still host root, before the user namespace), or a caller with threads (the
raw clone skips fork handlers) take the *two-process* path instead: a setup
process (os.fork) does the setns joins and unshare(CLONE_NEWUSER), the caller
writes the maps and the cgroup, the setup process unshares the rest, writes
timens_offsets and forks init, reports init's PID and exits.  The process
that unshares CLONE_NEWPID is not inside it; its next child is PID 1, and is
re-parented to the caller.

**Contract:** the caller must be a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER, 1)``, as the supervisor is): ``start``
refuses to run otherwise, so init is always the caller's child and the caller
can ``waitpid(launched.pid)``.  ``start`` never reaps init after success.
Before exec, init dies with the caller (PR_SET_PDEATHSIG, and it checks the
caller is still there right before exec); after exec it no longer does.

Everything that can be computed before fork is computed in the caller (the
rootfs and confinement plans, the compiled seccomp program, the id maps);
init only makes syscalls.  Host objects (rootfs, bind sources, device nodes)
are opened by the caller, as host root: container root is an unprivileged id
outside and could not reach a rootfs below a 0700 directory.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import signal
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import hooks as hook_runner
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import lsm
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import StepFailure
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.launch_init import (  # noqa: F401
    INIT_NAME, NAMESPACES, SEP, Plan as _Plan, child_main as _child_main, direct_init as _direct_init,
    report as _report, setup_process as _setup_process)  # pylint: disable=unused-import
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import Spec, from_oci
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

_NS_GET_NSTYPE = 0xB703  # include/uapi/linux/nsfs.h _IO(0xb7, 0x3)


class LaunchError(KernelboxError):
    """The container did not start: ``step`` names where, ``errno`` says why."""

    def __init__(self, step: str, err: int, detail: str) -> None:
        message = "%s: %s [errno %d]" % (step, detail, err)
        super().__init__(message, launch_step=step, errno=err)
        self.step = step
        self.errno = err
        self.detail = detail


@dataclass
class Stages:
    """The optional steps of an OCI ``create`` (kernelbox-runtime); container_process uses none.

    * ``console_socket``: a connected AF_UNIX socket; with ``process.terminal`` the
      container gets a pty whose master is sent there (required with a terminal).
    * ``runtime_hooks``: called in the caller with init's PID once the container's
      mounts are made, before pivot_root (prestart and createRuntime hooks);
      raising from it aborts the start.
    * ``hook_state``: the state JSON for the hooks init runs itself (createContainer
      before pivot_root, startContainer before exec); it fills in its own pid.
    * ``start_gate``: a listening AF_UNIX socket.  ``start`` returns as soon as
      the container is *created*: init waits, fully confined, until a client
      connects and sends ``S`` (the OCI ``start``), then runs the startContainer
      hooks and execs, reporting ``X`` or an error on that connection.
    """

    console_socket: t.Optional[int] = None
    runtime_hooks: t.Optional[t.Callable[[int], None]] = None
    hook_state: bytes = b""
    start_gate: t.Optional[int] = None


@dataclass
class Launched:
    """A started container: its PID 1 (host PID), start time (clock ticks, /proc/PID/stat field 22),
    and the inode of each of its namespaces by OCI type ('pid', 'network', ...)."""

    pid: int
    starttime: int
    namespaces: t.Dict[str, int]
    created: t.List[str] = field(default_factory=list)  # mount targets made in the rootfs (rootfs.remove_created)


def start(spec: t.Union[Spec, t.Mapping[str, t.Any]], *, stdin: t.Any = None, stdout: t.Any, stderr: t.Any,
          cgroup_dir: t.Optional[str] = None, extra_files: t.Sequence[t.Any] = (),
          timeout: float = 60.0, stages: t.Optional[Stages] = None) -> Launched:
    """Start ``spec``'s process in a new container; return once it has exec'd.

    ``spec`` is a validated ``Spec``, or a config.json dict (validated here
    with ``spec.from_oci``; a caller that starts the same spec often keeps
    the Spec instead, which also keeps the compiled seccomp program cached).

    ``stdin`` (None: /dev/null), ``stdout``, ``stderr`` and ``extra_files``
    (they become fds 3, 4, ...) are fds or objects with ``fileno()``; every
    other fd of the caller stays out of the container.  ``cgroup_dir`` is a
    cgroup v2 directory the container joins before its cgroup namespace is
    made (its root inside).  Raises LaunchError (or ValidationError for a spec
    this host cannot honour).  ``stages`` adds the steps of an OCI ``create``
    (see ``Stages``): with a start gate, ``start`` returns once the container
    is created, before its process runs.
    """
    _require_subreaper()
    if not isinstance(spec, Spec):
        spec = from_oci(spec)
    stages = stages or Stages()
    plan = _Plan()
    try:
        _prepare(plan, spec, cgroup_dir, [stdin, stdout, stderr] + list(extra_files))
        _prepare_stages(plan, spec, stages)
        try:
            launched = _run(plan, timeout, stages.runtime_hooks)
        except _UnbornInCgroup:
            plan.cgroup_dir = None  # clone + cgroup.procs, which reports any real problem precisely
            launched = _run(plan, timeout, stages.runtime_hooks)
        launched.created = list(plan.rootfs.created) if plan.rootfs is not None else []
        return launched
    except BaseException:
        if plan.rootfs is not None and plan.rootfs.root_dir is not None and plan.rootfs.created:
            rootfs.remove_created(plan.rootfs.root_dir, plan.rootfs.created)  # a failed start writes nothing
        raise
    finally:
        plan.close()


class _UnbornInCgroup(Exception):
    """The init cloned into its cgroup died before it was released (see ``_clone_into_cgroup``)."""


# --- in the caller, before fork ----------------------------------------------------

def _require_subreaper() -> None:
    value = ctypes.c_int(0)
    libc.prctl(libc.PR_GET_CHILD_SUBREAPER, ctypes.addressof(value))
    if not value.value:
        raise LaunchError("preflight", errno.EPERM, "the caller must be a child subreaper "
                          "(prctl PR_SET_CHILD_SUBREAPER): the container's PID 1 is re-parented to it")


def _fileno(value: t.Any, what: str) -> int:
    fd = value if isinstance(value, int) else value.fileno()
    try:
        os.fstat(fd)
    except OSError as exc:
        raise LaunchError("preflight", exc.errno or errno.EBADF, "%s: fd %d is not open" % (what, fd))
    return fd


def _prepare(plan: _Plan, spec: Spec, cgroup_dir: t.Optional[str], files: t.List[t.Any]) -> None:
    netns = spec.linux.namespace("network")
    try:
        plan.prepared = confine.prepare(spec.process, spec.linux.seccomp)
        plan.rootfs = rootfs.plan(spec)
        rootfs.capture(plan.rootfs)
    except StepFailure as exc:
        raise LaunchError(exc.step, exc.errno, exc.detail)
    for index, value in enumerate(files):
        if index == 0 and value is None:
            value = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            plan.opened.append(value)
        plan.stdio.append(_fileno(value, ("stdin", "stdout", "stderr")[index] if index < 3
                                  else "extra_files[%d]" % (index - 3)))
    user = spec.linux.namespace("user")
    if user is not None and user.path is not None:
        plan.joins.append(_open_namespace(plan, "user", user.path))
    for entry in spec.linux.namespaces:
        flag = NAMESPACES[entry.type][0]
        if entry.type == "user":
            continue
        if entry.path is not None:
            plan.joins.append(_open_namespace(plan, entry.type, entry.path))
        else:
            plan.unshare_flags |= flag
    plan.any_userns = user is not None
    plan.new_userns = user is not None and user.path is None
    plan.own_sysfs = (plan.new_userns and (netns is None or netns.path is not None)
                      and any(op.kind == "sysfs" for op in plan.rootfs.mounts))
    if plan.new_userns:
        plan.uid_map = _id_map(spec.linux.uid_mappings)
        plan.gid_map = _id_map(spec.linux.gid_mappings)
        plan.deny_setgroups = os.geteuid() != 0  # only an unprivileged writer needs it
    offsets = spec.linux.time_offsets
    if offsets is not None:
        lines = ["%s %d %d\n" % (clock, value.secs, value.nanosecs)
                 for clock, value in (("monotonic", offsets.monotonic), ("boottime", offsets.boottime)) if value]
        plan.timens_offsets = "".join(lines).encode()
    if spec.process.oom_score_adj is not None:
        plan.oom_score_adj = b"%d" % spec.process.oom_score_adj
    if cgroup_dir is not None:
        plan.cgroup_procs = _open_cgroup(plan, cgroup_dir)
    plan.hostname = spec.hostname
    plan.domainname = spec.domainname
    plan.cwd = spec.process.cwd
    _warm_up()


def _prepare_stages(plan: _Plan, spec: Spec, stages: Stages) -> None:
    """Labels, terminal and hooks: refused here, before anything is made, when nothing can carry them out."""
    try:
        lsm.check(spec)
    except ValidationError as exc:
        raise LaunchError("labels", errno.EOPNOTSUPP, str(exc))
    labels = lsm.ExecLabels.of(spec.process)
    plan.exec_labels = labels if labels.writes else None
    if spec.process.terminal:
        if stages.console_socket is None:
            raise LaunchError("terminal", errno.EINVAL, "process.terminal: the container asks for a terminal, and "
                              "nothing receives it (kernelbox-runtime gives it to --console-socket)")
        plan.console_socket = stages.console_socket
        size = spec.process.console_size
        plan.console_size = (size.height, size.width) if size is not None else None
    hooks = spec.hooks
    if hooks is not None:
        caller_run = [n for n in ("prestart", "createRuntime", "poststart", "poststop") if hooks.of(n)]
        if caller_run and stages.runtime_hooks is None:
            raise LaunchError("hooks", errno.EINVAL, "hooks.%s: this caller does not run OCI hooks (kernelbox-runtime "
                              "does)" % caller_run[0])
        plan.create_hooks = hook_runner.calls(hooks, "createContainer")
        plan.start_hooks = hook_runner.calls(hooks, "startContainer")
        for call in plan.start_hooks:  # runc's de facto rule: without an env of their own, the container's
            call.env = call.env or list(spec.process.env)
    plan.pause_before_pivot = stages.runtime_hooks is not None
    plan.hook_state = stages.hook_state
    plan.start_gate = stages.start_gate


def _open_namespace(plan: _Plan, kind: str, path: str) -> t.Tuple[int, int, str]:
    flag = NAMESPACES[kind][0]
    what = "%s namespace %s" % (kind, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LaunchError("join namespaces", exc.errno or 0, "%s: %s" % (what, exc.strerror))
    plan.opened.append(fd)
    try:
        is_nsfs = libc.fstatfs_type(fd) == libc.NSFS_MAGIC
        actual = fcntl.ioctl(fd, _NS_GET_NSTYPE) if is_nsfs else 0
    except OSError as exc:
        raise LaunchError("join namespaces", exc.errno or 0, "%s: %s" % (what, exc.strerror))
    if actual != flag:
        raise LaunchError("join namespaces", errno.EINVAL, "%s is not a %s namespace" % (path, kind))
    return fd, flag, what


def _id_map(mappings: t.Sequence[t.Any]) -> bytes:
    return "".join("%d %d %d\n" % (m.container_id, m.host_id, m.size) for m in mappings).encode()


def _open_cgroup(plan: _Plan, cgroup_dir: str) -> int:
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        plan.opened.append(dir_fd)
        if libc.fstatfs_type(dir_fd) != libc.CGROUP2_SUPER_MAGIC:
            raise OSError(errno.EINVAL, "not a cgroup v2 directory")
        fd = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise LaunchError("cgroup", exc.errno or 0, "%s: %s" % (cgroup_dir, exc.strerror))
    plan.opened.append(fd)
    plan.cgroup_dir = dir_fd
    return fd


def _warm_up() -> None:
    """Resolve the libc symbols the children call, once, so no child pays dlsym."""
    lib = libc.get_libc()
    for name in ("mount", "umount2", "unshare", "setns", "prctl", "syscall", "sethostname", "setdomainname",
                 "fstatfs", "statfs"):
        getattr(lib, name)


# --- in the caller, after fork -------------------------------------------------------

class _Channel:
    """Line messages from the children, with one deadline for the whole start."""

    def __init__(self, read_fd: int, write_fd: int, deadline: float) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.deadline = deadline
        self.buffer = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        os.write(self.write_fd, data)

    def readline(self, waiting_for: str) -> t.Optional[str]:
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.read_fd], [], [], remaining)[0]:
                raise LaunchError("timeout", errno.ETIMEDOUT, "the container was not set up in time (waiting "
                                  "for %s)" % waiting_for)
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                self.eof = True
            self.buffer += chunk
        line, _sep, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", "replace")


def _error_from(line: str) -> LaunchError:
    step, err, detail = (line[1:].split(SEP, 2) + ["", ""])[:3]
    return LaunchError(step, int(err or 0), detail)


def _direct(plan: _Plan) -> bool:
    """Whether one cloned process can be the whole setup (see the module docstring)."""
    if plan.joins or plan.unshare_flags & libc.CLONE_NEWTIME or plan.own_sysfs:
        return False
    return len(os.listdir("/proc/self/task")) == 1  # clone_process needs a single-threaded caller


def _run(plan: _Plan, timeout: float, runtime_hooks: t.Optional[t.Callable[[int], None]] = None) -> Launched:
    from_child_r, from_child_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    direct = _direct(plan)
    born_in_cgroup = False
    if direct:
        flags = (libc.CLONE_NEWUSER if plan.new_userns else 0) | (plan.unshare_flags & libc.CLONE_NEWPID)
        try:
            first = _clone_into_cgroup(plan, flags)
            if first is None:
                first = libc.clone_process(flags)
            else:
                born_in_cgroup = True
        except OSError as exc:
            os.close(from_child_r), os.close(from_child_w), os.close(to_child_r), os.close(to_child_w)
            raise LaunchError("namespaces", exc.errno or 0, str(exc.strerror))
        if first == 0:  # the container's init (PID 1): never returns
            try:
                os.close(from_child_r)
                os.close(to_child_w)
                if born_in_cgroup:
                    os.write(from_child_w, b"A\n")  # alive: the kernel did not kill it at birth
                _child_main(from_child_w, lambda: _direct_init(plan, to_child_r, from_child_w))
            finally:
                os._exit(126)
    else:
        parent = os.getpid()
        first = os.fork()
        if first == 0:  # A, the setup process: never returns
            try:
                os.close(from_child_r)
                os.close(to_child_w)
                _setup_process(plan, parent, to_child_r, from_child_w)
            finally:
                os._exit(126)
    os.close(from_child_w)
    os.close(to_child_r)
    channel = _Channel(from_child_r, to_child_w, time.monotonic() + timeout)
    init = first if direct else None
    first_reaped = direct  # in the direct path the first child is init, reaped by the caller later
    try:
        if not direct:
            line = channel.readline("the user namespace")
            if line is None or line.startswith("E"):
                raise _error_from(line) if line else _died(first, "setup process", "setup")
        if born_in_cgroup and channel.readline("the init to run") != "A":
            # Killed before it ran a single instruction: it used nothing of the plan, so a retry may.
            raise _UnbornInCgroup()
        if plan.new_userns:
            _write_id_maps(first, plan)
        if plan.oom_score_adj is not None:
            _write_proc(first, "oom_score_adj", plan.oom_score_adj)
        if plan.cgroup_procs is not None and not born_in_cgroup:
            try:
                os.write(plan.cgroup_procs, b"%d" % first)
            except OSError as exc:
                raise LaunchError("cgroup", exc.errno or 0, "join the cgroup: %s" % exc.strerror)
        channel.send(b"G")
        failure = None
        ready = None
        reached = "setup"
        while True:
            line = channel.readline("exec")
            if line is None:
                break
            if line.startswith("T"):
                reached = line[1:]
            elif line == "H":  # mounts made, before pivot_root: the caller's hooks run now
                if runtime_hooks is not None:
                    runtime_hooks(init if init is not None else first)
                channel.send(b"h")
            elif line.startswith("C") and plan.start_gate is not None:
                ready = line  # created: init waits at the start gate, and this call is done
                break
            elif line.startswith("P"):
                init = int(line[2:])
                try:
                    os.waitpid(first, 0)  # the setup process exits right after this message
                except ChildProcessError:
                    pass  # reaped by a waitpid(-1) elsewhere in the caller: gone either way
                first_reaped = True
            elif line.startswith("X"):
                ready = line
            elif line.startswith("E") and failure is None:
                failure = _error_from(line)
        if failure is not None:
            raise failure
        if init is None:
            raise _died(first, "setup process", reached)
        if ready is None:
            raise _died(init, "container init", reached)
        comm, starttime = _stat(init)
        if comm == INIT_NAME and plan.start_gate is None:  # execve renames it before our pipe closes: it died
            raise _died(init, "container init", "exec")
        return Launched(pid=init, starttime=starttime, namespaces=_parse_namespaces(ready))
    except BaseException:
        _kill_and_reap(first, first_reaped, init)
        raise
    finally:
        os.close(from_child_r)
        os.close(to_child_w)


def _clone_into_cgroup(plan: _Plan, flags: int) -> t.Optional[int]:
    """clone3 straight into the container's cgroup (see libc.clone_process); None: use clone + cgroup.procs.

    Any failure falls back to the two calls, which then report the precise
    step (the namespaces, or the cgroup with its errno).  Membership from
    birth is stricter than the cgroup.procs write: the init never runs
    outside the container's cgroup, and its cgroup namespace, made later,
    is rooted there all the same.

    Some kernels (the cgroup.kill fork-race fix of 6.14, and its stable
    backports) compare the kill sequence of the *caller's* cgroup at fork
    with the target's afterwards and SIGKILL the child at birth when a
    cgroup.kill ever hit the target (a stopped container's leaf).  Such a
    child never runs, so it never writes the "A" (alive) the caller waits
    for; ``start`` then retries once the classic way (``_UnbornInCgroup``).
    """
    if plan.cgroup_dir is None:
        return None
    try:
        return libc.clone_process(flags, cgroup_fd=plan.cgroup_dir)
    except OSError:
        return None


def _write_proc(pid: int, name: str, data: bytes) -> None:
    try:
        fd = os.open("/proc/%d/%s" % (pid, name), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LaunchError(name, exc.errno or 0, "write %r: %s" % (data.decode().strip(), exc.strerror))


def _write_id_maps(pid: int, plan: _Plan) -> None:
    _write_proc(pid, "uid_map", plan.uid_map)
    if plan.deny_setgroups:
        _write_proc(pid, "setgroups", b"deny")
    _write_proc(pid, "gid_map", plan.gid_map)


def _died(pid: int, what: str, step: str) -> LaunchError:
    """The child closed the status pipe without a report, so it is exiting: say how, and where."""
    try:
        _pid, status = os.waitpid(pid, 0)
    except ChildProcessError:
        _pid, status = 0, 0
    if _pid and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "signal %d" % number
        how = "was killed by %s" % name
    else:
        how = "exited"
    return LaunchError(step, errno.ECHILD, "the %s %s without reporting" % (what, how))


def _stat(pid: int) -> t.Tuple[str, int]:
    """(comm, starttime) from the host's /proc (inside a time namespace starttime is shifted)."""
    with open("/proc/%d/stat" % pid, "rb") as handle:
        text = handle.read()
    close = text.rindex(b")")
    return text[text.index(b"(") + 1:close].decode(errors="replace"), int(text[close + 2:].split()[19])


def _parse_namespaces(line: str) -> t.Dict[str, int]:
    result = {}
    for item in line.split()[1:]:
        kind, _sep, inode = item.partition("=")
        result[kind] = int(inode)
    return result


def _kill_and_reap(first: int, first_reaped: bool, init: t.Optional[int]) -> None:
    """Leave nothing behind: init is PID 1 of its namespace, so killing it ends everything inside.

    The setup process (if any) is reaped first: only then is init re-parented here.
    """
    for pid in ([init] if init else []) + ([] if first_reaped else [first]):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in ([] if first_reaped else [first]) + ([init] if init else []):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


__all__ = ["start", "Launched", "LaunchError", "NAMESPACES", "Stages", "ValidationError"]
