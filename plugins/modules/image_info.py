#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_info
short_description: List the images and layers of a kernelbox layer store
version_added: 0.1.0
description:
  - Returns what C(podman images) and C(podman image inspect) would tell about the images M(kernelbox.containers.image_layers)
    pulled or unpacked into a layer store. Each image has its ID (the config digest), its tags and digests, the
    platform, its size, its layers, whether every layer is present, and the overlays that use it.
  - Also returns every layer in the store with the images that use it and the overlays that mount it, and the
    leftovers of interrupted downloads and unpacks that M(kernelbox.containers.image_prune) would remove.
  - It never changes anything and never uses the network.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes.INFO_MODULE
  - kernelbox.containers._requirements
options:
  name:
    description:
      - Only the images these references name (a tag like C(busybox:1.36), normalised as in
        M(kernelbox.containers.image_layers), or a C(name@digest)). Omitted, every image in the store.
      - A name the store does not hold is not an error; RV(images) then has no entry for it.
    type: list
    elements: str
  store:
    description: The layer store.
    type: path
    default: /var/lib/kernelbox/layers
notes:
  - Requires root on the target (the store is mode 0700).
  - Images unpacked from files are listed with their source path; images unpacked before this module existed
    have no record until M(kernelbox.containers.image_layers) runs for them again, and their layers are listed
    with no image.
seealso:
  - module: kernelbox.containers.image_layers
  - module: kernelbox.containers.image_prune
"""

EXAMPLES = r"""
- name: Every image in the default store
  kernelbox.containers.image_info:
  register: store

- name: Show them like podman images
  ansible.builtin.debug:
    msg: "{{ item.tags | join(',') or '<none>' }} {{ item.id[7:19] }} {{ (item.size / 1048576) | round(1) }} MB"
  loop: "{{ store.images }}"
  loop_control:
    label: "{{ item.id }}"

- name: Is this image there, complete, and which digest does its tag point to?
  kernelbox.containers.image_info:
    name: [docker.io/library/busybox:1.36]
  register: busybox

- name: Fail when the image is missing
  ansible.builtin.assert:
    that: busybox.images | length == 1 and busybox.images[0].complete
"""

RETURN = r"""
images:
  description: The images, sorted by ID.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The image ID, its config digest (a rootfs tarball's is the tarball's digest).
      type: str
    tags:
      description: Its names, as normalised C(registry/repository:tag) references; a tag names one image at a time.
      type: list
      elements: str
    digests:
      description: C(registry/repository@digest) references it was pulled by (index and platform manifest).
      type: list
      elements: str
    manifest_digest:
      description: The digest of its platform manifest.
      type: str
    platform:
      description: Its platform, C(os/architecture[/variant]).
      type: str
    created:
      description: The creation time from its config, when set.
      type: str
    size:
      description: Bytes of its layers' uncompressed contents in the store (layers shared with other images count for each).
      type: int
    download_size:
      description: Bytes of its layer blobs as a registry serves them (compressed).
      type: int
    layers:
      description: Its layers' diff_ids, base first.
      type: list
      elements: str
    complete:
      description: Whether every layer is present in the store.
      type: bool
    dangling:
      description: Whether it lost its last tag to a newer image (what M(kernelbox.containers.image_prune) removes by default).
      type: bool
    source:
      description: V(registry), or the path of the image file it was unpacked from.
      type: str
    recorded_at:
      description: When its record last changed (UTC).
      type: str
    in_use:
      description: Mount points of the overlays that use one of its layers.
      type: list
      elements: str
  sample:
    - id: "sha256:df04..."
      tags: ["docker.io/library/busybox:1.36"]
      digests: ["docker.io/library/busybox@sha256:9ae9...", "docker.io/library/busybox@sha256:3fbc..."]
      manifest_digest: "sha256:3fbc..."
      platform: linux/amd64
      created: "2024-05-18T00:00:00Z"
      size: 4261888
      download_size: 2152262
      layers: ["sha256:0a8e..."]
      complete: true
      dangling: false
      source: registry
      recorded_at: "2026-12-07T13:52:00Z"
      in_use: ["/var/lib/kernelbox/rootfs/web/merged"]
layers:
  description: Every layer directory in the store, sorted by diff_id.
  returned: always
  type: list
  elements: dict
  contains:
    diff_id:
      description: The layer's name, the sha256 of its uncompressed tar.
      type: str
    status:
      description: V(present), or V(partial) for a directory without a valid completion marker.
      type: str
    size:
      description: Bytes of its uncompressed tar (null when partial).
      type: int
    images:
      description: IDs of the images that use it; empty for a layer no image uses.
      type: list
      elements: str
    in_use:
      description: Mount points of the overlays that have it as a lower layer.
      type: list
      elements: str
leftovers:
  description: Interrupted downloads (kept so the next pull resumes them) and interrupted unpacks.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path, relative to the store.
      type: str
    size:
      description: Bytes.
      type: int
    why:
      description: What it is.
      type: str
store:
  description: The layer store.
  returned: always
  type: str
actions:
  description: Always empty; this module changes nothing.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.image_store import (
    INFO_ARGUMENT_SPEC, ImageInfoResource)


def main() -> None:
    module = AnsibleModule(argument_spec=INFO_ARGUMENT_SPEC, supports_check_mode=True)
    flow.run(module, ImageInfoResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
