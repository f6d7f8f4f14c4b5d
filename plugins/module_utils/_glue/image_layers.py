# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the image_layers module and the layer store."""

from __future__ import annotations

import functools
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import image_pull
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (
    image_manifest, image_source, layer_store, mounts, overlay)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    src=dict(type="path"),
    name=dict(type="str"),
    format=dict(type="str", default="auto", choices=["auto"] + list(image_source.FORMATS)),
    reference=dict(type="str"),
    digest=dict(type="str"),
    store=dict(type="path", default=layer_store.DEFAULT_STORE),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    **image_pull.REGISTRY_OPTIONS,
)
MODULE_KWARGS: t.Dict[str, t.Any] = dict(
    mutually_exclusive=[("src", "name")],
    required_one_of=[("src", "name")],
    required_together=image_pull.REGISTRY_TOGETHER,
    supports_check_mode=True,
)


def resource_for(params: t.Dict[str, t.Any], check_mode: bool) -> Resource:
    """An image from a file on the target (``src``) or from a registry (``name``)."""
    if params.get("name"):
        return image_pull.RegistryImageResource(params, check_mode)
    return ImageLayersResource(params, check_mode)


def is_file_image(image: str) -> bool:
    """Whether a container's ``image`` names a file on the target (an absolute path) rather than a reference."""
    return image.startswith("/")


def resource_params(image: str, **options: t.Any) -> t.Dict[str, t.Any]:
    """Every image_layers parameter, defaults filled in, for ``resource_for()`` called from another module.

    ``image`` is a path (``src``) or a reference (``name``); ``options`` are any other image_layers
    options (``store``, ``pull``, ``platform``, ``username``, ``password``, ``auth_file``, ``ca_path``...).
    """
    params = {key: spec.get("default") for key, spec in ARGUMENT_SPEC.items()}
    params["src" if is_file_image(image) else "name"] = image
    unknown = sorted(set(options) - set(ARGUMENT_SPEC))
    if unknown:
        raise ValidationError("unknown image option(s): %s" % ", ".join(unknown))
    params.update({key: value for key, value in options.items() if value is not None})
    return params


def _size(value: t.Optional[int]) -> str:
    if value is None:
        return "size unknown"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= scale:
            return "%.1f %s" % (value / scale, unit)
    return "%d B" % value


class ImageLayersResource(Resource):
    """The layers of one local image, unpacked into a content-addressed store."""

    def validate(self) -> None:
        params = self.params
        self.src = validate.absolute_path(params["src"], "src")
        self.store = validate.absolute_path(params["store"], "store")
        overlay.escape_path(self.store, "store")  # its layers become overlay lower paths
        reason = mounts.forbidden_mount_point(self.store)
        if reason:
            raise ValidationError("store: %s cannot be the layer store: %s" % (self.store, reason))
        self.digest = image_manifest.normalise_digest(params["digest"]) if params["digest"] else None
        self.platform = image_pull.platform_option(params["platform"])
        self.reference = params["reference"] or None
        if params.get("pull", "missing") != "missing" or params.get("username") or params.get("auth_file") \
                or params.get("ca_path"):
            raise ValidationError("pull, username, password, auth_file and ca_path are for images given by name "
                                  "(from a registry), not for src")

    # --- read -----------------------------------------------------------------------------------

    def read(self) -> t.Dict[str, t.Any]:
        src = os.path.realpath(self.src)  # the input may be reached through a symlink; it is only read
        if not os.path.exists(src):
            raise ValidationError("src: %s does not exist" % self.src)
        self.image = image_source.open_image(src, self.params["format"], self.reference, self.platform)
        self.diff_ids: t.List[str] = []
        for layer in self.image.layers:
            self.diff_ids.append(self._rootfs_ids(layer) if self.image.format == "rootfs-tar"
                                 else t.cast(str, layer.diff_id))
        self._check_pin()
        if self.image.platform and not image_manifest.platform_matches(self.platform, self.image.platform):
            self.warnings.append("the image is for %s, not %s: its programs may not run here"
                                 % (self.image.platform, self.platform))
        return {"store": self.store, "layers": [self._layer_state(i) for i in range(len(self.image.layers))]}

    def _rootfs_ids(self, layer: image_source.Layer) -> str:
        """A plain tarball has no config: hash it (cheap), and hash its content only the first time."""
        layer.digest = layer_store.blob_digest(layer)
        known = layer_store.diff_id_of_blob(self.store, layer.digest)
        if known:
            return known
        _digest, diff_id = layer_store.blob_and_diff_id(layer)
        return diff_id

    def _check_pin(self) -> None:
        if not self.digest:
            return
        image = self.image
        pinned = {"oci-layout": image.manifest_digest, "oci-archive": image.manifest_digest,
                  "docker-archive": image.config_digest, "rootfs-tar": image.layers[0].digest}[image.format]
        if pinned != self.digest:
            raise KernelboxError("digest: %s is %s, not the pinned %s" % (self.src, pinned, self.digest))

    def _layer_state(self, index: int) -> t.Dict[str, t.Any]:
        diff_id = self.diff_ids[index]
        return {"diff_id": diff_id, "status": layer_store.status(self.store, diff_id)}

    # --- desired and plan -----------------------------------------------------------------------

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        wanted = layer_store.PRESENT if self.params["state"] == "present" else layer_store.ABSENT
        return {"store": self.store, "layers": [dict(entry, status=wanted) for entry in current["layers"]]}

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        steps = []
        count = len(self.image.layers)
        mounted = None
        for index, (now, want) in enumerate(zip(current["layers"], desired["layers"])):
            if now["status"] == want["status"]:
                continue
            layer = self.image.layers[index]
            diff_id = now["diff_id"]
            if want["status"] == layer_store.PRESENT:
                why = "not in the store" if now["status"] == layer_store.ABSENT else \
                    "partially unpacked (no valid completion marker): unpacking it again"
                steps.append(Step("unpack layer %d/%d %s (%s, %s) into %s"
                                  % (index + 1, count, diff_id, layer.media_type.rsplit(".", 1)[-1],
                                     _size(layer.size), layer_store.lower_dir(self.store, diff_id)),
                                  functools.partial(self._unpack, index), why))
            else:
                if mounted is None:
                    mounted = overlay.read_all_mounts()
                users = overlay.overlays_with_lower(layer_store.layer_path(self.store, diff_id), mounted)
                if users:
                    raise KernelboxError("layer %s is a lower layer of the overlay at %s; unmount it first"
                                         % (diff_id, users[0].info.mount_point))
                steps.append(Step("remove layer %s" % diff_id,
                                  functools.partial(layer_store.remove_layer, self.store, diff_id), "state=absent"))
        return steps

    def _unpack(self, index: int) -> None:
        marker = layer_store.unpack_layer(self.store, self.image.layers[index], self.diff_ids[index])
        if marker.get("skipped"):
            self.warnings.append("layer %s: not reproduced exactly: %s"
                                 % (marker.get("diff_id"), "; ".join(marker["skipped"])))

    # --- report ---------------------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        if not acted:
            return current
        return {"store": self.store, "layers": [self._layer_state(i) for i in range(len(self.image.layers))]}

    def diff_view(self, state: t.Any) -> t.Any:
        if not state:
            return {}
        return {"store": state["store"], "layers": ["%s %s" % (e["diff_id"], e["status"]) for e in state["layers"]]}

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        image = self.image
        layers = []
        for index, layer in enumerate(image.layers):
            diff_id = self.diff_ids[index]
            marker = layer_store.read_marker(self.store, diff_id) or {}
            layers.append({
                "diff_id": diff_id,
                "digest": layer.digest or marker.get("digest"),
                "media_type": layer.media_type,
                "size": layer.size if layer.size is not None else marker.get("compressed_size"),
                "path": layer_store.lower_dir(self.store, diff_id),
                "status": state["layers"][index]["status"],
            })
        summary = image_manifest.runtime_config(image.config)
        present = self.params["state"] == "present"
        image.close()
        return {
            "store": self.store,
            "lower": [entry["path"] for entry in reversed(layers)] if present else [],
            "layers": layers,
            "config": summary,
            "process": image_manifest.process_of(summary),
            "image": {"format": image.format, "source": image.source, "manifest_digest": image.manifest_digest,
                      "config_digest": image.config_digest, "reference": image.reference,
                      "platform": image.platform},
        }
