# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: safe paths and mount helpers shared by overlay and the runtime.

Paths are resolved component by component from "/" with
``O_PATH|O_DIRECTORY|O_NOFOLLOW``: a symlink anywhere on the way is refused
(``UnsafePath``), never followed, so a check made on a path is a check on
what the held fd points at.  Mounts are made *on the fd*
(``/proc/self/fd/N`` as target), so swapping a component for a symlink after
the check cannot redirect a mount onto /etc.

Public helpers (all raise OSError or KernelboxError, never touch Ansible):

* ``open_dir(path, create=False)`` -> O_PATH fd of a directory, no symlinks on the way
* ``deepest_existing(path)`` -> (fd, missing components) for paths still to be created
* ``open_in_root(root_fd, path, flags)`` -> fd of ``path`` resolved *inside* a rootfs (openat2 RESOLVE_IN_ROOT)
* ``fd_path(fd)``, ``mount_id_of(fd)``, ``mount_id_at(path)``, ``is_mount_point(path)``, ``same_inode(fd, path)``
* ``visible_mounts()``, ``top_mount(path)``, ``mounts_below(path)``, ``forbidden_mount_point(path)``

Mountinfo also lists mounts this mount namespace cannot reach: a mount hidden
by another mounted over one of its ancestors (a tmpfs over /run hides the
host's /run/netns, which mountinfo still prints at "/run/netns").  A path
string from mountinfo is therefore never trusted alone: ``visible_mounts``
keeps a mount only if statx of its mount point lands on that very mount (or on
a mount stacked on it), and every lookup by path here works on that list.
* ``mount_on(fd, ...)``, ``bind_mount(src_fd, dst_fd, ...)``, ``unmount(path)``
* ``users_of_mount(mount)`` -> processes using a mount (cwd, root, open files, mmaps, other namespaces)
* ``remove_tree(path)`` -> delete a directory tree without following symlinks or crossing mounts
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.procfs import MountInfo, read_mountinfo
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import path_is_within

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Never mount over these (or anything under the virtual trees): doing so would hide the host's own system.
FORBIDDEN_MOUNT_POINTS = frozenset([
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
    "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share",
    "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp",
])
VIRTUAL_TREES = ("/proc", "/sys", "/dev")


class UnsafePath(KernelboxError):
    """A path that cannot be used safely: a symlink or a non-directory on the way."""


def fd_path(fd: int) -> str:
    """The magic link naming what ``fd`` is open on; mount(2) and *at calls resolve it without a lookup."""
    return "/proc/self/fd/%d" % fd


def _components(path: str) -> t.List[str]:
    return [part for part in path.split("/") if part]


def _explain(parent_fd: int, name: str, shown: str) -> UnsafePath:
    try:
        info = os.lstat(name, dir_fd=parent_fd)
    except OSError as exc:
        return UnsafePath("%s cannot be inspected: %s" % (shown, exc.strerror))
    if stat.S_ISLNK(info.st_mode):
        return UnsafePath("%s is a symlink (to %s); symlinks are not followed here, give the real path"
                          % (shown, os.readlink(name, dir_fd=parent_fd)))
    return UnsafePath("%s is not a directory" % shown)


def open_dir(path: str, create: bool = False, mode: int = 0o755) -> int:
    """O_PATH fd of directory ``path`` (absolute, normalised), refusing symlinks on the way.

    With ``create``, missing components are made with ``mode`` (mkdirat, on the
    parent fd, so the new directory is exactly where the check was made).
    """
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    try:
        for name in _components(path):
            walked += "/" + name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "%s does not exist" % walked, walked)
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: the open below checks what it is
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise _explain(fd, name, walked)
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def deepest_existing(path: str) -> t.Tuple[int, t.List[str]]:
    """(O_PATH fd of the deepest existing directory on ``path``, the components still missing).

    Used to learn which filesystem a directory *would* be created on.
    """
    fd = os.open("/", _DIR_FLAGS)
    parts = _components(path)
    walked = ""
    try:
        for index, name in enumerate(parts):
            walked += "/" + name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return fd, parts[index:]
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise _explain(fd, name, walked)
                raise
            os.close(fd)
            fd = child
        return fd, []
    except BaseException:
        os.close(fd)
        raise


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """Open ``path`` as the container would see it: resolved inside ``root_fd``.

    Absolute symlinks and '..' are clamped to the root (openat2
    RESOLVE_IN_ROOT), and /proc magic links are refused, so an image whose
    /proc is a symlink to the host's /etc can never redirect a mount.  Needs
    Linux >= 5.6; older kernels get a clear error rather than a weaker check.
    """
    try:
        return libc.openat2(root_fd, path.lstrip("/") or ".", flags, libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS,
                            mode)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise KernelboxError("resolving %s inside a rootfs needs openat2 (Linux >= 5.6)" % path)
        raise


def mount_id_of(fd: int) -> int:
    """The mount id (as in mountinfo) of the mount ``fd`` is on, from /proc/self/fdinfo."""
    with open("/proc/self/fdinfo/%d" % fd, "r") as handle:
        for line in handle:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.EINVAL, "no mnt_id in fdinfo", "/proc/self/fdinfo/%d" % fd)


def mount_id_at(path: str) -> t.Optional[int]:
    """The id (as in mountinfo) of the mount that ``path`` reaches in this mount namespace, or None if nothing
    is there.  A final symlink is not followed and an automount point is not triggered."""
    try:
        found = libc.statx_mount(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENAMETOOLONG):
            return None
        if exc.errno != errno.ENOSYS:
            raise
        found = libc.MountStat(None, None)
    if found.mnt_id is not None:
        return found.mnt_id
    try:  # Linux < 5.8: statx has no mount id, fdinfo has
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return mount_id_of(fd)
    finally:
        os.close(fd)


def is_mount_point(path: str) -> bool:
    """Whether a mount is visible at exactly ``path`` in this mount namespace (a bind of a directory onto itself
    included); never judged by a mountinfo path string, which may name a mount hidden under another."""
    path = os.path.normpath(path)
    try:
        found = libc.statx_mount(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        if exc.errno != errno.ENOSYS:
            raise
        found = libc.MountStat(None, None)
    if found.mount_root is not None:
        return found.mount_root
    if path == "/":
        return True
    here = mount_id_at(path)
    return here is not None and here != mount_id_at(os.path.dirname(path))


def visible_mounts(all_mounts: t.Optional[t.List[MountInfo]] = None,
                   reached: t.Callable[[str], t.Optional[int]] = mount_id_at) -> t.List[MountInfo]:
    """The mounts of ``all_mounts`` (default: this namespace's mountinfo) that this namespace can reach.

    A mount is reached when ``reached(mount point)`` (statx) names it.  A mount stacked under a reached one is
    kept too (it holds the one on top, and unmounting the top uncovers it).  Anything else is hidden under a
    mount made over its path or an ancestor: its path strings name what this namespace no longer sees there.
    Order is kept (mountinfo lists a parent before its children).
    """
    listed = all_mounts if all_mounts is not None else read_mountinfo()
    parents = {m.mount_id: m.parent_id for m in listed}
    live: t.Set[int] = set()
    for candidate in listed:
        if candidate.mount_id in live or reached(candidate.mount_point) != candidate.mount_id:
            continue
        mount_id: t.Optional[int] = candidate.mount_id
        while mount_id is not None and mount_id not in live:
            live.add(mount_id)
            mount_id = parents.get(mount_id)
    return [m for m in listed if m.mount_id in live]


def same_inode(fd: int, path: str) -> bool:
    """Whether ``path`` (resolved again, no symlinks) is still the directory ``fd`` holds."""
    try:
        again = open_dir(path)
    except (OSError, KernelboxError):
        return False
    try:
        a, b = os.fstat(fd), os.fstat(again)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    finally:
        os.close(again)


def forbidden_mount_point(path: str) -> t.Optional[str]:
    """Why ``path`` must never be a mount target, or None."""
    if path in FORBIDDEN_MOUNT_POINTS:
        return "%s is a system directory" % path
    for tree in VIRTUAL_TREES:
        if path_is_within(path, tree):
            return "%s is inside %s, a kernel interface" % (path, tree)
    return None


def top_mount(path: str, mounts: t.Optional[t.List[MountInfo]] = None) -> t.Optional[MountInfo]:
    """The mount visible at exactly ``path`` (the last one stacked there), or None.

    ``mounts`` must come from ``visible_mounts`` (the default): a hidden mount listed at ``path`` is not there.
    """
    stacked = [m for m in (mounts if mounts is not None else visible_mounts()) if m.mount_point == path]
    return stacked[-1] if stacked else None


def mounts_below(path: str, mounts: t.Optional[t.List[MountInfo]] = None) -> t.List[MountInfo]:
    """Visible mounts strictly inside ``path`` (they keep a mount at ``path`` busy); ``mounts`` as for top_mount."""
    return [m for m in (mounts if mounts is not None else visible_mounts())
            if m.mount_point != path and path_is_within(m.mount_point, path)]


def mount_on(target_fd: int, source: str, fstype: str, flags: int = 0, data: t.Optional[str] = None) -> None:
    """mount(2) onto the directory held by ``target_fd`` (no path lookup at mount time)."""
    libc.mount(source, fd_path(target_fd), fstype, flags, data)


def bind_mount(source_fd: int, target_fd: int, recursive: bool = True, readonly: bool = False,
               extra_flags: int = 0) -> None:
    """Bind ``source_fd`` onto ``target_fd``; read-only needs a second remount call, as the kernel wants."""
    flags = libc.MS_BIND | (libc.MS_REC if recursive else 0)
    libc.mount(fd_path(source_fd), fd_path(target_fd), None, flags)
    if readonly or extra_flags:
        libc.mount(None, fd_path(target_fd), None,
                   libc.MS_BIND | libc.MS_REMOUNT | (libc.MS_RDONLY if readonly else 0) | extra_flags)


def unmount(path: str, detach: bool = False) -> None:
    """umount2(path) without following a final symlink; EBUSY propagates (callers name the users)."""
    libc.umount2(path, libc.UMOUNT_NOFOLLOW | (libc.MNT_DETACH if detach else 0))


@dataclass
class MountUser:
    """A process that keeps a mount busy, and how."""

    pid: int
    name: str
    uses: t.List[str] = field(default_factory=list)

    def describe(self) -> str:
        return "%d (%s: %s)" % (self.pid, self.name, ", ".join(self.uses))


def _readlink(path: str) -> t.Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _on_device(path: str, device: int) -> bool:
    try:
        return os.stat(path).st_dev == device
    except OSError:
        return False


def _process_uses(pid: int, mount_point: str, device: int) -> t.List[str]:
    base = "/proc/%d" % pid
    uses = []
    # Directories on an overlay always report the overlay's st_dev, in every mount namespace.
    if _on_device(base + "/root", device):
        uses.append("root")
    if _on_device(base + "/cwd", device):
        uses.append("cwd %s" % (_readlink(base + "/cwd") or "?"))
    try:
        fds = os.listdir(base + "/fd")
    except OSError:
        fds = []
    for fd in fds:
        target = _readlink("%s/fd/%s" % (base, fd))
        if target is None or not target.startswith("/"):
            continue  # sockets, pipes, anon inodes
        if path_is_within(target, mount_point) or _on_device("%s/fd/%s" % (base, fd), device):
            uses.append("open %s" % target)
    try:
        with open(base + "/maps", "r", errors="replace") as handle:
            mapped = sorted({line.split(None, 5)[5].strip() for line in handle if len(line.split(None, 5)) == 6})
    except OSError:
        mapped = []
    uses += ["mmap %s" % path for path in mapped if path.startswith("/") and path_is_within(path, mount_point)]
    return uses


def _namespace_holds(pid: int, device: int) -> bool:
    try:
        mounts = read_mountinfo(pid)
    except (OSError, ValueError):
        return False
    return any(os.makedev(m.major, m.minor) == device for m in mounts)


def users_of_mount(mount: MountInfo, include_namespace_copies: bool = False) -> t.List[MountUser]:
    """Processes using ``mount``: root, cwd, open files or mmaps on it.

    Checks compare the device number, so a container that pivot_root-ed into
    the mount (a different mount namespace) is found too.  With
    ``include_namespace_copies``, processes of other mount namespaces that
    merely hold a copy of the mount are listed as well (they do not make the
    unmount fail, but keep the filesystem alive); each namespace's mountinfo
    is read once.
    """
    import psutil  # lazily: see _glue/deps.py

    device = os.makedev(mount.major, mount.minor)
    own_mnt_ns = os.stat("/proc/self/ns/mnt").st_ino
    holds: t.Dict[int, bool] = {}
    users = []
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        uses = _process_uses(pid, mount.mount_point, device)
        if not uses and include_namespace_copies:
            try:
                namespace = os.stat("/proc/%d/ns/mnt" % pid).st_ino
            except OSError:
                continue
            if namespace != own_mnt_ns:
                if namespace not in holds:
                    holds[namespace] = _namespace_holds(pid, device)
                if holds[namespace]:
                    uses.append("holds a copy of the mount in mount namespace %d" % namespace)
        if uses:
            try:
                name = psutil.Process(pid).name()
            except psutil.Error:
                continue  # exited meanwhile
            users.append(MountUser(pid, name, uses))
    return users


def describe_users(users: t.Sequence[MountUser], limit: int = 10) -> str:
    text = "; ".join(user.describe() for user in users[:limit])
    if len(users) > limit:
        text += "; and %d more" % (len(users) - limit)
    return text


def remove_tree(path: str) -> None:
    """Remove directory ``path`` and everything in it (nothing to do if it does not exist).

    Never follows a symlink (entries are unlinked, not resolved), never
    descends into another mount, bind mounts of the same filesystem included
    (it fails instead: something is mounted inside), and works on dir fds so a
    rename racing the walk cannot redirect it.  If ``path`` itself is a mount
    point, its contents are removed and the empty directory stays.
    """
    parent_path, name = os.path.dirname(path) or "/", os.path.basename(path)
    if not name:
        raise KernelboxError("refusing to remove /")
    try:
        parent = open_dir(parent_path)
    except FileNotFoundError:
        return
    try:
        remove_tree_at(parent, name, path)
    finally:
        os.close(parent)


def remove_tree_at(parent_fd: int, name: str, shown: str = "") -> None:
    """``remove_tree`` for entry ``name`` of the directory ``parent_fd`` (any fd type, O_PATH included).

    A non-directory entry is simply unlinked.  Iterative, so a hostile
    100000-level tree cannot exhaust the Python stack.
    """
    shown = shown or name
    try:
        info = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    mnt_id = mount_id_of(top)
    stack = [(top, shown, os.scandir(top))]
    try:
        while stack:
            dir_fd, where, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                entries.close()
                os.close(dir_fd)
                if stack:
                    os.rmdir(os.path.basename(where), dir_fd=stack[-1][0])
                continue
            try:
                entry_info = os.lstat(entry.name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(entry_info.st_mode):
                os.unlink(entry.name, dir_fd=dir_fd)
                continue
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            child_where = "%s/%s" % (where, entry.name)
            try:
                if mount_id_of(child) != mnt_id:
                    raise KernelboxError("refusing to remove %s: another filesystem is mounted there" % child_where)
                stack.append((child, child_where, os.scandir(child)))
            except BaseException:
                os.close(child)
                raise
    finally:
        for dir_fd, _where, entries in stack:
            entries.close()
            os.close(dir_fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno != errno.EBUSY:  # a mount point: its contents are gone, the directory stays
            raise
