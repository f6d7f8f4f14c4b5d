# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the overlay_rootfs module and _kernel.overlay."""

from __future__ import annotations

import errno
import functools
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError, changed_keys)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts, overlay
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    merged=dict(type="path", required=True),
    lower=dict(type="list", elements="path"),
    upper=dict(type="path"),
    work=dict(type="path"),
    readonly=dict(type="bool", default=False),
    options=dict(type="dict", default={}),
    state=dict(type="str", default="mounted", choices=["mounted", "unmounted", "absent"]),
)

_MOUNT_KEYS = ("lower", "upper", "work", "readonly", "options")
_DIR_MODES = {"upper": 0o755, "work": 0o700, "merged": 0o755}


class OverlayRootfsResource(Resource):
    """An overlay mount at ``merged``, and (for state=absent) its upper and work directories."""

    def validate(self) -> None:
        params = self.params
        self.state = params["state"]
        self.merged = validate.absolute_path(params["merged"], "merged")
        reason = mounts.forbidden_mount_point(self.merged)
        if reason:
            raise ValidationError("merged: refusing to manage an overlay there: %s" % reason)
        self.lower = [validate.absolute_path(p, "lower") for p in (params["lower"] or [])]
        self.upper = validate.absolute_path(params["upper"], "upper") if params["upper"] else None
        self.work = validate.absolute_path(params["work"], "work") if params["work"] else None
        self.options = overlay.normalise_options(params["options"])
        self.spec: t.Optional[overlay.OverlaySpec] = None
        if self.state == "mounted":
            if not self.lower:
                raise ValidationError("lower: state=mounted needs at least one lower directory")
            if params["readonly"] and (self.upper or self.work):
                raise ValidationError("readonly: a read-only overlay has no upper layer; drop upper and work, "
                                      "or set readonly=false")
            if not params["readonly"] and not (self.upper and self.work):
                raise ValidationError("upper and work are required unless readonly=true")
            self.spec = overlay.OverlaySpec(self.merged, self.lower, self.upper, self.work, self.options)
            overlay.validate_spec(self.spec)
        elif self.state == "absent":
            for option, path in (("upper", self.upper), ("work", self.work)):
                if path and mounts.forbidden_mount_point(path):
                    raise ValidationError("%s: refusing to remove %s: %s"
                                          % (option, path, mounts.forbidden_mount_point(path)))
        for option, path in (("upper", self.upper), ("work", self.work)):
            if path:
                overlay.escape_path(path, option)

    # --- read -----------------------------------------------------------------------------------

    def _exists(self, option: str, path: str) -> bool:
        """Whether directory ``path`` exists; refuses symlinks anywhere on it."""
        try:
            fd, missing = mounts.deepest_existing(path)
        except mounts.UnsafePath as exc:
            raise ValidationError("%s: %s" % (option, exc.msg))
        os.close(fd)
        return not missing

    def read(self) -> t.Dict[str, t.Any]:
        self.all_mounts = overlay.read_all_mounts()
        self.paths = {"merged": self.merged}
        if self.upper:
            self.paths["upper"] = self.upper
        if self.work:
            self.paths["work"] = self.work
        exists = {role: self._exists(role, path) for role, path in self.paths.items()}
        if self.state == "mounted":
            for path in self.lower:
                if not self._exists("lower", path):
                    raise ValidationError("lower: %s does not exist (lower directories are never created)" % path)
        self.mount, top = overlay.find_overlay(self.merged, self.all_mounts)
        if top is not None and self.mount is None:
            raise KernelboxError("merged: %s is already a mount of %s (source %s), not an overlay; refusing to "
                                 "mount over it or unmount it" % (self.merged, top.fstype, top.source))
        current: t.Dict[str, t.Any] = {"merged": self.merged, "mounted": self.mount is not None, "exists": exists}
        if self.mount is not None:
            current.update(lower=self.mount.lower, upper=self.mount.upper, work=self.mount.work,
                           readonly=self.mount.readonly,
                           options=overlay.effective_options(self.mount, self.options))
        return current

    # --- desired and plan -----------------------------------------------------------------------

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if self.state == "mounted" and self.spec is not None:
            state = {"merged": self.merged, "mounted": True, "exists": {role: True for role in self.paths}}
            state.update(self.spec.state())
            return state
        exists = dict(current["exists"])
        if self.state == "absent":
            for role in ("upper", "work"):
                if role in exists:
                    exists[role] = False
            if exists.get("merged") and self._merged_removable(current):
                exists["merged"] = False
        return {"merged": self.merged, "mounted": False, "exists": exists}

    def _merged_removable(self, current: t.Dict[str, t.Any]) -> bool:
        """An existing mount point is removed by state=absent only when empty (what it hides is unknown yet)."""
        if current["mounted"]:
            return True
        try:
            return not os.listdir(self.merged)
        except OSError:
            return False

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        if self.state == "mounted":
            return self._plan_mounted(current)
        steps = []
        if self.mount is not None:
            self._check_absent_targets()
            overlay.check_not_busy(self.mount)
            if self.state == "absent":
                self._warn_about_copies(self.mount)
            steps.append(Step("unmount overlay at %s" % self.merged,
                              functools.partial(overlay.unmount, self.mount), "state=%s" % self.state))
        if self.state == "absent":
            for role in ("upper", "work"):
                if current["exists"].get(role):
                    steps.append(Step("remove %s directory %s" % (role, self.paths[role]),
                                      functools.partial(mounts.remove_tree, self.paths[role]), "state=absent"))
            if current["exists"].get("merged"):
                if desired["exists"]["merged"] is False:
                    steps.append(Step("remove mount point directory %s" % self.merged, self._remove_merged,
                                      "state=absent"))
                else:
                    self.warnings.append("merged: %s is not empty, so it was kept" % self.merged)
        return steps

    def _plan_mounted(self, current: t.Dict[str, t.Any]) -> t.List[Step]:
        spec = t.cast(overlay.OverlaySpec, self.spec)
        steps = []
        for role, path in self.paths.items():
            if not current["exists"][role]:
                steps.append(Step("create %s directory %s" % (role, path),
                                  functools.partial(self._create_dir, path, _DIR_MODES[role]), "missing"))
        wanted = spec.state()
        if self.mount is not None:
            now = {key: current[key] for key in _MOUNT_KEYS}
            differ = changed_keys(now, wanted)
            if not differ:
                return steps
            if differ == ["options"] and self._only_vfs_flags_differ(now["options"], wanted["options"]):
                steps.append(Step("change mount flags of overlay at %s to %s"
                                  % (self.merged, ",".join(self._vfs_flags(wanted["options"])) or "defaults"),
                                  self._remount_flags, "was %s" % (",".join(self._vfs_flags(now["options"]))
                                                                   or "defaults")))
                return steps
            self._check_can_mount(remounting=True)
            overlay.check_not_busy(self.mount)
            why = "; ".join("%s was %s" % (key, _show(now[key])) for key in differ)
            steps.append(Step("unmount overlay at %s" % self.merged,
                              functools.partial(overlay.unmount, self.mount), why))
            steps.append(Step(self._mount_what(), functools.partial(self._mount_or_restore, spec, self.mount), why))
            return steps
        self._check_can_mount(remounting=False)
        steps.append(Step(self._mount_what(), functools.partial(overlay.mount, spec), "not mounted"))
        return steps

    def _mount_what(self) -> str:
        spec = t.cast(overlay.OverlaySpec, self.spec)
        text = "mount overlay at %s (lower %s" % (self.merged, ":".join(spec.lower))
        if spec.upper:
            text += ", upper %s" % spec.upper
        options = overlay.format_options(spec.options)
        return text + (", options %s)" % options if options else ")")

    # --- host checks before mounting ----------------------------------------------------------

    def _check_can_mount(self, remounting: bool) -> None:
        """Checks that read the host but change nothing: they make bad input fail before any step."""
        spec = t.cast(overlay.OverlaySpec, self.spec)
        if spec.upper is None or spec.work is None:
            return
        mount_ids = {}
        for role, path in (("upper", spec.upper), ("work", spec.work)):
            fd, _missing = mounts.deepest_existing(path)
            try:
                mount_ids[role] = mounts.mount_id_of(fd)
            finally:
                os.close(fd)
        if mount_ids["upper"] != mount_ids["work"]:
            raise ValidationError("upper %s and work %s are on different filesystems (mounts %d and %d); "
                                  "overlayfs needs both on the same mount"
                                  % (spec.upper, spec.work, mount_ids["upper"], mount_ids["work"]))
        others = overlay.overlays_using(spec.upper, self.all_mounts, exclude_merged=self.merged) + \
            overlay.overlays_using(spec.work, self.all_mounts, exclude_merged=self.merged)
        if others:
            raise ValidationError("upper/work: already used by the overlay at %s; two overlays must never share "
                                  "an upper or work directory" % others[0].info.mount_point)
        same_work = remounting and self.mount is not None and self.mount.work == spec.work
        if os.path.isdir(spec.work) and not same_work:
            if os.path.lexists(overlay.volatile_marker(spec.work)):
                raise KernelboxError(
                    "work: %s holds overlayfs's 'volatile' marker: a volatile mount of this upper was not unmounted "
                    "cleanly (a crash?), so the upper may be inconsistent. Remove upper and work (state=absent) "
                    "and start again" % spec.work)
            strangers = sorted(set(os.listdir(spec.work)) - overlay.WORKDIR_OWN_ENTRIES)
            if strangers:
                raise ValidationError("work: %s is not empty (%s); overlayfs needs an empty work directory"
                                      % (spec.work, ", ".join(strangers[:5])))

    def _check_absent_targets(self) -> None:
        """upper/work given with state=absent must be the ones the mount uses (never delete a stranger's)."""
        mount = t.cast(overlay.OverlayMount, self.mount)
        for role, given, used in (("upper", self.upper, mount.upper), ("work", self.work, mount.work)):
            if self.state == "absent" and given and given != used:
                uses = "uses %s as its %s" % (used, role) if used else "has no %s (it is read-only)" % role
                raise KernelboxError("%s: the overlay at %s %s, not %s; refusing to remove a directory it does "
                                     "not use" % (role, self.merged, uses, given))

    def _warn_about_copies(self, mount: overlay.OverlayMount) -> None:
        copies = mounts.users_of_mount(mount.info, include_namespace_copies=True)
        if copies:
            self.warnings.append(
                "the overlay at %s is unmounted here, but other mount namespaces still hold a copy of it, so its "
                "upper directory stays in use by the kernel until they let go: %s"
                % (self.merged, mounts.describe_users(copies)))

    # --- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _mount_or_restore(spec: overlay.OverlaySpec, previous: overlay.OverlayMount) -> None:
        """Mount ``spec`` where ``previous`` was just unmounted; if the kernel refuses, put ``previous`` back."""
        try:
            overlay.mount(spec)
        except (KernelboxError, OSError) as exc:
            message = exc.msg if isinstance(exc, KernelboxError) else str(exc)
            old = overlay.OverlaySpec(spec.merged, previous.lower, previous.upper, previous.work,
                                      overlay.effective_options(previous, {}))
            try:
                overlay.mount(old)
                outcome = "the previous mount was put back"
            except (KernelboxError, OSError) as again:
                outcome = "the previous mount could not be put back either (%s)" % again
            raise KernelboxError("%s; %s" % (message, outcome))

    @staticmethod
    def _create_dir(path: str, mode: int) -> None:
        os.close(mounts.open_dir(path, create=True, mode=mode))

    def _remove_merged(self) -> None:
        parent = mounts.open_dir(os.path.dirname(self.merged) or "/")
        try:
            os.rmdir(os.path.basename(self.merged), dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                raise
            self.warnings.append("merged: %s was kept: %s" % (self.merged, os.strerror(exc.errno)))
        finally:
            os.close(parent)

    @staticmethod
    def _vfs_flags(options: t.Mapping[str, t.Any]) -> t.List[str]:
        return sorted(key for key in options if key in overlay.MOUNT_FLAGS)

    def _only_vfs_flags_differ(self, now: t.Mapping[str, t.Any], wanted: t.Mapping[str, t.Any]) -> bool:
        return overlay.overlay_options(now) == overlay.overlay_options(wanted)

    def _remount_flags(self) -> None:
        spec = t.cast(overlay.OverlaySpec, self.spec)
        fd = mounts.open_dir(self.merged)
        try:
            libc.mount(None, mounts.fd_path(fd), None,
                       libc.MS_REMOUNT | libc.MS_BIND | spec.mount_flags())
        finally:
            os.close(fd)

    # --- report ---------------------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        if not acted:
            return current
        mount, _top = overlay.find_overlay(self.merged)
        state: t.Dict[str, t.Any] = {"merged": self.merged, "mounted": mount is not None}
        if mount is not None:
            state.update(lower=mount.lower, upper=mount.upper, work=mount.work, readonly=mount.readonly,
                         options=overlay.effective_options(mount, self.options))
        return state

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        mount, _top = overlay.find_overlay(self.merged)
        return {
            "merged": self.merged,
            "mounted": bool(state.get("mounted")),
            "lower": state.get("lower", []),
            "upper": state.get("upper"),
            "work": state.get("work"),
            "readonly": state.get("readonly"),
            "options": state.get("options", {}),
            "source": mount.info.source if mount else None,
            "kernel_options": list(mount.info.super_options) if mount else [],
        }


def _show(value: t.Any) -> str:
    if isinstance(value, list):
        return ":".join(str(v) for v in value) or "[]"
    if isinstance(value, dict):
        return overlay.format_options(value) or "{}"
    return str(value)
