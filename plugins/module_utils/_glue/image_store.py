# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the image store's life cycle: image_info (list) and image_prune (collect)."""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step, ValidationError
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (
    image_store, layer_store, mounts, overlay)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import reference as refs
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry.pull import human_size
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

INFO_ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="list", elements="str"),
    store=dict(type="path", default=layer_store.DEFAULT_STORE),
)
PRUNE_ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    all=dict(type="bool", default=False),
    store=dict(type="path", default=layer_store.DEFAULT_STORE),
)


def _store_option(params: t.Mapping[str, t.Any]) -> str:
    store = validate.absolute_path(params["store"], "store")
    reason = mounts.forbidden_mount_point(store)
    if reason:
        raise ValidationError("store: %s cannot be the layer store: %s" % (store, reason))
    return store


class _LowerUsers:
    """Which overlays have a directory as a lower layer, from one read of the mount table."""

    def __init__(self) -> None:
        self.all_mounts = overlay.read_all_mounts()

    def __call__(self, path: str) -> t.List[str]:
        return [m.info.mount_point for m in overlay.overlays_with_lower(path, self.all_mounts)]


def _fresh_lower_users(path: str) -> t.List[str]:
    return _LowerUsers()(path)


def _read_store(store: str) -> t.Tuple[t.List[image_store.ImageRecord], t.Dict[str, image_store.StoredLayer],
                                       t.List[image_store.Leftover]]:
    images = image_store.list_images(store)
    return images, image_store.inventory(store, images, _LowerUsers()), image_store.leftovers(store)


def image_view(record: image_store.ImageRecord, layers: t.Mapping[str, image_store.StoredLayer]) -> t.Dict[str, t.Any]:
    own = [layers.get(diff_id) for diff_id in record.diff_ids]
    present = [layer for layer in own if layer is not None and layer.status == layer_store.PRESENT]
    return {
        "id": record.id,
        "tags": sorted(record.tags),
        "digests": sorted(record.digests),
        "manifest_digest": record.manifest_digest,
        "platform": record.platform,
        "created": record.config.get("created"),
        "size": sum(layer.size or 0 for layer in present),
        "download_size": sum(int(layer.get("size") or 0) for layer in record.layers),
        "layers": list(record.diff_ids),
        "complete": len(present) == len(own),
        "dangling": record.dangling,
        "source": record.source,
        "recorded_at": record.recorded_at,
        "in_use": sorted({point for layer in own if layer is not None for point in layer.mounts}),
    }


def layer_view(layer: image_store.StoredLayer) -> t.Dict[str, t.Any]:
    return {"diff_id": layer.diff_id, "status": layer.status, "size": layer.size, "images": list(layer.images),
            "in_use": list(layer.mounts)}


class ImageInfoResource(Resource):
    """Read-only: the images and layers of a layer store."""

    def validate(self) -> None:
        self.store = _store_option(self.params)
        self.names = [refs.parse(name, "name") for name in (self.params.get("name") or [])]

    def read(self) -> t.Dict[str, t.Any]:
        images, layers, left = _read_store(self.store)
        if self.params.get("name") is not None:
            images = [record for record in images if any(self._names(record, ref) for ref in self.names)]
        return {"images": [image_view(record, layers) for record in images],
                "layers": [layer_view(layer) for _diff_id, layer in sorted(layers.items())],
                "leftovers": [{"path": entry.path, "size": entry.size, "why": entry.why} for entry in left]}

    @staticmethod
    def _names(record: image_store.ImageRecord, ref: refs.Reference) -> bool:
        if ref.digest:
            return ref.by_digest(ref.digest) in record.digests
        return ref.tagged in record.tags

    def desired(self, current: t.Any) -> t.Any:
        return current

    def plan(self, current: t.Any, desired: t.Any) -> t.List[Step]:
        return []

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return dict(state, store=self.store)


class ImagePruneResource(Resource):
    """Dangling (or, with all, unused) images, the layers no image uses, and interrupted downloads and unpacks."""

    def validate(self) -> None:
        self.store = _store_option(self.params)
        self.remove_all = bool(self.params["all"])

    def read(self) -> t.Dict[str, t.Any]:
        self.images, self.layers, self.left = _read_store(self.store)
        return self._view(self.images, list(self.layers), [entry.path for entry in self.left])

    @staticmethod
    def _view(images: t.Sequence[image_store.ImageRecord], layers: t.Sequence[str],
              left: t.Sequence[str]) -> t.Dict[str, t.Any]:
        return {"images": sorted(record.id for record in images), "layers": sorted(layers), "leftovers": sorted(left)}

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        self.prune = image_store.prune_plan(self.images, self.layers, self.left, self.remove_all)
        images = {record.id for record, _why in self.prune.images}
        layers = {layer.diff_id for layer, _why in self.prune.layers}
        return self._view([r for r in self.images if r.id not in images],
                          [d for d in self.layers if d not in layers], [])

    def plan(self, current: t.Any, desired: t.Any) -> t.List[Step]:
        steps = []
        for record, why in self.prune.images:
            name = ", ".join(sorted(record.tags) or sorted(record.digests)[:1]) or record.source or "no name"
            steps.append(Step("remove image %s (%s)" % (record.id, name),
                              functools.partial(image_store.remove_unused_image, self.store, record.id,
                                                self.remove_all, _fresh_lower_users), why))
        for layer, why in self.prune.layers:
            steps.append(Step("remove layer %s (%s)" % (layer.diff_id, human_size(layer.size)),
                              functools.partial(image_store.remove_unused_layer, self.store, layer.diff_id,
                                                _fresh_lower_users), why))
        for entry in self.prune.leftovers:
            steps.append(Step("remove %s (%s)" % (entry.path, human_size(entry.size)),
                              functools.partial(image_store.remove_leftover, self.store, entry), entry.why))
        return steps

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        return self.read() if acted else current

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        kept = [{"diff_id": diff_id, "in_use": points} for diff_id, points in self.prune.kept]
        for diff_id, points in self.prune.kept:
            self.warnings.append("layer %s is not used by any image, but it stays: it is a lower layer of the "
                                 "overlay at %s" % (diff_id, ", ".join(points)))
        return {
            "store": self.store,
            "images": [record.id for record, _why in self.prune.images],
            "layers": [layer.diff_id for layer, _why in self.prune.layers],
            "leftovers": [entry.path for entry in self.prune.leftovers],
            "kept": kept,
            "space_reclaimed": self.prune.space,
        }
