# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image records of a layer store: tags move between images, merges, what needs saving (plain files)."""
import json
import os

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import image_store

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
TAG = "127.0.0.1:5000/kbt/img:latest"


def record(image_id, tags=None, digests=()):
    return image_store.ImageRecord(id=image_id, layers=[{"diff_id": "sha256:" + "c" * 64}], config={"os": "linux"},
                                   platform="linux/amd64", tags=dict(tags or {}), digests=list(digests),
                                   source="registry")


def test_save_records_and_moves_tags(tmp_path):
    store = str(tmp_path / "store")
    assert image_store.needs_save([], record(A, {TAG: A})) == ["no record of image %s" % A]
    assert image_store.save(store, record(A, {TAG: A}, ["127.0.0.1:5000/kbt/img@" + A])) == ["recorded image " + A]
    assert oct(os.stat(store).st_mode & 0o777) == "0o700"
    images = image_store.list_images(store)
    assert [r.id for r in images] == [A] and images[0].tags == {TAG: A} and not images[0].dangling
    assert image_store.needs_save(images, record(A, {TAG: A})) == []
    assert image_store.save(store, record(A, {TAG: A})) == []  # nothing new: not even the time stamp moves
    # the tag moves to a newer image; the old one keeps its digest name but is dangling
    newer = record(B, {TAG: B})
    assert image_store.needs_save(images, newer) == ["no record of image %s" % B,
                                                     "the tag %s is on image %s" % (TAG, A)]
    assert image_store.save(store, newer) == ["the tag %s moved from image %s" % (TAG, A), "recorded image " + B]
    old, new = image_store.list_images(store)
    assert old.tags == {} and old.dangling and old.digests == ["127.0.0.1:5000/kbt/img@" + A]
    assert new.tags == {TAG: B} and image_store.find_tag([old, new], TAG).id == B
    assert image_store.find_digest([old, new], "127.0.0.1:5000/kbt/img@" + A).id == A
    assert image_store.layer_users([old, new]) == {"sha256:" + "c" * 64: [A, B]}


def test_merge_adds_names_and_untag(tmp_path):
    store = str(tmp_path / "store")
    image_store.save(store, record(A, {TAG: A}))
    other = "127.0.0.1:5000/kbt/img:v1"
    assert image_store.needs_save(image_store.list_images(store), record(A, {other: A})) == [
        "image %s is not yet named %s" % (A, other)]
    image_store.save(store, record(A, {other: A}))
    assert image_store.load(store, A).tags == {TAG: A, other: A}
    image_store.untag(store, A, TAG)
    assert image_store.load(store, A).tags == {other: A}


def test_damaged_or_foreign_records_are_ignored(tmp_path):
    store = str(tmp_path / "store")
    image_store.save(store, record(A, {TAG: A}))
    folder = os.path.join(store, "images", "sha256")
    with open(os.path.join(folder, "b" * 64 + ".json"), "w") as handle:
        handle.write("{broken")
    with open(os.path.join(folder, "c" * 64 + ".json"), "w") as handle:
        json.dump(dict(record(A).to_json()), handle)  # its id does not match its name
    assert [r.id for r in image_store.list_images(store)] == [A]


def _layer(diff_id, images=(), mounts=(), size=10):
    return image_store.StoredLayer(diff_id, "present", size, list(images), list(mounts))


def test_prune_plan_keeps_what_overlays_and_images_use():
    base, v1_top, v2_top, orphan, mounted_orphan = ("sha256:" + c * 64 for c in "12345")
    old = image_store.ImageRecord(id=A, layers=[{"diff_id": base}, {"diff_id": v1_top}], config={}, dangling=True)
    new = image_store.ImageRecord(id=B, layers=[{"diff_id": base}, {"diff_id": v2_top}], config={}, tags={TAG: B})
    layers = {base: _layer(base, [A, B]), v1_top: _layer(v1_top, [A]), v2_top: _layer(v2_top, [B]),
              orphan: _layer(orphan), mounted_orphan: _layer(mounted_orphan, mounts=["/m"])}
    left = [image_store.Leftover("downloads/sha256/x.partial", 5, "an interrupted download")]
    plan = image_store.prune_plan([old, new], layers, left, remove_all=False)
    assert [r.id for r, _why in plan.images] == [A]
    assert [layer.diff_id for layer, _why in plan.layers] == [v1_top, orphan]
    assert plan.kept == [(mounted_orphan, ["/m"])] and plan.space == 25
    everything = image_store.prune_plan([old, new], layers, [], remove_all=True)
    assert [r.id for r, _why in everything.images] == [A, B]
    assert [layer.diff_id for layer, _why in everything.layers] == [base, v1_top, v2_top, orphan]
    layers[v1_top].mounts = ["/c"]  # the dangling image's layer is mounted: the image and all its layers stay
    held = image_store.prune_plan([old, new], layers, [], remove_all=True)
    assert [r.id for r, _why in held.images] == [B]
    assert [layer.diff_id for layer, _why in held.layers] == [v2_top, orphan]
