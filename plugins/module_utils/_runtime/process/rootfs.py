# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container's filesystem, inside its new mount namespace.

``plan(spec)`` runs in the caller and turns the spec into plain operations;
``capture(plan)`` opens the host objects, also in the caller;
``setup_before_pivot(plan)`` and ``pivot(root_fd)`` run in the container's
init (protect.py does the rest after pivot_root).  The rules (each answers a
runc/crun CVE; see README "Container runtime"):

* "/" is made rslave recursively before anything is mounted, so no mount made
  here propagates to the host (LXC's /run/netns incident).
* Every in-container path is resolved by ``inroot.resolve()`` inside the
  root (openat2 RESOLVE_IN_ROOT, or a component walk with O_PATH|O_NOFOLLOW),
  and mounts go through /proc/self/fd/N of the resolved fd (CVE-2021-30465).  /proc, /sys and /dev, and everything
  under them, may contain no symlink at all (CVE-2019-16884, CVE-2026-41579).
  Procfs magic links (/proc/self/fd/N, /proc/1/cwd) are refused (CVE-2024-21626).
* Host objects (the rootfs, bind sources, device nodes) are captured by the
  caller as detached mount clones (open_tree) before fork, and attached
  inside; devices are checked to be the expected char device on that very
  clone (mknod is impossible in a user namespace anyway).
* The root is switched with pivot_root, and the old root detached; never chroot.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import fd_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import mountopts
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import (  # noqa: F401
    _MS_TO_ATTR, StepFailure, _fail, _new_file, locked_flags, resolve)  # StepFailure: also imported from here
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import ETC_FILE_ANNOTATIONS, Spec
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

_STRICT_TOPS = ("proc", "sys", "dev")
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = _O_PATH | os.O_DIRECTORY

# name, major, minor: the devices every container gets (OCI config-linux.md "Default Devices").
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
                   ("tty", 5, 0))
DEV_SYMLINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


# --- the plan (built in the parent) -------------------------------------------

@dataclass
class MountOp:
    destination: str
    kind: str  # bind | proc | sysfs | cgroup2 | fs
    fstype: t.Optional[str]
    source: t.Optional[str]
    flags: int
    data: t.Optional[str]
    propagation: t.List[int]
    recursive: bool
    strict: bool
    tree: t.Optional[int] = None  # bind: detached clone of the source, made by the caller
    is_dir: bool = True


@dataclass
class DeviceOp:
    name: str  # path relative to /dev
    kind: str  # 'c' or 'b'
    major: int
    minor: int
    source: str  # the host node bound in
    tree: t.Optional[int] = None
    file_mode: t.Optional[int] = None
    uid: t.Optional[int] = None
    gid: t.Optional[int] = None


@dataclass
class RootfsPlan:
    rootfs: str
    readonly: bool
    root_tree: t.Optional[int] = None  # detached recursive clone of the rootfs
    root_dir: t.Optional[int] = None  # O_PATH fd of the rootfs directory (the setup process chdirs there)
    sys_tree: t.Optional[int] = None  # a detached sysfs made by the setup process (see make_sysfs)
    mounts: t.List[MountOp] = field(default_factory=list)
    devices: t.List[DeviceOp] = field(default_factory=list)
    etc_files: t.List[t.Tuple[str, bytes]] = field(default_factory=list)
    dev_is_tmpfs: bool = False  # the spec mounts a tmpfs on /dev (init owns it)
    masked: t.List[str] = field(default_factory=list)
    readonly_paths: t.List[str] = field(default_factory=list)
    sysctl: t.List[t.Tuple[str, bytes]] = field(default_factory=list)
    propagation: t.Optional[int] = None
    userns: bool = False
    opened: t.List[int] = field(default_factory=list)
    created: t.List[str] = field(default_factory=list)  # mount targets made in the rootfs, parents first

    def close(self) -> None:
        """Close the captured host objects (detached clones vanish with their last fd)."""
        for fd in self.opened:
            try:
                os.close(fd)
            except OSError:
                pass
        self.opened = []


def plan(spec: Spec) -> RootfsPlan:
    result = RootfsPlan(rootfs=spec.root.path, readonly=spec.root.readonly,
                        userns=spec.linux.namespace("user") is not None)
    for mount in spec.mounts:
        options = mountopts.parse(mount.options, mount.type)
        if options.bind:
            kind = "bind"
        elif mount.type in ("proc", "sysfs"):
            kind = mount.type
        elif mount.type in ("cgroup", "cgroup2"):
            kind = "cgroup2"
        else:
            kind = "fs"
        top = mount.destination.split("/")[1]
        data = options.data_string
        if spec.linux.mount_label and kind == "fs":  # SELinux: the files of new filesystems get this label
            data = ",".join(filter(None, (data, 'context="%s"' % spec.linux.mount_label)))
        result.mounts.append(MountOp(
            destination=mount.destination, kind=kind,
            fstype="cgroup2" if kind == "cgroup2" else mount.type,
            source=mount.source, flags=options.flags, data=data,
            propagation=options.propagation, recursive=options.recursive,
            strict=top in _STRICT_TOPS or kind in ("proc", "sysfs", "cgroup2")))
    result.devices = [DeviceOp(name, "c", major, minor, "/dev/" + name) for name, major, minor in DEFAULT_DEVICES]
    for device in spec.linux.devices:
        if device.type not in ("c", "b"):
            raise StepFailure("devices", errno.EINVAL, "%s: only char and block devices can be provided"
                              % device.path)
        result.devices.append(DeviceOp(device.path[len("/dev/"):], device.type, device.major or 0,
                                       device.minor or 0, device.path, file_mode=device.file_mode,
                                       uid=device.uid, gid=device.gid))
    result.dev_is_tmpfs = any(op.destination == "/dev" and op.fstype == "tmpfs" and op.kind == "fs"
                              for op in result.mounts)
    for key, destination in sorted(ETC_FILE_ANNOTATIONS.items()):
        if key in spec.annotations:
            result.etc_files.append((destination, spec.annotations[key].encode()))
    result.masked = list(spec.linux.masked_paths)
    result.readonly_paths = list(spec.linux.readonly_paths)
    result.sysctl = [("/proc/sys/" + key.replace(".", "/"), value.encode())
                     for key, value in sorted(spec.linux.sysctl.items())]
    if spec.linux.rootfs_propagation:
        result.propagation = mountopts.PROPAGATION[spec.linux.rootfs_propagation]
    return result


# --- in the caller: capture the host objects --------------------------------------

def capture(p: RootfsPlan) -> None:
    """Open, as the caller (host root, host mount namespace), everything the container takes from the host.

    The rootfs, bind sources and device nodes become detached mount clones
    (open_tree OPEN_TREE_CLONE): no host mount table changes, and the
    container's init attaches exactly these objects.  That closes the race
    between checking a device and binding it, and lets a container root that
    is an unprivileged id outside use a rootfs or volume below a 0700
    directory it could not walk.  Raises StepFailure; ``p.close()`` releases.
    """
    def clone(path: str, recursive: bool, step: str, what: str) -> int:
        try:
            fd = libc.open_tree_clone(libc.AT_FDCWD, path, recursive=recursive)
        except OSError as exc:
            raise _fail(step, exc, "%s %s" % (what, path))
        p.opened.append(fd)
        return fd

    try:
        p.root_dir = os.open(p.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail("rootfs", exc, p.rootfs)
    p.opened.append(p.root_dir)
    try:  # the very directory just opened, whatever happens to the path meanwhile
        p.root_tree = libc.open_tree_clone(p.root_dir, "", recursive=True)
    except OSError as exc:
        raise _fail("rootfs", exc, "rootfs %s" % p.rootfs)
    p.opened.append(p.root_tree)
    for op in p.mounts:
        if op.kind == "bind":
            op.tree = clone(op.source or "", op.recursive, "mounts", "bind source")
            op.is_dir = stat.S_ISDIR(os.fstat(op.tree).st_mode)
    for device in p.devices:
        device.tree = clone(device.source, False, "devices", "host device")
        info = os.fstat(device.tree)
        is_kind = stat.S_ISCHR if device.kind == "c" else stat.S_ISBLK
        numbers = (os.major(info.st_rdev), os.minor(info.st_rdev))
        if not is_kind(info.st_mode) or numbers != (device.major, device.minor):
            raise StepFailure("devices", errno.ENODEV, "host %s is not the %s device %d:%d; refusing to use it"
                              % (device.source, "char" if device.kind == "c" else "block", device.major,
                                 device.minor))
        _check_node_attributes(device, info)
        try:  # a device node needs neither set-uid nor exec
            libc.mount_setattr(device.tree, libc.MOUNT_ATTR_NOSUID | libc.MOUNT_ATTR_NOEXEC, recursive=False)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise _fail("devices", exc, "harden %s" % device.source)
    _make_targets(p)


def _make_targets(p: RootfsPlan) -> None:
    """Create the mount targets that live in the rootfs itself, as the caller.

    Container root is an unprivileged id outside when there is a user
    namespace, and usually may not create files in a rootfs owned by host
    root; the caller can.  Targets below a filesystem the container mounts
    itself (/dev/pts on the /dev tmpfs) are left to init, which owns those.
    Resolution is the same symlink-safe walk, so nothing outside the rootfs
    is ever created.
    """
    for top in _STRICT_TOPS:
        _check_not_symlink(p.root_dir, top)
    covered: t.List[str] = []

    def make(destination: str, kind: str, strict: bool, step: str) -> None:
        if any(destination == c or destination.startswith(c + "/") for c in covered):
            return
        try:
            os.close(resolve(p.root_dir, destination, create=kind, strict=strict, created=p.created))
        except OSError as exc:
            raise _fail(step, exc, "mount target %s" % destination)

    for op in p.mounts:
        make(op.destination, "dir" if op.is_dir else "file", op.strict, "mounts")
        covered.append(op.destination)
    for device in p.devices:
        make("/dev/" + device.name, "file", True, "devices")
    if not any(c == "/dev" for c in covered):  # the image's own /dev: the symlinks go there now
        try:
            dev_fd = resolve(p.root_dir, "/dev", create="dir", strict=True, created=p.created)
        except OSError as exc:
            raise _fail("devices", exc, "/dev")
        try:
            p.created += _dev_symlinks(dev_fd)
        finally:
            os.close(dev_fd)
    missing = []
    for destination, _content in p.etc_files:  # every one checked before any is created
        try:
            os.close(etc_target(p.root_dir, destination))
        except StepFailure as exc:
            if exc.errno != errno.ENOENT:
                raise
            missing.append(destination)
    for destination in missing:
        os.close(etc_target(p.root_dir, destination, created=p.created))


def remove_created(root_dir: int, created: t.Sequence[str]) -> t.List[str]:
    """Undo ``_make_targets``: remove what it made in the rootfs, newest first, if it is still as made.

    An empty regular file, an empty directory or a symlink goes; anything
    since written to, filled or mounted on stays.  Paths are resolved inside
    the root with no symlink.  Returns the paths removed.
    """
    removed = []
    for path in reversed(list(created)):
        parent_path, name = os.path.split(path)
        try:
            parent = resolve(root_dir, parent_path, strict=True)
        except OSError:
            continue
        try:
            folder = os.open(fd_path(parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(parent)
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if info.st_dev != os.fstat(folder).st_dev:
                continue  # something is mounted there now
            if stat.S_ISDIR(info.st_mode):
                os.rmdir(name, dir_fd=folder)
            elif stat.S_ISLNK(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_size == 0):
                os.unlink(name, dir_fd=folder)
            else:
                continue
            removed.append(path)
        except OSError:
            continue  # gone already, not empty, or busy: leave it
        finally:
            os.close(folder)
    return removed


def _check_node_attributes(device: DeviceOp, info: os.stat_result) -> None:
    """The node is the host's own (bound, not made): a mode or owner that differs cannot be honoured."""
    for name, wanted, actual in (("fileMode", device.file_mode, stat.S_IMODE(info.st_mode)),
                                 ("uid", device.uid, info.st_uid), ("gid", device.gid, info.st_gid)):
        if wanted is not None and wanted != actual:
            detail = ("linux.devices %s: %s %r differs from the host node's %r, and the host node is what the "
                      "container gets" % (device.source, name, wanted, actual))
            raise StepFailure("devices", errno.EINVAL, detail)


def detached_fs(fstype: str, options: t.Sequence[t.Tuple[str, str]], attrs: int) -> int:
    """A new, detached filesystem instance (fsopen, fsconfig, fsmount): an fd no path reaches."""
    fs_fd = libc.fsopen(fstype)
    try:
        for key, value in options:
            libc.fsconfig_string(fs_fd, key, value)
        libc.fsconfig_create(fs_fd)
        return libc.fsmount(fs_fd, attrs)
    finally:
        os.close(fs_fd)


def make_sysfs(p: RootfsPlan) -> None:
    """In the setup process, still host root and already in the joined network namespace.

    A user namespace that does not own the network namespace may not mount
    sysfs (runc and crun then bind the host's /sys, which shows the host's
    interfaces).  A sysfs made here, before the user namespace, shows the
    container's own network namespace; init attaches it read-only.
    """
    try:
        p.sys_tree = detached_fs("sysfs", (), libc.MOUNT_ATTR_RDONLY | libc.MOUNT_ATTR_NOSUID
                                 | libc.MOUNT_ATTR_NODEV | libc.MOUNT_ATTR_NOEXEC)
    except OSError as exc:
        raise _fail("mounts", exc, "sysfs for the joined network namespace")


# --- in the container, before pivot_root ----------------------------------------

def setup_before_pivot(p: RootfsPlan) -> int:
    """Attach the rootfs, check it, mount everything, add devices and /etc files; return the root fd.

    The setup process's cwd is the rootfs directory in this mount namespace
    (it did fchdir(root_dir) before unsharing), so the clone is attached on
    top of it without walking any host path.
    """
    root_fd = p.root_tree
    try:
        libc.move_mount_fd(root_fd, libc.AT_FDCWD, ".")
    except OSError as exc:
        raise _fail("rootfs", exc, "attach %s" % p.rootfs)
    for top in _STRICT_TOPS:
        _check_not_symlink(root_fd, top)
    for op in p.mounts:
        _mount(root_fd, op, p)
    _add_devices(root_fd, p.devices)
    if p.etc_files:
        _add_etc_files(root_fd, p.etc_files, p.dev_is_tmpfs)
    return root_fd


def _check_not_symlink(root_fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise StepFailure("rootfs", errno.ELOOP if stat.S_ISLNK(info.st_mode) else errno.ENOTDIR,
                          "/%s in the rootfs is %s; it must be an ordinary directory" % (name, what))


def _mount(root_fd: int, op: MountOp, p: RootfsPlan) -> None:
    step = "mounts"
    target = None
    try:
        try:
            target = resolve(root_fd, op.destination, create="dir" if op.is_dir else "file", strict=op.strict)
        except OSError as exc:
            raise _fail(step, exc, "mount target %s" % op.destination)
        try:
            _mount_at(root_fd, op, target, p)
        except OSError as exc:
            raise _fail(step, exc, "%s on %s" % (op.fstype or "bind of %s" % op.source, op.destination))
    finally:
        if target is not None:
            os.close(target)


def _mount_at(root_fd: int, op: MountOp, target: int, p: RootfsPlan) -> None:
    where = fd_path(target)
    if op.kind == "bind":
        if op.tree is None:
            raise OSError(errno.EBADF, "the bind source was not captured")
        libc.move_mount_fd(op.tree, target)
        _after_bind(op.tree, op.flags, op.recursive)
    elif op.kind == "sysfs" and p.sys_tree is not None:
        libc.move_mount_fd(p.sys_tree, target)
        p.sys_tree = None  # a mount attaches once; a second /sys mount gets a plain sysfs
    else:
        source = op.source or op.fstype
        libc.mount(source, where, op.fstype, op.flags, op.data)
    if op.propagation:
        top = resolve(root_fd, op.destination, strict=op.strict)
        try:
            for flag in op.propagation:
                libc.mount(None, fd_path(top), None, flag)
        finally:
            os.close(top)


def _after_bind(top: int, flags: int, recursive: bool) -> None:
    """Apply ro/nosuid/... to an attached bind mount ``top`` (recursively for rbind when the kernel can)."""
    wanted = flags & mountopts.PER_MOUNT_FLAGS
    if not wanted:
        return
    if recursive and wanted & (libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC):
        attrs = 0
        for ms_flag, attr in _MS_TO_ATTR:
            if wanted & ms_flag:
                attrs |= attr
        try:
            libc.mount_setattr(top, attrs, recursive=True)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # before Linux 5.12 only the top mount gets the flags
                raise
    libc.mount(None, fd_path(top), None, libc.MS_REMOUNT | libc.MS_BIND | wanted | locked_flags(top))


def _add_devices(root_fd: int, devices: t.List[DeviceOp]) -> None:
    step = "devices"
    try:
        dev_fd = resolve(root_fd, "/dev", create="dir", strict=True)
    except OSError as exc:
        raise _fail(step, exc, "/dev")
    try:
        for device in devices:
            _bind_device(dev_fd, device)
        _dev_symlinks(dev_fd)
    finally:
        os.close(dev_fd)


def _dev_symlinks(dev_fd: int) -> t.List[str]:
    """The standard /dev symlinks; returns the paths made."""
    made = []
    for name, target in DEV_SYMLINKS:
        try:
            os.symlink(target, name, dir_fd=dev_fd)
            made.append("/dev/" + name)
        except FileExistsError:
            pass  # the image has its own (or the caller made them); never followed here
        except OSError as exc:
            raise _fail("devices", exc, "symlink /dev/%s" % name)
    return made


def _bind_device(dev_fd: int, device: DeviceOp) -> None:
    """Attach the caller's verified clone of the host node onto /dev/NAME (a file made for it)."""
    step = "devices"
    try:
        target = _new_file(dev_fd, device.name) or resolve(dev_fd, device.name, create="file", strict=True)
    except OSError as exc:
        raise _fail(step, exc, "/dev/%s" % device.name)
    try:
        if stat.S_ISDIR(os.fstat(target).st_mode):
            raise StepFailure(step, errno.EISDIR, "/dev/%s in the rootfs is a directory" % device.name)
        if device.tree is None:
            raise OSError(errno.EBADF, "the host device was not captured")
        libc.move_mount_fd(device.tree, target)
    except OSError as exc:
        raise _fail(step, exc, "attach %s" % device.source)
    finally:
        os.close(target)


_STAGING = ".kernelbox-etc"


def _add_etc_files(root_fd: int, files: t.List[t.Tuple[str, bytes]], dev_is_tmpfs: bool) -> None:
    """Each file on a private 1 MiB tmpfs, then bound onto its place in /etc: the rootfs is never written.

    The tmpfs is made detached (fsmount).  Binding single files out of it
    needs it attached somewhere on kernels before 6.x (open_tree on a detached
    mount is EINVAL on 6.1): it is attached on a directory made for the
    purpose in the container's own /dev tmpfs, and detached and removed again
    once the files are bound.  Without a /dev tmpfs, open_tree clones each
    file straight from the detached mount (newer kernels only).
    """
    step = "etc files"
    try:
        mnt_fd = detached_fs("tmpfs", (("size", "1m"), ("mode", "0755")),
                             libc.MOUNT_ATTR_NOSUID | libc.MOUNT_ATTR_NODEV | libc.MOUNT_ATTR_NOEXEC)
    except OSError as exc:
        raise _fail(step, exc, "private tmpfs")
    dev_fd = None
    try:
        for destination, content in files:
            try:
                fd = os.open(os.path.basename(destination), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o644, dir_fd=mnt_fd)
                try:
                    os.write(fd, content)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _fail(step, exc, destination)
        if dev_is_tmpfs:
            try:
                dev_fd = resolve(root_fd, "/dev", strict=True)
                os.mkdir(_STAGING, 0o700, dir_fd=dev_fd)
                staging = os.open(_STAGING, _O_DIR, dir_fd=dev_fd)
                try:
                    libc.move_mount_fd(mnt_fd, staging)
                finally:
                    os.close(staging)
            except OSError as exc:
                raise _fail(step, exc, "staging in /dev")
        for destination, _content in files:
            try:
                _bind_etc_file(root_fd, mnt_fd, destination, attached=dev_is_tmpfs)
            except OSError as exc:
                raise _fail(step, exc, destination)
        if dev_fd is not None:
            try:
                libc.umount2(fd_path(mnt_fd), libc.MNT_DETACH)
                os.rmdir(_STAGING, dir_fd=dev_fd)
            except OSError as exc:
                raise _fail(step, exc, "remove the staging in /dev")
    finally:
        os.close(mnt_fd)
        if dev_fd is not None:
            os.close(dev_fd)


def etc_target(root_fd: int, destination: str, created: t.Optional[t.List[str]] = None) -> int:
    """An O_PATH fd of /etc/hosts (hostname, resolv.conf) in the root: a regular file reached with no symlink.

    These files are provided by kernelbox, so the image has no say in where
    they go: a link, anywhere on the way, is refused rather than followed
    (``/etc/hosts -> /proc/sys/kernel/core_pattern`` or ``-> /dev/sda`` would
    otherwise have the file bound over whatever it names), and so is anything
    that is not a regular file.  With ``created`` a missing one (and /etc) is
    made, empty, as the mount point, and recorded there.
    """
    try:
        fd = resolve(root_fd, destination, create="file" if created is not None else None, strict=True,
                     created=created)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StepFailure("etc files", errno.ELOOP, "%s in the rootfs is a symlink or goes through one; kernelbox "
                              "provides this file itself and never follows a link there (replace the link with a "
                              "regular file in the image)" % destination)
        raise _fail("etc files", exc, destination)
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise StepFailure("etc files", errno.EINVAL, "%s in the rootfs is %s, not a regular file; kernelbox binds "
                          "its own file there and refuses to cover anything else"
                          % (destination, _KIND_NAMES.get(kind, "not a regular file")))
    return fd


_KIND_NAMES = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symlink"}


def _bind_etc_file(root_fd: int, mnt_fd: int, destination: str, attached: bool) -> None:
    target = etc_target(root_fd, destination)
    try:
        name = os.path.basename(destination)
        if attached:
            source = os.open(name, _O_PATH, dir_fd=mnt_fd)
            try:
                libc.mount(fd_path(source), fd_path(target), None, libc.MS_BIND)
            finally:
                os.close(source)
        else:
            tree = libc.open_tree_clone(mnt_fd, name, recursive=False)
            try:
                libc.move_mount_fd(tree, target)
            finally:
                os.close(tree)
    finally:
        os.close(target)


def bind_console(root_fd: int, slave: int) -> None:
    """Bind the terminal's slave onto /dev/console (a file made for it; no symlink on the way)."""
    target = resolve(root_fd, "/dev/console", create="file", strict=True)
    try:
        if not stat.S_ISREG(os.fstat(target).st_mode) and not stat.S_ISCHR(os.fstat(target).st_mode):
            raise OSError(errno.EINVAL, "/dev/console in the rootfs is neither a file nor a device node")
        tree = libc.open_tree_clone(slave, "", recursive=False)
        try:
            libc.move_mount_fd(tree, target)
        finally:
            os.close(tree)
    finally:
        os.close(target)


def pivot(root_fd: int) -> None:
    """pivot_root(".", ".") in the new root, then detach the old root stacked on top of it."""
    try:
        os.fchdir(root_fd)
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    except OSError as exc:
        raise _fail("pivot_root", exc, "switch to %s" % "the container root")
    finally:
        os.close(root_fd)
