# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what a launch would refuse, found before anything is written.

``check(spec)`` looks at the host the way the launcher will, read-only, so a
module can fail early with a message naming the option instead of persisting
a container whose start fails: the rootfs's /proc, /sys and /dev are no
symlinks, bind sources and joined namespaces exist, the working directory
exists and the command is found.  Paths inside the rootfs are resolved inside
it (inroot.resolve: RESOLVE_IN_ROOT, no magic links).  What a mount will
cover (a volume on the cwd, a tmpfs) is not judged: it is not there yet.
The launcher still checks everything again; this only moves the common
mistakes in front of any write.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import resolve
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import Spec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_STRICT_TOPS = ("proc", "sys", "dev")


def check(spec: "Spec") -> None:
    """Raise ValidationError for what the launcher would refuse about the host or the rootfs."""
    for mount in spec.mounts:
        if mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options:
            if mount.source and not os.path.exists(mount.source):
                raise ValidationError("mounts: the source of the bind mount onto %s, %s, does not exist on the host"
                                      % (mount.destination, mount.source))
    for namespace in spec.linux.namespaces:
        if namespace.path:
            _check_namespace_file(namespace.type, namespace.path)
    try:
        root = os.open(spec.root.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError("root.path: %s: %s" % (spec.root.path, exc.strerror))
    try:
        covered = [m.destination for m in spec.mounts]
        for top in _STRICT_TOPS:
            try:
                info = os.stat(top, dir_fd=root, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                raise ValidationError("root.path: /%s in the rootfs %s is a symlink; the launcher refuses it "
                                      "(it could point the container's /%s anywhere)" % (top, spec.root.path, top))
        _check_cwd(root, spec, covered)
        _check_command(root, spec, covered)
    finally:
        os.close(root)


def _check_namespace_file(kind: str, path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError("linux.namespaces: the %s namespace to join, %s, cannot be opened: %s%s"
                              % (kind, path, exc.strerror,
                                 " (create it first with kernelbox.containers.netns)" if kind == "network" else ""))
    try:
        if libc.fstatfs_type(fd) != libc.NSFS_MAGIC:
            raise ValidationError("linux.namespaces: %s is not a namespace file (a bound /proc/PID/ns/* entry)"
                                  % path)
    finally:
        os.close(fd)


def _under(path: str, covered: t.Sequence[str]) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in covered)


def _check_cwd(root: int, spec: "Spec", covered: t.Sequence[str]) -> None:
    cwd = spec.process.cwd
    if _under(cwd, covered):
        return
    try:
        fd = resolve(root, cwd)
    except OSError as exc:
        raise ValidationError("process.cwd: %s cannot be entered in the rootfs %s: %s"
                              % (cwd, spec.root.path, exc.strerror or exc))
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ValidationError("process.cwd: %s in the rootfs %s is not a directory" % (cwd, spec.root.path))
    finally:
        os.close(fd)


def _check_command(root: int, spec: "Spec", covered: t.Sequence[str]) -> None:
    command = spec.process.args[0]
    if "/" in command:
        candidates = [command if command.startswith("/") else os.path.join(spec.process.cwd, command)]
    else:
        env = dict(entry.partition("=")[::2] for entry in spec.process.env)
        candidates = [os.path.join(folder or ".", command) for folder in env.get("PATH", DEFAULT_PATH).split(":")]
    for candidate in candidates:
        if not candidate.startswith("/") or _under(candidate, covered):
            return  # relative to a cwd, or provided by a mount: only the launch can tell
        try:
            fd = resolve(root, candidate)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            reason = exc.strerror or exc
            raise ValidationError("process.args[0]: %s in the rootfs %s: %s" % (candidate, spec.root.path, reason))
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return
        finally:
            os.close(fd)
    where = candidates[0] if "/" in command else "PATH (%s)" % ":".join(os.path.dirname(c) for c in candidates)
    raise ValidationError("process.args[0]: %s is not found in the rootfs %s (looked in %s)"
                          % (command, spec.root.path, where))
