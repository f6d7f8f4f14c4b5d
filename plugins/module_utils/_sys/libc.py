# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: raw syscalls through ctypes.

Pure mechanism, no policy and no Ansible.  Every wrapper raises
``OSError(errno, "<syscall> failed: <context>", path)`` so callers get the
errno *and* what was being attempted.  libc is loaded lazily; every wrapper
accepts ``libc=`` so unit tests can inject a fake.

Constants carry the kernel macro names; the uapi header is cited beside them.
"""

from __future__ import annotations

import ctypes
import os
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass

# include/uapi/linux/sched.h
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000  # clone3 only (Linux 5.7)

# Namespace type name (as in /proc/PID/ns/<name>) -> clone flag.
NAMESPACE_FLAGS = {
    "cgroup": CLONE_NEWCGROUP,
    "ipc": CLONE_NEWIPC,
    "mnt": CLONE_NEWNS,
    "net": CLONE_NEWNET,
    "pid": CLONE_NEWPID,
    "time": CLONE_NEWTIME,
    "user": CLONE_NEWUSER,
    "uts": CLONE_NEWUTS,
}

# include/uapi/linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
# umount2 flags
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# include/uapi/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# include/uapi/linux/seccomp.h
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32
SECCOMP_GET_ACTION_AVAIL = 2

# include/uapi/linux/capability.h
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# x86_64 / aarch64 syscall numbers for calls glibc 2.36 does not wrap.
# arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h
_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "pidfd_open": 434, "pidfd_send_signal": 424,
               "close_range": 436, "seccomp": 317, "capget": 125, "capset": 126,
               "setns": 308, "unshare": 272, "open_tree": 428, "move_mount": 429,
               "fsopen": 430, "fsconfig": 431, "fsmount": 432, "mount_setattr": 442, "clone": 56,
               "clone3": 435, "bpf": 321},
    "aarch64": {"pivot_root": 41, "pidfd_open": 434, "pidfd_send_signal": 424,
                "close_range": 436, "seccomp": 277, "capget": 90, "capset": 91,
                "setns": 268, "unshare": 97, "open_tree": 428, "move_mount": 429,
                "fsopen": 430, "fsconfig": 431, "fsmount": 432, "mount_setattr": 442, "clone": 220,
                "clone3": 435, "bpf": 280},
}


class _State:
    """Holds the lazily loaded libc; one instance per process (fork keeps it valid)."""

    libc: t.Optional[ctypes.CDLL] = None


def get_libc(libc: t.Optional[t.Any] = None) -> t.Any:
    """Return ``libc`` if given (tests inject fakes), else the real libc with errno capture."""
    if libc is not None:
        return libc
    if _State.libc is None:
        try:  # glibc's soname: no need for ctypes.util, whose imports cost a long-running daemon ~2 MiB
            _State.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            from ctypes import util as ctypes_util
            _State.libc = ctypes.CDLL(ctypes_util.find_library("c") or "libc.so.6", use_errno=True)
    return _State.libc


def _check(ret: int, what: str, path: t.Optional[str] = None) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, "%s failed: %s" % (what, os.strerror(err)), path)
    return ret


def _bytes(value: t.Optional[t.Union[str, bytes]]) -> t.Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return os.fsencode(value)


_MACHINE: t.List[str] = []


def _syscall_number(name: str) -> int:
    if not _MACHINE:
        _MACHINE.append(os.uname().machine)  # once per process: the launcher calls this in hot paths
    try:
        return _SYSCALL_NUMBERS[_MACHINE[0]][name]
    except KeyError:
        raise OSError(38, "%s: no syscall number known for %s" % (name, _MACHINE[0]))


def syscall(name: str, *args: t.Any, libc: t.Optional[t.Any] = None, context: str = "") -> int:
    """Call a syscall glibc may not wrap, by number for this architecture."""
    lib = get_libc(libc)
    fn = lib.syscall
    fn.restype = ctypes.c_long
    ret = fn(ctypes.c_long(_syscall_number(name)), *args)
    return _check(ret, name, context or None)


# --- namespaces --------------------------------------------------------------

_SIGCHLD = 17


class _PyState:
    """libc through ctypes.PyDLL: calls keep the GIL (needed around clone, see clone_process)."""

    libc: t.Optional[ctypes.PyDLL] = None


class _CloneArgs(ctypes.Structure):
    """struct clone_args, CLONE_ARGS_SIZE_VER2 (include/uapi/linux/sched.h)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


def clone_process(flags: int, cgroup_fd: t.Optional[int] = None) -> int:
    """fork(2) that also creates namespaces: clone(flags | SIGCHLD) with no new stack.

    With ``cgroup_fd`` (a cgroup v2 directory), clone3 with CLONE_INTO_CGROUP:
    the child is born in that cgroup.  That spares the write to cgroup.procs,
    whose lock (cgroup_threadgroup_rwsem) costs an RCU grace period, often
    10 ms or more, on a quiet host.  Kernels before 5.7 fail it with ENOSYS
    or E2BIG; the caller falls back.

    Returns the child's PID in the parent and 0 in the child, like os.fork.
    The child starts inside the namespaces in ``flags`` (with CLONE_NEWPID it
    is PID 1 of the new PID namespace), so one process does what unshare and
    a second fork would.  Unlike os.fork, Python's and glibc's fork handlers
    do not run: the caller must be single-threaded (another thread could hold
    a lock the child then waits for forever) and the child must end in exec
    or os._exit.  The call goes through PyDLL so the GIL stays held across
    it and the child resumes holding it.
    """
    if _PyState.libc is None:
        try:  # as in get_libc: the soname, without ctypes.util's imports
            _PyState.libc = ctypes.PyDLL("libc.so.6", use_errno=True)
        except OSError:
            from ctypes import util as ctypes_util
            _PyState.libc = ctypes.PyDLL(ctypes_util.find_library("c") or "libc.so.6", use_errno=True)
    fn = _PyState.libc.syscall
    fn.restype = ctypes.c_long
    if cgroup_fd is None:
        ret = fn(ctypes.c_long(_syscall_number("clone")), ctypes.c_ulong(flags | _SIGCHLD), None, None, None, None)
        return _check(ret, "clone(%s)" % describe_clone_flags(flags))
    args = _CloneArgs(flags=flags | CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=cgroup_fd)
    ret = fn(ctypes.c_long(_syscall_number("clone3")), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    return _check(ret, "clone3(%s, into cgroup)" % describe_clone_flags(flags))


def unshare(flags: int, libc: t.Optional[t.Any] = None) -> None:
    """unshare(2) the namespaces in ``flags``."""
    _check(get_libc(libc).unshare(ctypes.c_int(flags)), "unshare(%s)" % describe_clone_flags(flags))


def setns(fd: int, nstype: int = 0, libc: t.Optional[t.Any] = None, context: str = "") -> None:
    """setns(2) into the namespace behind ``fd`` (an nsfs fd or a pidfd)."""
    _check(get_libc(libc).setns(ctypes.c_int(fd), ctypes.c_int(nstype)),
           "setns(%s)" % (describe_clone_flags(nstype) if nstype else "any"), context or None)


def describe_clone_flags(flags: int) -> str:
    names = [name for name, flag in sorted(NAMESPACE_FLAGS.items()) if flags & flag]
    return "|".join(names) if names else hex(flags)


@contextmanager
def entered_netns(path: str, libc: t.Optional[t.Any] = None) -> t.Iterator[None]:
    """Run the block in the network namespace at ``path``, then return for certain.

    Only the network namespace of the calling thread changes; it is restored
    in ``finally``.  If restoring ever fails the process is in an unknown
    namespace, so it aborts rather than carry on and act on the wrong host.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target, CLONE_NEWNET, libc=libc, context=path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                setns(own, CLONE_NEWNET, libc=libc, context="/proc/thread-self/ns/net (restore)")
            except OSError:  # pragma: no cover - cannot happen as root; never continue if it does
                os.write(2, b"kernelbox: could not return to the original network namespace\n")
                os._exit(70)
    finally:
        os.close(own)


# --- mounts ------------------------------------------------------------------

def mount(source: t.Optional[str], target: str, fstype: t.Optional[str] = None, flags: int = 0,
          data: t.Optional[t.Union[str, bytes]] = None, libc: t.Optional[t.Any] = None) -> None:
    """mount(2).  ``data`` is passed as given; callers must escape it."""
    _check(get_libc(libc).mount(_bytes(source), _bytes(target), _bytes(fstype),
                                ctypes.c_ulong(flags), _bytes(data)),
           "mount(%s on %s, type %s)" % (source, target, fstype), target)


def umount2(target: str, flags: int = 0, libc: t.Optional[t.Any] = None) -> None:
    """umount2(2)."""
    _check(get_libc(libc).umount2(_bytes(target), ctypes.c_int(flags)), "umount2", target)


# include/uapi/linux/mount.h: the fd-based mount API (Linux 5.2+; mount_setattr 5.12+)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000


def fsopen(fstype: str, libc: t.Optional[t.Any] = None) -> int:
    """A filesystem context fd for ``fstype`` (fsopen(2)), close-on-exec."""
    return syscall("fsopen", _bytes(fstype), ctypes.c_uint(FSOPEN_CLOEXEC), libc=libc, context=fstype)


def fsconfig_string(fs_fd: int, key: str, value: str, libc: t.Optional[t.Any] = None) -> None:
    syscall("fsconfig", ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_STRING), _bytes(key), _bytes(value),
            ctypes.c_int(0), libc=libc, context="%s=%s" % (key, value))


def fsconfig_create(fs_fd: int, libc: t.Optional[t.Any] = None) -> None:
    syscall("fsconfig", ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0),
            libc=libc)


def fsmount(fs_fd: int, attr_flags: int = 0, libc: t.Optional[t.Any] = None) -> int:
    """A detached mount of the created superblock: an fd no path reaches until move_mount."""
    return syscall("fsmount", ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags),
                   libc=libc)


AT_FDCWD = -100


def open_tree_clone(dir_fd: int, path: str, recursive: bool = True, libc: t.Optional[t.Any] = None) -> int:
    """A detached (recursive) bind mount of ``path`` relative to ``dir_fd`` (open_tree OPEN_TREE_CLONE).

    Nothing is attached anywhere: the clone lives until its last fd closes
    or it is attached with ``move_mount_fd``.  An empty ``path`` clones what
    ``dir_fd`` itself refers to.
    """
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0) | (0 if path else AT_EMPTY_PATH)
    return syscall("open_tree", ctypes.c_int(dir_fd), _bytes(path), ctypes.c_uint(flags), libc=libc,
                   context=path)


def move_mount_fd(from_fd: int, to_fd: int, to_path: str = "", libc: t.Optional[t.Any] = None) -> None:
    """Attach the detached mount ``from_fd`` onto ``to_path`` relative to ``to_fd`` (the fd itself if '')."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | (0 if to_path else MOVE_MOUNT_T_EMPTY_PATH)
    syscall("move_mount", ctypes.c_int(from_fd), b"", ctypes.c_int(to_fd), _bytes(to_path),
            ctypes.c_uint(flags), libc=libc)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(fd: int, attr_set: int, attr_clr: int = 0, recursive: bool = True,
                  libc: t.Optional[t.Any] = None) -> None:
    """Change mount attributes of the mount ``fd`` is on, and of every mount below it if ``recursive``."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    syscall("mount_setattr", ctypes.c_int(fd), b"", ctypes.c_uint(flags), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)), libc=libc)


def pivot_root(new_root: str, put_old: str, libc: t.Optional[t.Any] = None) -> None:
    """pivot_root(2); glibc has no wrapper, so it goes by syscall number."""
    syscall("pivot_root", _bytes(new_root), _bytes(put_old), libc=libc, context=new_root)


# --- identity and process attributes ----------------------------------------

def sethostname(name: str, libc: t.Optional[t.Any] = None) -> None:
    raw = name.encode()
    _check(get_libc(libc).sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)


def setdomainname(name: str, libc: t.Optional[t.Any] = None) -> None:
    raw = name.encode()
    _check(get_libc(libc).setdomainname(raw, ctypes.c_size_t(len(raw))), "setdomainname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0,
          libc: t.Optional[t.Any] = None) -> int:
    lib = get_libc(libc)
    return _check(lib.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                            ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
                  "prctl(%d)" % option)


def set_dumpable(flag: bool, libc: t.Optional[t.Any] = None) -> None:
    prctl(PR_SET_DUMPABLE, 1 if flag else 0, libc=libc)


def set_no_new_privs(libc: t.Optional[t.Any] = None) -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, libc=libc)


def set_pdeathsig(signum: int, libc: t.Optional[t.Any] = None) -> None:
    prctl(PR_SET_PDEATHSIG, signum, libc=libc)


def set_child_subreaper(libc: t.Optional[t.Any] = None) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, libc=libc)


def set_process_name(name: str, libc: t.Optional[t.Any] = None) -> None:
    """PR_SET_NAME: what ps and /proc/PID/comm show (15 bytes kept)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    lib = get_libc(libc)
    _check(lib.prctl(ctypes.c_int(PR_SET_NAME), buf, 0, 0, 0), "prctl(PR_SET_NAME)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0, libc: t.Optional[t.Any] = None) -> t.Tuple[int, int, int]:
    """Return (effective, permitted, inheritable) as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    syscall("capget", ctypes.byref(header), ctypes.byref(data), libc=libc)

    def joined(name: str) -> int:
        return getattr(data[0], name) | (getattr(data[1], name) << 32)

    return joined("effective"), joined("permitted"), joined("inheritable")


def capset(effective: int, permitted: int, inheritable: int, libc: t.Optional[t.Any] = None) -> None:
    """Set the three capability sets of the calling thread (64-bit masks)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index, shift in ((0, 0), (1, 32)):
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    syscall("capset", ctypes.byref(header), ctypes.byref(data), libc=libc)


# --- pidfd and fds -----------------------------------------------------------

def pidfd_open(pid: int, libc: t.Optional[t.Any] = None) -> int:
    """A pidfd for ``pid``: a handle that can never point at a recycled PID."""
    if hasattr(os, "pidfd_open"):
        return os.pidfd_open(pid)
    return syscall("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0), libc=libc, context=str(pid))


def pidfd_send_signal(pidfd: int, signum: int, libc: t.Optional[t.Any] = None) -> None:
    syscall("pidfd_send_signal", ctypes.c_int(pidfd), ctypes.c_int(signum), None, ctypes.c_uint(0),
            libc=libc)


def close_fds_above(lowest: int = 3, keep: t.Iterable[int] = ()) -> None:
    """Close every fd >= ``lowest`` except ``keep``: the clean slate before execve.

    close_range(2) is exact and fast; where it is missing (kernel < 5.9) fall
    back to closing what /proc/self/fd lists.
    """
    keep = sorted(set(fd for fd in keep if fd >= lowest))
    ranges = []
    start = lowest
    for fd in keep:
        if fd > start:
            ranges.append((start, fd - 1))
        start = fd + 1
    ranges.append((start, 0xFFFFFFFF))
    try:
        for first, last in ranges:
            syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0))
    except OSError:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd >= lowest and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass


# --- filesystems -------------------------------------------------------------

# include/uapi/linux/magic.h
NSFS_MAGIC = 0x6E736673
PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
TMPFS_MAGIC = 0x01021994
OVERLAYFS_SUPER_MAGIC = 0x794C7630
CGROUP2_SUPER_MAGIC = 0x63677270
DEVPTS_SUPER_MAGIC = 0x1CD1


def statfs_type(path: str, libc: t.Optional[t.Any] = None) -> int:
    """f_type of statfs(2) on ``path`` (follows symlinks, as statfs does)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit; f_type comes first
    _check(get_libc(libc).statfs(_bytes(path), buf), "statfs", path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def fstatfs_type(fd: int, libc: t.Optional[t.Any] = None) -> int:
    """f_type of fstatfs(2) on an open fd: the race-free form of statfs_type."""
    buf = ctypes.create_string_buffer(256)
    _check(get_libc(libc).fstatfs(ctypes.c_int(fd), buf), "fstatfs", "fd %d" % fd)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


# --- which mount a path is on (statx, Linux >= 5.8 for the mount id) --------------------------

# include/uapi/linux/fcntl.h and stat.h
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_STATX_DONT_SYNC = 0x4000
STATX_TYPE = 0x1
STATX_MNT_ID = 0x1000
STATX_ATTR_MOUNT_ROOT = 0x2000


class _Statx(ctypes.Structure):
    """The head of struct statx (include/uapi/linux/stat.h) up to stx_mnt_id; the kernel fills 256 bytes."""

    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32), ("attributes", ctypes.c_uint64),
                ("nlink", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("mode", ctypes.c_uint16), ("_spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64),
                ("size", ctypes.c_uint64), ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("_times", ctypes.c_uint8 * 64), ("rdev_major", ctypes.c_uint32), ("rdev_minor", ctypes.c_uint32),
                ("dev_major", ctypes.c_uint32), ("dev_minor", ctypes.c_uint32), ("mnt_id", ctypes.c_uint64),
                ("_rest", ctypes.c_uint8 * 104)]


@dataclass(frozen=True)
class MountStat:
    """What statx says about the mount a path is on.  ``mnt_id`` is None where the kernel (< 5.8) does not
    report it; ``mount_root`` is None where it cannot tell whether the path is the root of its mount."""

    mnt_id: t.Optional[int]
    mount_root: t.Optional[bool]


def statx_mount(path: str, dir_fd: int = AT_FDCWD, libc: t.Optional[t.Any] = None) -> MountStat:
    """statx(2) of ``path`` for its mount: never follows a final symlink, never triggers an automount, and
    never waits on a network or FUSE server (AT_STATX_DONT_SYNC): a mount point read from mountinfo can be
    anything."""
    buf = _Statx()
    flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC
    _check(get_libc(libc).statx(ctypes.c_int(dir_fd), _bytes(path), ctypes.c_int(flags),
                                ctypes.c_uint(STATX_TYPE | STATX_MNT_ID), ctypes.byref(buf)), "statx", path)
    mnt_id = buf.mnt_id if buf.mask & STATX_MNT_ID else None
    mount_root = bool(buf.attributes & STATX_ATTR_MOUNT_ROOT) if buf.attributes_mask & STATX_ATTR_MOUNT_ROOT \
        else None
    return MountStat(mnt_id, mount_root)


# --- path resolution and durability (used by _kernel.mounts and the layer store) ---

# include/uapi/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2 is 437 on every architecture (it was added after the syscall tables were unified).
_OPENAT2_NR = 437


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0,
            libc: t.Optional[t.Any] = None) -> int:
    """openat2(2) (Linux >= 5.6): open ``path`` relative to ``dirfd`` under ``resolve`` rules.

    RESOLVE_IN_ROOT resolves as if ``dirfd`` were "/" (absolute symlinks and
    ".." stay inside it): the race-free way to open a path inside a container
    rootfs.  Raises OSError(ENOSYS) on older kernels; callers fall back.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    lib = get_libc(libc)
    fn = lib.syscall
    fn.restype = ctypes.c_long
    ret = fn(ctypes.c_long(_OPENAT2_NR), ctypes.c_int(dirfd), _bytes(path), ctypes.byref(how),
             ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(ret, "openat2", path)


def syncfs(fd: int, libc: t.Optional[t.Any] = None) -> None:
    """syncfs(2): write back the whole filesystem holding ``fd`` (one call instead of an fsync per file)."""
    _check(get_libc(libc).syncfs(ctypes.c_int(fd)), "syncfs", "fd %d" % fd)
