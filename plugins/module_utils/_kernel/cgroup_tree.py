# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the cgroup v2 tree - where it is mounted, contained paths, group handles.

Use it through _kernel/cgroup.py, which re-exports these names with the rest
of the public API.  Nothing here writes to the cgroup filesystem.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import visible_mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import NAME_MAX, ValidationError

DEFAULT_PARENT = "kernelbox"
FIX_HYBRID = ("boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line (for example add it to "
              "GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot) so that every controller "
              "moves to cgroup v2")


@dataclass(frozen=True)
class Hierarchy:
    """The cgroup2 mount this host offers."""

    mount: str
    layout: str  # "unified" (pure cgroup v2) or "hybrid" (v1 hierarchies mounted too)
    controllers: t.FrozenSet[str]  # the root's cgroup.controllers
    v1_controllers: t.FrozenSet[str] = frozenset()  # controllers bound to v1 hierarchies

    def root(self) -> "Cgroup":
        return Cgroup(self, ())


def hierarchy_from_mounts(mounts: t.Sequence[procfs.MountInfo],
                          read_controllers: t.Callable[[str], str]) -> Hierarchy:
    """Pick the cgroup2 mount from parsed mountinfo (pure apart from ``read_controllers``)."""
    cgroup2 = [m for m in mounts if m.fstype == "cgroup2" and m.root == "/"]
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    v1_controllers = frozenset(opt for m in v1 for opt in m.super_options
                               if opt not in ("rw", "ro") and "=" not in opt)
    if not cgroup2:
        partial = [m for m in mounts if m.fstype == "cgroup2"]
        if partial:
            raise KernelboxError("cgroup2 is mounted here only as the subtree %s (at %s), as inside a container "
                                 "without its own cgroup namespace; kernelbox needs the whole hierarchy or a "
                                 "cgroup namespace" % (partial[0].root, partial[0].mount_point))
        raise KernelboxError("no cgroup2 filesystem is mounted on this host (cgroup v1 only); kernelbox needs "
                             "cgroup v2: " + FIX_HYBRID, controllers_missing=sorted(v1_controllers))
    preferred = {"/sys/fs/cgroup": 0, "/sys/fs/cgroup/unified": 1}
    chosen = sorted(cgroup2, key=lambda m: preferred.get(m.mount_point, 2))[0]
    controllers = frozenset(read_controllers(chosen.mount_point).split())
    return Hierarchy(chosen.mount_point, "hybrid" if v1 else "unified", controllers, v1_controllers)


def find_hierarchy() -> Hierarchy:
    """The cgroup2 mount from /proc/self/mountinfo, checked to really be cgroup2."""
    hierarchy = hierarchy_from_mounts(visible_mounts(), lambda mount: _read(mount, "cgroup.controllers"))
    if libc.statfs_type(hierarchy.mount) != libc.CGROUP2_SUPER_MAGIC:
        raise KernelboxError("%s is listed as cgroup2 in mountinfo but is not a cgroup2 filesystem"
                             % hierarchy.mount)
    return hierarchy


def missing_controllers_message(hierarchy: Hierarchy, needed: t.Mapping[str, t.Iterable[str]]) -> t.Optional[str]:
    """None when every needed controller is available, else the error text (what, why, the fix)."""
    missing = sorted(set(needed) - hierarchy.controllers)
    if not missing:
        return None
    uses = "; ".join("%s for %s" % (c, ", ".join(sorted(needed[c]))) for c in missing)
    text = ("cgroup v2 at %s lacks the controller%s %s (needed: %s); it offers only: %s."
            % (hierarchy.mount, "s" if len(missing) > 1 else "", ", ".join(missing), uses,
               " ".join(sorted(hierarchy.controllers)) or "none"))
    in_v1 = [c for c in missing if c in hierarchy.v1_controllers]
    if hierarchy.layout == "hybrid" or in_v1:
        text += (" This host uses the hybrid cgroup layout, where %s belong%s to cgroup v1 hierarchies. Fix: %s."
                 % (", ".join(in_v1 or missing), "s" if len(in_v1 or missing) == 1 else "", FIX_HYBRID))
    else:
        text += (" The kernel does not provide them or they are disabled (cgroup_disable= on the kernel "
                 "command line); enable them in the kernel configuration or boot options.")
    return text


def require_controllers(hierarchy: Hierarchy, needed: t.Mapping[str, t.Iterable[str]]) -> None:
    message = missing_controllers_message(hierarchy, needed)
    if message:
        raise KernelboxError(message, controllers_missing=sorted(set(needed) - hierarchy.controllers))


# --- paths -------------------------------------------------------------------

def path_parts(value: t.Any, option: str, allow_empty: bool = False) -> t.Tuple[str, ...]:
    """Split a cgroup path into validated components; '..', '.', empty inner components and NUL are refused."""
    if not isinstance(value, str):
        raise ValidationError("%s: a cgroup path must be a string, got %r" % (option, value))
    text = value.strip("/") if value.strip() == value else None
    if text is None:
        raise ValidationError("%s: %r has leading or trailing whitespace" % (option, value))
    if text == "":
        if allow_empty:
            return ()
        raise ValidationError("%s: must name a group, got %r" % (option, value))
    parts = tuple(text.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise ValidationError("%s: %r contains the component %r; cgroup paths may not climb, repeat '/' or "
                                  "use '.'" % (option, value, part))
        if "\0" in part or "\n" in part:
            raise ValidationError("%s: %r contains a NUL or newline" % (option, value))
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise ValidationError("%s: component %r is longer than %d bytes" % (option, part[:40], NAME_MAX))
    return parts


def group_parts(path: t.Any, parent: t.Any = DEFAULT_PARENT) -> t.Tuple[t.Tuple[str, ...], int]:
    """(components from the mount root, how many of them are the parent).  Pure; no filesystem access."""
    parent_parts = path_parts(parent, "parent", allow_empty=True)
    parts = path_parts(path, "path")
    if isinstance(path, str) and path.startswith("/"):
        # An absolute path is root-relative, like /proc/PID/cgroup: it must lie *inside* the parent,
        # compared component by component ('/foo2/x' is not inside 'foo').
        if parts[:len(parent_parts)] != parent_parts or len(parts) <= len(parent_parts):
            raise ValidationError("path: %r is outside the parent /%s; give a path below the parent"
                                  % (path, "/".join(parent_parts)))
        return parts, len(parent_parts)
    return parent_parts + parts, len(parent_parts)


def check_containment(mount: str, parts: t.Sequence[str], parent_depth: int) -> None:
    """Walk the existing components one directory fd at a time with O_NOFOLLOW.

    A symlinked or non-directory component, a component on another
    filesystem, or a resolved path whose components differ from the
    expected ones is refused.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        device = os.fstat(fd).st_dev
        for depth, part in enumerate(parts):
            role = "parent" if depth < parent_depth else "path"
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                return  # the rest does not exist yet; mkdir will create plain directories
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise KernelboxError("%s: %s/%s is a symlink or not a directory; refusing to follow it out of "
                                         "the cgroup tree" % (role, mount, "/".join(parts[:depth + 1])))
                raise
            os.close(fd)
            fd = child
            if os.fstat(fd).st_dev != device:
                raise KernelboxError("%s: %s/%s is another filesystem mounted inside the cgroup tree"
                                     % (role, mount, "/".join(parts[:depth + 1])))
        resolved = os.path.realpath("/proc/self/fd/%d" % fd)
        expected = os.path.realpath(mount).rstrip("/").split("/") + list(parts)
        if resolved.rstrip("/").split("/") != expected:
            raise KernelboxError("path: %s resolves to %s, outside the expected place" % ("/".join(parts), resolved))
    finally:
        os.close(fd)


def resolve(path: t.Any, parent: t.Any = DEFAULT_PARENT, hierarchy: t.Optional[Hierarchy] = None) -> "Cgroup":
    """A handle for ``parent``/``path`` with containment checked; creates nothing."""
    parts, parent_depth = group_parts(path, parent)
    hierarchy = hierarchy or find_hierarchy()
    check_containment(hierarchy.mount, parts, parent_depth)
    return Cgroup(hierarchy, parts)


# --- the group handle ----------------------------------------------------------

def _read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name), "r", encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


class Cgroup:
    """One cgroup directory (it may not exist yet)."""

    def __init__(self, hierarchy: Hierarchy, parts: t.Sequence[str]) -> None:
        self.hierarchy = hierarchy
        self.parts = tuple(parts)

    @property
    def relpath(self) -> str:
        """Root-relative path without a leading '/', as /proc/PID/cgroup shows it after the '/'."""
        return "/".join(self.parts)

    @property
    def path(self) -> str:
        return os.path.join(self.hierarchy.mount, *self.parts) if self.parts else self.hierarchy.mount

    @property
    def is_root(self) -> bool:
        return not self.parts

    def parent(self) -> "Cgroup":
        return Cgroup(self.hierarchy, self.parts[:-1])

    def ancestors(self) -> t.List["Cgroup"]:
        """Root first, down to the parent; excludes the group itself."""
        return [Cgroup(self.hierarchy, self.parts[:depth]) for depth in range(len(self.parts))]

    def exists(self) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.path).st_mode)
        except FileNotFoundError:
            return False

    def has_file(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))

    def read(self, name: str) -> str:
        """An interface file's text without the trailing newline."""
        return _read(self.path, name).rstrip("\n")

    def read_optional(self, name: str) -> t.Optional[str]:
        """None when the file does not exist (controller not enabled, older kernel)."""
        try:
            return self.read(name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENODEV):  # PSI disabled at boot, and similar
                return None
            raise

    def write(self, name: str, value: str) -> None:
        """One write(2) of ``value``; the kernel parses each write on its own."""
        target = os.path.join(self.path, name)
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise OSError(exc.errno, "writing %r to %s failed: %s" % (value, target, os.strerror(exc.errno)),
                          target)
        finally:
            os.close(fd)

    def controllers(self) -> t.Set[str]:
        return set(self.read("cgroup.controllers").split())

    def subtree_control(self) -> t.Set[str]:
        return set(self.read("cgroup.subtree_control").split())

    def procs(self) -> t.List[int]:
        """PIDs directly in this group (not in descendants)."""
        return sorted(int(line) for line in self.read("cgroup.procs").split())

    def events(self) -> t.Dict[str, int]:
        return procfs.parse_flat_keyed(self.read("cgroup.events"))

    def populated(self) -> bool:
        """Whether any process lives in the group or a descendant."""
        return self.events().get("populated", 0) == 1

    def frozen(self) -> bool:
        return self.events().get("frozen", 0) == 1

    def children(self) -> t.List["Cgroup"]:
        return [Cgroup(self.hierarchy, self.parts + (entry.name,))
                for entry in sorted(os.scandir(self.path), key=lambda e: e.name)
                if entry.is_dir(follow_symlinks=False)]

    def descendants(self) -> t.List["Cgroup"]:
        """Every descendant, deepest first (the order rmdir needs)."""
        found: t.List[Cgroup] = []
        for child in self.children():
            found.extend(child.descendants())
            found.append(child)
        return found

    def __repr__(self) -> str:
        return "Cgroup(%s)" % self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cgroup) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
