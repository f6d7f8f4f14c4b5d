#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_prune
short_description: Remove unused images and layers from a kernelbox layer store
version_added: 0.1.0
description:
  - Collects what a layer store no longer needs, as C(podman image prune) and C(docker image prune) do.
  - Removes dangling images (those whose last tag moved to a newer image, for example when C(pull=always) found a
    new digest), or with O(all=true) every image no overlay uses. Then it removes every layer that no remaining
    image uses, and the leftovers of interrupted downloads and unpacks.
  - Nothing an overlay uses is removed. An image with a layer that is a lower layer of a mounted overlay is kept,
    and so is such a layer when no image uses it (a warning names the overlay). Each removal is checked again
    just before it is made, while no pull or unpack runs on the store.
  - Check mode lists what would go; a second run changes nothing.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  all:
    description:
      - Remove every image no overlay uses, tagged or not, not only dangling ones (C(podman image prune --all)).
        The next M(kernelbox.containers.image_layers) run for such an image pulls or unpacks it again.
    type: bool
    default: false
  store:
    description: The layer store.
    type: path
    default: /var/lib/kernelbox/layers
notes:
  - Requires root on the target.
  - An overlay is "using" a layer only while it is mounted, in the module's mount namespace. A container whose root
    filesystem is unmounted (M(kernelbox.containers.overlay_rootfs) O(kernelbox.containers.overlay_rootfs#module:state=absent))
    does not protect its image.
  - Layers unpacked before images were recorded in the store (see M(kernelbox.containers.image_info)) have no
    image; run M(kernelbox.containers.image_layers) for their image again before pruning to keep them.
seealso:
  - module: kernelbox.containers.image_info
  - module: kernelbox.containers.image_layers
"""

EXAMPLES = r"""
- name: Remove dangling images and unused layers (what docker image prune does)
  kernelbox.containers.image_prune:
  register: pruned

- name: Say what it freed
  ansible.builtin.debug:
    msg: "{{ pruned.layers | length }} layers, {{ (pruned.space_reclaimed / 1048576) | round(1) }} MB"

- name: Keep only the images running containers use
  kernelbox.containers.image_prune:
    all: true

- name: What would go, without removing anything
  kernelbox.containers.image_prune:
    all: true
  check_mode: true
"""

RETURN = r"""
images:
  description: IDs of the images removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
  sample: ["sha256:df04..."]
layers:
  description: diff_ids of the layers removed.
  returned: always
  type: list
  elements: str
leftovers:
  description: Interrupted downloads and unpacks removed, as paths relative to the store.
  returned: always
  type: list
  elements: str
  sample: ["downloads/sha256/6016....partial"]
kept:
  description: Layers no image uses that stayed because a mounted overlay uses them.
  returned: always
  type: list
  elements: dict
  contains:
    diff_id:
      description: The layer.
      type: str
    in_use:
      description: Mount points of the overlays using it.
      type: list
      elements: str
space_reclaimed:
  description: Bytes freed (uncompressed layer sizes and leftover file sizes).
  returned: always
  type: int
  sample: 4261888
store:
  description: The layer store.
  returned: always
  type: str
actions:
  description: The removals made (in check mode, planned), each with its reason.
  returned: always
  type: list
  elements: str
  sample:
    - "remove image sha256:df04... (docker.io/library/busybox@sha256:9ae9...) (dangling: its tags moved to newer images)"
    - "remove layer sha256:0a8e... (4.1 MB) (no image uses it)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.image_store import (
    PRUNE_ARGUMENT_SPEC, ImagePruneResource)


def main() -> None:
    module = AnsibleModule(argument_spec=PRUNE_ARGUMENT_SPEC, supports_check_mode=True)
    flow.run(module, ImagePruneResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
