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
    image_manifest, image_source, image_store, layer_store, mounts, overlay)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import reference as refs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    src=dict(type="path"),
    name=dict(type="str"),
    format=dict(type="str", default="auto", choices=["auto"] + list(image_source.FORMATS)),
    reference=dict(type="str"),
    digest=dict(type="str"),
    store=dict(type="path", default=layer_store.DEFAULT_STORE),
    max_layer_size=dict(type="str", default="16G"),
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


def _after(first: t.Callable[[], t.Any], then: t.Callable[[], t.Any]) -> None:
    first()
    then()


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
        self.limit = int(validate.size_bytes(params["max_layer_size"], "max_layer_size")) or None
        self.fresh_store = False

    # --- read -----------------------------------------------------------------------------------

    def read(self) -> t.Dict[str, t.Any]:
        self.fresh_store = not os.path.lexists(self.store)
        src = os.path.realpath(self.src)  # the input may be reached through a symlink; it is only read
        if not os.path.exists(src):
            raise ValidationError("src: %s does not exist" % self.src)
        self.image = image_source.open_image(src, self.params["format"], self.reference, self.platform)
        self.diff_ids: t.List[str] = []
        for layer in self.image.layers:
            if self.limit is not None and layer.size is not None and layer.size > self.limit:
                raise KernelboxError("%s is %s bytes, more than max_layer_size (%s bytes); refusing it"
                                     % (layer.where, layer.size, self.limit))
            self.diff_ids.append(self._rootfs_ids(layer) if self.image.format == "rootfs-tar"
                                 else t.cast(str, layer.diff_id))
        self._check_pin()
        if self.image.platform and not image_manifest.platform_matches(self.platform, self.image.platform):
            self.warnings.append("the image is for %s, not %s: its programs may not run here"
                                 % (self.image.platform, self.platform))
        self.record = self._wanted_record()
        self.images = image_store.list_images(self.store)
        return self._state()

    def _state(self) -> t.Dict[str, t.Any]:
        recorded = image_store.load(self.store, self.record.id)
        return {"store": self.store, "image": recorded.id if recorded else None,
                "layers": [self._layer_state(i) for i in range(len(self.image.layers))]}

    def _wanted_record(self) -> image_store.ImageRecord:
        """The store's record of this image: ID = config digest (a rootfs tarball's own digest), named by the
        image's reference when that is a full one (``localhost/web:latest``; skopeo's bare ``kbt`` is not)."""
        image = self.image
        image_id = image.config_digest or t.cast(str, image.layers[0].digest)
        tags: t.Dict[str, t.Optional[str]] = {}
        if image.reference and refs.looks_like_reference(image.reference):
            ref = refs.parse(image.reference)
            if ref.tagged:
                tags[ref.tagged] = image.manifest_digest
        layers = [{"diff_id": diff_id, "digest": layer.digest, "size": layer.size, "media_type": layer.media_type}
                  for layer, diff_id in zip(image.layers, self.diff_ids)]
        return image_store.ImageRecord(id=image_id, layers=layers, config=image.config or {},
                                       platform=image.platform, manifest_digest=image.manifest_digest, tags=tags,
                                       source=image.source)

    def _rootfs_ids(self, layer: image_source.Layer) -> str:
        """A plain tarball has no config: hash it (cheap), and hash its content only the first time."""
        layer.digest = layer_store.blob_digest(layer)
        known = layer_store.diff_id_of_blob(self.store, layer.digest)
        if known:
            return known
        _digest, diff_id = layer_store.blob_and_diff_id(layer, self.limit)
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
        present = self.params["state"] == "present"
        wanted = layer_store.PRESENT if present else layer_store.ABSENT
        shared = self._shared_layers() if not present else set()
        return {"store": self.store, "image": self.record.id if present else None,
                "layers": [dict(entry, status=entry["status"] if entry["diff_id"] in shared else wanted)
                           for entry in current["layers"]]}

    def _shared_layers(self) -> t.Set[str]:
        """Layers another recorded image uses: state=absent leaves them."""
        return set(image_store.layer_users(r for r in self.images if r.id != self.record.id))

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        steps = self._layer_steps(current, desired)
        return self._hold_writers(steps + self._record_steps(current))

    def _hold_writers(self, steps: t.List[Step]) -> t.List[Step]:
        """The store's writers lock, shared, from the first step to the last: a prune cannot take layers
        this run unpacked before its last step records the image that uses them."""
        if not steps:
            return steps
        holder = image_store.SharedWriters(self.store)
        first, last = steps[0], steps[-1]
        steps[0] = Step(first.what, functools.partial(_after, holder.acquire, first.apply), first.why)
        steps[-1] = Step(steps[-1].what, functools.partial(_after, steps[-1].apply, holder.release), last.why)
        return [Step(step.what, functools.partial(self._or_undo, step.apply, holder), step.why) for step in steps]

    def _or_undo(self, apply: t.Callable[[], t.Any], holder: t.Any) -> None:
        """A failing step: let go of the store, and a store this run made holds nothing: remove it again."""
        try:
            apply()
        except BaseException:
            holder.release()
            if self.fresh_store:
                layer_store.remove_skeleton(self.store)
            raise

    def _layer_steps(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
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

    def _record_steps(self, current: t.Dict[str, t.Any]) -> t.List[Step]:
        """Recorded last, once every layer is in (an image whose layer was refused is not recorded)."""
        if self.params["state"] == "absent":
            if current["image"] is None:
                return []
            return [Step("remove image %s (%s) from the store's records" % (self.record.id, self.image.source),
                         functools.partial(image_store.remove_record, self.store, self.record.id), "state=absent")]
        reasons = image_store.needs_save(self.images, self.record)
        if not reasons:
            return []
        return [Step("record image %s (%s)" % (self.record.id, ", ".join(sorted(self.record.tags)) or self.image.source),
                     functools.partial(image_store.save, self.store, self.record), "; ".join(reasons))]

    def _unpack(self, index: int) -> None:
        marker = layer_store.unpack_layer(self.store, self.image.layers[index], self.diff_ids[index], self.limit)
        if marker.get("skipped"):
            self.warnings.append("layer %s: not reproduced exactly: %s"
                                 % (marker.get("diff_id"), "; ".join(marker["skipped"])))

    # --- report ---------------------------------------------------------------------------------

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        if not acted:
            return current
        return self._state()

    def diff_view(self, state: t.Any) -> t.Any:
        if not state:
            return {}
        return {"store": state["store"], "image": state.get("image"),
                "layers": ["%s %s" % (e["diff_id"], e["status"]) for e in state["layers"]]}

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
