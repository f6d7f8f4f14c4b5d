# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: image references in modules (image_layers ``name``, a container's ``image``).

For a module that takes an image reference:

* ``REGISTRY_OPTIONS`` is the argument spec of the registry options (documented once, in the
  ``kernelbox.containers._registry`` doc fragment): ``pull``, ``platform``, ``username``, ``password``,
  ``auth_file``, ``ca_path``, ``validate_certs``, ``timeout``;
* ``pull_options(params)`` turns them into ``pull.PullOptions`` (raises ValidationError);
* then ``pull.plan(store, name, params["pull"], options)`` in the module's read phase and
  ``pull.apply(plan)`` in its act phase (see ``_kernel/registry/pull.py``); ``plan.changes()`` gives
  the steps and their reasons, ``image_result(plan)`` the return values image_layers documents.

``RegistryImageResource`` is image_layers with ``name``: the same flow for a pulled image, and
``state: absent`` to take a name off the store (the image and its unshared layers go with its last tag).
"""

from __future__ import annotations

import functools
import os
import re
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (
    image_manifest, image_store, layer_store, mounts, overlay)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import reference as refs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

if t.TYPE_CHECKING:
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import pull

# The registry client (HTTP, TLS and ansible.module_utils.urls: as much to import as Ansible's basic) is
# imported where an image is pulled, never for an image from a file: image_layers with src and the container
# module import this file for their argument spec and options.
PULL_POLICIES = ("missing", "always", "never")  # pull.POLICIES; a unit test checks that they agree

REGISTRY_OPTIONS: t.Dict[str, t.Any] = dict(
    pull=dict(type="str", default="missing", choices=list(PULL_POLICIES)),
    platform=dict(type="str"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    auth_file=dict(type="path"),
    ca_path=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
)
REGISTRY_TOGETHER = [("username", "password")]

_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")


def platform_option(value: t.Optional[str]) -> str:
    platform = (value or image_manifest.host_platform()).strip().lower()
    if not _PLATFORM.fullmatch(platform):
        raise ValidationError("platform: %r is not like linux/amd64 or linux/arm/v7" % value)
    return platform


def pull_options(params: t.Mapping[str, t.Any]) -> pull.PullOptions:
    """PullOptions from the REGISTRY_OPTIONS parameters; reads no file yet (auth files are read on a 401)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import auth, client, pull
    credentials = None
    if params.get("username"):
        credentials = auth.Credentials(params["username"], params.get("password") or "", "username and password")
    if params.get("auth_file"):
        files = [validate.absolute_path(params["auth_file"], "auth_file")]
        if not os.path.isfile(files[0]):
            raise ValidationError("auth_file: %s is not a file" % params["auth_file"])
    else:
        files = auth.auth_file_candidates(os.environ, os.geteuid(), os.path.expanduser("~"))
    ca_path = params.get("ca_path")
    if ca_path:
        ca_path = validate.absolute_path(ca_path, "ca_path")
        if not os.path.isfile(ca_path):
            raise ValidationError("ca_path: %s is not a file (a PEM bundle of CA certificates)" % params["ca_path"])
    timeout = params.get("timeout") or 30
    if not 1 <= timeout <= 3600:
        raise ValidationError("timeout: %r is not between 1 and 3600 seconds" % timeout)
    return pull.PullOptions(platform=platform_option(params.get("platform")),
                            client=client.Options(credentials=credentials, auth_files=files, ca_path=ca_path,
                                                  validate_certs=params.get("validate_certs", True),
                                                  timeout=float(timeout)))


def image_result(plan: pull.PullPlan, present: bool = True) -> t.Dict[str, t.Any]:
    """image_layers' return values for a pulled image."""
    layers = [{"diff_id": layer.diff_id, "digest": layer.digest, "media_type": layer.media_type, "size": layer.size,
               "path": layer_store.lower_dir(plan.store, layer.diff_id), "status": layer.status}
              for layer in plan.layers]
    summary = image_manifest.runtime_config(plan.config)
    return {
        "store": plan.store,
        "digest": plan.digest,
        "lower": plan.lower if present else [],
        "layers": layers,
        "config": summary,
        "process": image_manifest.process_of(summary),
        "image": {"format": "registry", "source": plan.source, "manifest_digest": plan.manifest_digest,
                  "config_digest": plan.image_id, "reference": str(plan.reference), "platform": plan.platform,
                  "digest": plan.digest, "id": plan.image_id},
    }


class _Once:
    """Runs ``pull.apply`` at the first step; the pull's steps are done together (downloads run concurrently)."""

    def __init__(self, plan: pull.PullPlan, concurrency: int) -> None:
        self.plan, self.concurrency, self.done = plan, concurrency, False

    def step(self) -> None:
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import pull
        if not self.done:
            pull.apply(self.plan, self.concurrency)
            self.done = True


class RegistryImageResource(Resource):
    """image_layers with ``name``: an image pulled by reference into the layer store."""

    def validate(self) -> None:
        params = self.params
        self.store = validate.absolute_path(params["store"], "store")
        overlay.escape_path(self.store, "store")
        reason = mounts.forbidden_mount_point(self.store)
        if reason:
            raise ValidationError("store: %s cannot be the layer store: %s" % (self.store, reason))
        self.reference = refs.parse(params["name"], "name")
        self.pin = image_manifest.normalise_digest(params["digest"]) if params.get("digest") else None
        self.options = pull_options(params)
        self.present = params["state"] == "present"
        if params.get("reference") or params.get("format", "auto") != "auto":
            raise ValidationError("reference and format choose an image inside a file given with src; "
                                  "with name, put the tag or digest in the name")

    # --- read -----------------------------------------------------------------------------------

    def read(self) -> t.Dict[str, t.Any]:
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import pull
        if not self.present:
            return self._read_local()
        self.pulled = pull.plan(self.store, str(self.reference), self.params["pull"], self.options)
        self.warnings.extend(self.pulled.warnings)
        if self.pin and self.pin not in (self.pulled.digest, self.pulled.manifest_digest):
            raise KernelboxError("digest: %s resolves to %s, not the pinned %s; nothing was downloaded"
                                 % (self.reference, self.pulled.digest, self.pin))
        current = self.pulled.current
        return {"reference": str(self.reference), "image": current.id if current else None,
                "digest": _digest_of(current, self.reference),
                "layers": ["%s %s" % (layer.diff_id, layer.status) for layer in self.pulled.layers]}

    def _read_local(self) -> t.Dict[str, t.Any]:
        images = image_store.list_images(self.store)
        self.images = images
        if self.reference.digest:
            self.local = image_store.find_digest(images, self.reference.by_digest(self.reference.digest))
        else:
            self.local = image_store.find_tag(images, t.cast(str, self.reference.tagged))
        if self.local is None:
            return {"reference": str(self.reference), "image": None, "digest": None, "layers": []}
        return {"reference": str(self.reference), "image": self.local.id,
                "digest": _digest_of(self.local, self.reference),
                "layers": ["%s %s" % (d, layer_store.status(self.store, d)) for d in self.local.diff_ids]}

    # --- desired and plan -----------------------------------------------------------------------

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if not self.present:
            return {"reference": str(self.reference), "image": None, "digest": None, "layers": []}
        return {"reference": str(self.reference), "image": self.pulled.image_id, "digest": self.pulled.digest,
                "layers": ["%s %s" % (layer.diff_id, layer_store.PRESENT) for layer in self.pulled.layers]}

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        if not self.present:
            return self._removal_steps()
        once = _Once(self.pulled, self.options.concurrency)
        return [Step(what, once.step, why) for what, why in self.pulled.changes()]

    def _removal_steps(self) -> t.List[Step]:
        record = self.local
        if record is None:
            return []
        name = self.reference.tagged if not self.reference.digest else self.reference.by_digest(
            t.cast(str, self.reference.digest))
        others = sorted(tag for tag in record.tags if tag != name)
        if others:
            return [Step("take the tag %s off image %s" % (name, record.id),
                         functools.partial(image_store.untag, self.store, record.id, t.cast(str, name)),
                         "state=absent; the image keeps its other tags: %s" % ", ".join(others))]
        users = image_store.layer_users(r for r in self.images if r.id != record.id)
        mounted = overlay.read_all_mounts()
        steps = [Step("remove image %s (%s)" % (record.id, name),
                      functools.partial(image_store.remove_record, self.store, record.id), "state=absent; its last name")]
        for diff_id in dict.fromkeys(record.diff_ids):
            if layer_store.status(self.store, diff_id) == layer_store.ABSENT:
                continue
            if diff_id in users:
                continue  # another image uses it
            overlays = overlay.overlays_with_lower(layer_store.layer_path(self.store, diff_id), mounted)
            if overlays:
                raise KernelboxError("layer %s of %s is a lower layer of the overlay at %s; unmount it first"
                                     % (diff_id, name, overlays[0].info.mount_point))
            steps.append(Step("remove layer %s" % diff_id,
                              functools.partial(layer_store.remove_layer, self.store, diff_id),
                              "no other image uses it"))
        return steps

    # --- report ---------------------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        if not acted:
            return current
        return self._read_local() if not self.present else self.desired(current)

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if not self.present:
            return {"store": self.store, "digest": state.get("digest"), "lower": [], "layers": [], "config": {},
                    "process": {}, "image": {"format": "registry", "reference": str(self.reference)}}
        return image_result(self.pulled)


def _digest_of(record: t.Optional[image_store.ImageRecord], ref: refs.Reference) -> t.Optional[str]:
    if record is None:
        return None
    if ref.digest:
        return ref.digest
    return record.tags.get(t.cast(str, ref.tagged))
