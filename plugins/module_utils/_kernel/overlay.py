# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: overlayfs mounts, made with mount(2) and read back from mountinfo.

Layer order: ``lower`` is **topmost first**, exactly as overlayfs's own
``lowerdir=top:...:bottom`` option.  OCI manifests list layers the other way
round (base first); ``image_layers`` already returns them topmost first.

Paths go into the mount data escaped the way overlayfs unescapes them
(``\\`` and ``:`` get a backslash).  Commas are refused: the kernel splits its
options at commas before it unescapes, differently across versions (6.5
regressed on ``\\,``), so a comma can never be passed safely; refusing it
makes ``/a,upperdir=/etc`` impossible to inject.

Idempotency: the kernel prints overlay options its own way (``volatile``
became ``fsync=volatile`` in 6.x, defaults such as ``uuid=on`` or
``redirect_dir=on`` appear unasked, xino disappears on a single filesystem).
So every mount made here carries the requested options in its *source*
(``kernelbox:index=on,volatile``): overlay options cannot change without an
unmount, so the label stays true for the life of the mount, and a second run
compares the label, not the kernel's wording.  Mounts made by other tools
(source ``overlay``) are compared by the options the kernel shows, with the
kernel's defaults from /sys/module/overlay/parameters filling the gaps.
"""

from __future__ import annotations

import errno
import os
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import kernel_log, libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.procfs import (
    MountInfo, split_escaped)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import (
    ValidationError, path_is_within)

SOURCE_LABEL = "kernelbox"
# Options overlayfs takes as key=value, with the values this module accepts.
VALUE_OPTIONS = {
    "index": ("on", "off"),
    "metacopy": ("on", "off"),
    "nfs_export": ("on", "off"),
    "redirect_dir": ("on", "follow", "nofollow", "off"),
    "uuid": ("on", "off", "auto", "null"),
    "xino": ("on", "off", "auto"),
}
# Overlay options that are present or not.
FLAG_OPTIONS = ("default_permissions", "userxattr", "volatile")
# Per-mount (VFS) flags, checked against mountinfo's per-mount options.
MOUNT_FLAGS = {"nodev": libc.MS_NODEV, "noexec": libc.MS_NOEXEC, "nosuid": libc.MS_NOSUID,
               "noatime": libc.MS_NOATIME}
ALLOWED_OPTIONS = tuple(sorted(list(VALUE_OPTIONS) + list(FLAG_OPTIONS) + list(MOUNT_FLAGS)))
# include/uapi/linux/... : fs/overlayfs/ovl_entry.h OVL_MAX_STACK
MAX_LAYERS = 500
# mount(2) copies at most one page of option data.
MAX_MOUNT_DATA = 4095
# What overlayfs itself keeps in a work directory between mounts of the same upper.
WORKDIR_OWN_ENTRIES = frozenset(["work", "index"])


# --- pure: options, escaping, the spec ------------------------------------------------------------

def normalise_options(raw: t.Optional[t.Mapping[str, t.Any]], option: str = "options") -> t.Dict[str, t.Any]:
    """Validate and normalise ``options``: {'index': True} -> {'index': 'on'}; false flags drop out.

    YAML turns ``on``/``off`` into booleans, so booleans are accepted for
    on/off options.  Flags take true/false only.
    """
    result: t.Dict[str, t.Any] = {}
    for key, value in (raw or {}).items():
        name = str(key).strip().lower().replace("-", "_")
        if name in VALUE_OPTIONS:
            if isinstance(value, bool):
                text = "on" if value else "off"
            else:
                text = str(value).strip().lower()
            if text not in VALUE_OPTIONS[name]:
                raise ValidationError("%s: %s must be one of %s, got %r"
                                      % (option, name, ", ".join(VALUE_OPTIONS[name]), value))
            result[name] = text
        elif name in FLAG_OPTIONS or name in MOUNT_FLAGS:
            if not isinstance(value, bool):
                if str(value).strip().lower() in ("true", "yes", "on", "1"):
                    value = True
                elif str(value).strip().lower() in ("false", "no", "off", "0"):
                    value = False
                else:
                    raise ValidationError("%s: %s is a flag; give true or false, got %r" % (option, name, value))
            if value:
                result[name] = True
        else:
            raise ValidationError("%s: %r is not an allowed overlay option; allowed: %s"
                                  % (option, key, ", ".join(ALLOWED_OPTIONS)))
    return dict(sorted(result.items()))


def escape_path(path: str, option: str = "path") -> str:
    """A path as overlayfs's option parser wants it: '\\' and ':' escaped, commas refused."""
    if "," in path:
        raise ValidationError("%s: %r contains a comma; overlayfs splits its options at commas, so such a "
                              "path can never be passed safely. Rename the directory." % (option, path))
    return path.replace("\\", "\\\\").replace(":", "\\:")


def unescape_path(text: str) -> str:
    """Undo overlayfs escaping: a backslash keeps the next character literally."""
    out = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            out.append(next(chars, ""))
        else:
            out.append(char)
    return "".join(out)


def split_lowerdir(text: str) -> t.List[str]:
    """'/a\\:b:/c' -> ['/a:b', '/c']: split at unescaped colons, then unescape each path."""
    return [unescape_path(part) for part in split_escaped(text, ":") if part != ""]


def overlay_options(options: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The overlayfs part of normalised options (per-mount VFS flags removed)."""
    return {key: value for key, value in options.items() if key not in MOUNT_FLAGS}


def format_options(options: t.Mapping[str, t.Any]) -> str:
    """Normalised options as overlayfs text: 'index=on,volatile' (sorted, flags bare)."""
    return ",".join(key if value is True else "%s=%s" % (key, value) for key, value in sorted(options.items()))


def parse_label(source: str) -> t.Optional[t.Dict[str, t.Any]]:
    """Options recorded in a mount source made here ('kernelbox:index=on,volatile'), or None if foreign."""
    if source == SOURCE_LABEL:
        return {}
    if not source.startswith(SOURCE_LABEL + ":"):
        return None
    result: t.Dict[str, t.Any] = {}
    for item in source[len(SOURCE_LABEL) + 1:].split(","):
        key, sep, value = item.partition("=")
        if key:
            result[key] = value if sep else True
    return result


@dataclass
class OverlaySpec:
    """An overlay mount as asked for.  ``lower`` is topmost first; ``upper is None`` means read-only."""

    merged: str
    lower: t.List[str]
    upper: t.Optional[str] = None
    work: t.Optional[str] = None
    options: t.Dict[str, t.Any] = field(default_factory=dict)

    @property
    def readonly(self) -> bool:
        return self.upper is None

    def source(self) -> str:
        text = format_options(overlay_options(self.options))
        return SOURCE_LABEL + (":" + text if text else "")

    def mount_data(self) -> str:
        data = "lowerdir=" + ":".join(escape_path(p, "lower") for p in self.lower)
        if self.upper is not None and self.work is not None:
            data += ",upperdir=%s,workdir=%s" % (escape_path(self.upper, "upper"), escape_path(self.work, "work"))
        extra = format_options(overlay_options(self.options))
        return data + ("," + extra if extra else "")

    def mount_flags(self) -> int:
        flags = libc.MS_RDONLY if self.readonly else 0
        for key, flag in MOUNT_FLAGS.items():
            if self.options.get(key):
                flags |= flag
        return flags

    def state(self) -> t.Dict[str, t.Any]:
        return {"lower": list(self.lower), "upper": self.upper, "work": self.work, "readonly": self.readonly,
                "options": dict(self.options)}


def validate_spec(spec: OverlaySpec) -> None:
    """Every check that needs no host access; raises ValidationError."""
    reason = mounts.forbidden_mount_point(spec.merged)
    if reason:
        raise ValidationError("merged: refusing to mount an overlay there: %s" % reason)
    if not spec.lower:
        raise ValidationError("lower: at least one lower directory is needed")
    if len(spec.lower) > MAX_LAYERS:
        raise ValidationError("lower: %d directories; overlayfs stacks at most %d" % (len(spec.lower), MAX_LAYERS))
    if len(set(spec.lower)) != len(spec.lower):
        raise ValidationError("lower: a directory is listed twice: %s" % spec.lower)
    if (spec.upper is None) != (spec.work is None):
        raise ValidationError("upper and work go together: give both, or neither for a read-only overlay")
    if spec.readonly:
        if len(spec.lower) < 2:
            raise ValidationError("lower: a read-only overlay (no upper) needs at least two lower directories "
                                  "(an overlayfs rule); with one directory, use it as the rootfs directly")
        if spec.options.get("volatile"):
            raise ValidationError("options: volatile needs an upper directory")
    named = [("merged", spec.merged)] + [("lower", p) for p in spec.lower]
    if spec.upper is not None and spec.work is not None:
        named += [("upper", spec.upper), ("work", spec.work)]
    for option, path in named:
        escape_path(path, option)
    for index, (name_a, path_a) in enumerate(named):
        for name_b, path_b in named[index + 1:]:
            if name_a == name_b == "lower":
                continue  # overlapping lowers are the kernel's call
            if path_a == path_b:
                raise ValidationError("%s and %s are the same directory %s" % (name_a, name_b, path_a))
            for inner, inner_path, outer, outer_path in ((name_a, path_a, name_b, path_b),
                                                         (name_b, path_b, name_a, path_a)):
                if path_is_within(inner_path, outer_path):
                    raise ValidationError("%s %s must not be inside %s %s" % (inner, inner_path, outer, outer_path))
    size = len(spec.mount_data().encode("utf-8", "surrogateescape"))
    if size > MAX_MOUNT_DATA:
        raise ValidationError("lower: the overlay options are %d bytes, more than the %d mount(2) accepts; "
                              "use shorter layer paths (e.g. a shorter layer store path)" % (size, MAX_MOUNT_DATA))


# --- reading mounts back ----------------------------------------------------------------------------

@dataclass
class OverlayMount:
    """An overlay mount as mountinfo shows it, decoded."""

    info: MountInfo
    lower: t.List[str]
    upper: t.Optional[str]
    work: t.Optional[str]
    shown_options: t.Dict[str, t.Any]  # allowlisted options as the kernel prints them
    label: t.Optional[t.Dict[str, t.Any]]  # options recorded by this module, None for foreign mounts
    data_layers: t.List[str] = field(default_factory=list)

    @property
    def readonly(self) -> bool:
        return self.upper is None

    @property
    def volatile(self) -> bool:
        return bool(self.shown_options.get("volatile") or (self.label or {}).get("volatile"))

    def mount_flags(self) -> t.Dict[str, bool]:
        return {key: True for key in MOUNT_FLAGS if key in self.info.mount_options}


def parse_overlay(info: MountInfo) -> OverlayMount:
    """Decode one overlay line of mountinfo (octal escapes are already undone by procfs)."""
    lower: t.List[str] = []
    data_layers: t.List[str] = []
    shown: t.Dict[str, t.Any] = {}
    upper = work = None
    for item in info.super_options:
        key, sep, value = item.partition("=")
        if key == "lowerdir":
            lower += split_lowerdir(value)
        elif key == "lowerdir+":
            lower.append(value)  # new-API layers are passed (and shown) unescaped
        elif key == "datadir+":
            data_layers.append(value)
        elif key == "upperdir":
            upper = unescape_path(value)
        elif key == "workdir":
            work = unescape_path(value)
        elif key in VALUE_OPTIONS and sep:
            shown[key] = value
        elif key in FLAG_OPTIONS and not sep:
            shown[key] = True
        elif key == "fsync" and value == "volatile":  # 6.x spelling of volatile
            shown["volatile"] = True
    return OverlayMount(info, lower, upper, work, shown, parse_label(info.source), data_layers)


def kernel_defaults(upper: bool, params_dir: str = "/sys/module/overlay/parameters") -> t.Dict[str, str]:
    """The values overlayfs uses for options not given, from its module parameters."""
    def param(name: str) -> t.Optional[bool]:
        try:
            with open(os.path.join(params_dir, name)) as handle:
                return handle.read().strip() == "Y"
        except OSError:
            return None

    defaults = {}
    for name in ("index", "metacopy", "nfs_export"):
        value = param(name)
        if value is not None:
            defaults[name] = "on" if value else "off"
    redirect, follow = param("redirect_dir"), param("redirect_always_follow")
    if redirect is not None:
        mode = "on" if redirect else ("follow" if follow else "nofollow")
        defaults["redirect_dir"] = "on" if (mode == "follow" and not upper) else mode
    xino = param("xino_auto")
    if xino is not None:
        defaults["xino"] = "auto" if xino else "off"
    return defaults


def effective_options(mount: OverlayMount, wanted: t.Mapping[str, t.Any],
                      defaults: t.Optional[t.Mapping[str, str]] = None) -> t.Dict[str, t.Any]:
    """The options of ``mount`` in the normalised form of ``wanted``, for comparison and diff.

    A labelled mount reports its label.  A foreign mount reports what the
    kernel shows; an option it does not show has the kernel default, and
    value options not asked for are the kernel's business (not compared).
    Per-mount flags (nosuid...) always come from the per-mount options.
    """
    result: t.Dict[str, t.Any] = dict(mount.mount_flags())
    if mount.label is not None:
        result.update(mount.label)
        return dict(sorted(result.items()))
    if defaults is None:
        defaults = kernel_defaults(upper=not mount.readonly)
    for key in FLAG_OPTIONS:
        if mount.shown_options.get(key):
            result[key] = True
    for key in VALUE_OPTIONS:
        if key not in wanted:
            continue
        if key in mount.shown_options:
            result[key] = mount.shown_options[key]
        elif key in defaults:
            result[key] = defaults[key]
        elif key == "xino" and mount.upper is not None:
            result[key] = "unknown"
    return dict(sorted(result.items()))


def find_overlay(merged: str, all_mounts: t.Optional[t.List[MountInfo]] = None
                 ) -> t.Tuple[t.Optional[OverlayMount], t.Optional[MountInfo]]:
    """(the overlay on top at ``merged`` or None, the top mount there whatever its type, or None)."""
    top = mounts.top_mount(merged, all_mounts)
    if top is None:
        return None, None
    return (parse_overlay(top) if top.fstype == "overlay" else None), top


def overlays_using(path: str, all_mounts: t.List[MountInfo], exclude_merged: str = "") -> t.List[OverlayMount]:
    """Overlay mounts (other than at ``exclude_merged``) whose upper or work is ``path`` or around it.

    ``all_mounts`` must come from ``read_all_mounts`` (visible mounts): a hidden overlay's paths name what
    this namespace no longer sees there.
    """
    found = []
    for info in all_mounts:
        if info.fstype != "overlay" or info.mount_point == exclude_merged:
            continue
        mount = parse_overlay(info)
        for used in (mount.upper, mount.work):
            if used and (path_is_within(used, path) or path_is_within(path, used)):
                found.append(mount)
                break
    return found


def overlays_with_lower(path: str, all_mounts: t.List[MountInfo]) -> t.List[OverlayMount]:
    """Overlay mounts that use ``path`` (or a directory inside it) as a lower layer; ``all_mounts`` as for
    ``overlays_using``."""
    return [m for m in (parse_overlay(i) for i in all_mounts if i.fstype == "overlay")
            if any(path_is_within(lower, path) for lower in m.lower)]


def volatile_marker(work: str) -> str:
    """Where overlayfs records an unfinished volatile mount of this work directory."""
    return os.path.join(work, "work", "incompat", "volatile")


# --- acting -----------------------------------------------------------------------------------------

def mount(spec: OverlaySpec) -> OverlayMount:
    """Mount ``spec`` (its directories must exist).  Returns the mount as read back.

    Every directory is resolved without symlinks and held open; the target is
    given to mount(2) as its fd, and after mounting each layer path is resolved
    again and must still be the directory that was checked; otherwise the
    mount is undone and an error raised.
    """
    validate_spec(spec)
    held: t.List[t.Tuple[str, int]] = []
    try:
        for path in spec.lower + [p for p in (spec.upper, spec.work) if p is not None]:
            held.append((path, mounts.open_dir(path)))
        merged_fd = mounts.open_dir(spec.merged)
        held.append((spec.merged, merged_fd))
        kmsg = kernel_log.open_reader()
        try:
            mounts.mount_on(merged_fd, spec.source(), "overlay", spec.mount_flags(), spec.mount_data())
        except OSError as exc:
            said = kernel_log.read_new(kmsg, "overlayfs:")
            raise KernelboxError("mounting the overlay at %s failed: %s%s"
                                 % (spec.merged, os.strerror(exc.errno or 0),
                                    "; the kernel says: " + " / ".join(said) if said else ""),
                                 errno=exc.errno)
        if kmsg is not None:
            os.close(kmsg)
        result, _top = find_overlay(spec.merged)
        moved = [path for path, fd in held[:-1] if not mounts.same_inode(fd, path)]
        if result is None or result.lower != spec.lower or result.upper != spec.upper or moved:
            try:
                mounts.unmount(spec.merged, detach=True)
            except OSError:
                pass  # reported below either way
            why = "paths changed while mounting: %s" % ", ".join(moved) if moved else "mountinfo shows something else"
            raise KernelboxError("the overlay at %s did not come out as asked (%s); it was unmounted again"
                                 % (spec.merged, why))
        return result
    finally:
        for _path, fd in held:
            os.close(fd)


def unmount(mount: OverlayMount) -> None:
    """Unmount an overlay, refusing (with the processes named) when something uses it.

    A volatile mount leaves ``work/work/incompat/volatile`` behind, which makes
    the next mount fail; after a clean unmount the upper filesystem is synced
    and the marker removed, so the same upper can be mounted again.
    """
    merged = mount.info.mount_point
    check_not_busy(mount)
    try:
        mounts.unmount(merged)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        users = mounts.users_of_mount(mount.info)
        below = mounts.mounts_below(merged)
        raise KernelboxError("the overlay at %s is busy and was not unmounted%s%s"
                             % (merged, "; used by " + mounts.describe_users(users) if users else "",
                                "; mounts inside it: " + ", ".join(m.mount_point for m in below) if below else ""))
    if mount.volatile and mount.work:
        held = mounts.open_dir(mount.work)
        try:
            fd = os.open(mounts.fd_path(held), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(held)
        try:
            libc.syncfs(fd)
        finally:
            os.close(fd)
        mounts.remove_tree(volatile_marker(mount.work))


def check_not_busy(mount: OverlayMount) -> None:
    """Raise KernelboxError naming the processes (and submounts) that use ``mount``."""
    merged = mount.info.mount_point
    below = mounts.mounts_below(merged)
    users = mounts.users_of_mount(mount.info)
    if users or below:
        raise KernelboxError(
            "the overlay at %s is in use, so it is left as it is: %s%s. Stop them (or unmount those) and run again"
            % (merged, "processes " + mounts.describe_users(users) if users else "",
               ("; " if users else "") + "mounts inside it: " + ", ".join(
                   "%s (%s)" % (m.mount_point, m.fstype) for m in below) if below else ""),
            users=[{"pid": u.pid, "name": u.name, "uses": u.uses} for u in users])


def read_all_mounts() -> t.List[MountInfo]:
    """The mounts this namespace can reach: a hidden overlay listed at a path is not the one there."""
    return mounts.visible_mounts()
