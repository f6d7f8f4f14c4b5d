#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: overlay_rootfs
short_description: Mount a container root filesystem with overlayfs
version_added: 0.1.0
description:
  - Mounts read-only lower directories under one writable upper directory at O(merged), with the overlayfs
    C(mount(2)) call (never the C(mount) program). The mount is made on a directory file descriptor, so a path
    swapped for a symlink after the checks cannot redirect it.
  - Reads the current state from C(/proc/self/mountinfo), decoding its octal escapes and overlayfs's own
    escaping. The same mount is left alone; a mount at O(merged) with other layers or options is unmounted and
    mounted again, but only when no process uses it. When processes use it (their root, working directory,
    open files or memory maps are on it, also from other mount namespaces such as a running container), the
    module fails and names them.
  - O(state=absent) also removes the upper and work directories (never a lower directory) and the empty mount
    point directory.
  - All paths must be absolute, without C(..), and without a symlink anywhere on them.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  merged:
    description:
      - Where the overlay is mounted (the container's root filesystem). Created if missing.
      - Never C(/), C(/etc), C(/usr), C(/var) and the other system directories, never inside C(/proc), C(/sys)
        or C(/dev), and never a directory on which something other than an overlay is mounted.
    type: path
    required: true
  lower:
    description:
      - The read-only layers, B(topmost first), the order of overlayfs's own C(lowerdir=top:...:bottom) option.
        A file in the first directory hides the same file in the ones after it.
      - This is the reverse of the order in which image manifests list layers (base first). The RV(kernelbox.containers.image_layers#module:lower)
        list returned by M(kernelbox.containers.image_layers) is already topmost first and can be passed as it is.
      - The directories must exist; they are never created, changed or removed.
      - Required with O(state=mounted). At most 500 layers, and the whole option text must fit in 4095 bytes
        (the C(mount(2)) limit), so very many long paths are refused with a hint.
    type: list
    elements: path
  upper:
    description:
      - The writable layer. Files written through O(merged) land here (copy-up); files deleted through O(merged)
        leave a whiteout here. Created if missing.
      - Required with O(work) unless O(readonly=true).
      - With O(state=absent) it is removed; it must then be the upper the mount at O(merged) uses (if mounted).
    type: path
  work:
    description:
      - overlayfs's scratch directory. It must be on the same filesystem (the same mount) as O(upper), must not
        be inside O(upper), and must be empty apart from what overlayfs itself left there for the same upper.
        Created if missing.
    type: path
  readonly:
    description:
      - Mount without an upper layer; the result is read-only. overlayfs then needs at least two O(lower)
        directories.
    type: bool
    default: false
  options:
    description:
      - Extra mount options, from an allowlist. Anything else is refused.
      - overlayfs options with a value (booleans mean V(on)/V(off)). C(index), C(metacopy), C(nfs_export) take
        V(on) or V(off); C(redirect_dir) takes V(on), V(follow), V(nofollow) or V(off); C(xino) takes V(on),
        V(off) or V(auto); C(uuid) takes V(on), V(off), V(auto) or V(null).
      - overlayfs flags, true or false. C(volatile) (no syncs; after a crash the upper must be thrown away;
        after a clean unmount by this module the upper is synced and can be mounted again), C(userxattr),
        C(default_permissions).
      - Mount flags, true or false. C(nosuid), C(nodev), C(noexec), C(noatime). A change of only these is done in
        place, without unmounting.
      - The options are recorded in the mount's source (C(kernelbox:index=on,volatile)) because the kernel prints
        overlay options its own way; a second run compares the recorded options, so it reports no change.
    type: dict
    default: {}
  state:
    description:
      - V(mounted) mounts the overlay, creating O(upper), O(work) and O(merged) when missing, and remounts it when
        its layers or options differ.
      - V(unmounted) unmounts it and keeps every directory.
      - V(absent) unmounts it, removes O(upper) and O(work) (when given), and removes O(merged) if it is empty.
      - Unmounting fails, naming the processes, while anything uses the mount.
    type: str
    choices: [mounted, unmounted, absent]
    default: mounted
notes:
  - Requires root (CAP_SYS_ADMIN) on the target. The mount is made in the mount namespace of the module process.
  - Paths with a comma are refused (overlayfs splits its options at commas, and escaping them is broken on some
    kernels); C(:) and C(\) are escaped.
  - When a mount fails, the overlayfs messages from the kernel log are added to the error when C(/dev/kmsg) is
    readable.
seealso:
  - module: kernelbox.containers.image_layers
  - name: overlayfs documentation
    description: The kernel's description of overlayfs, its options and whiteouts.
    link: https://docs.kernel.org/filesystems/overlayfs.html
"""

EXAMPLES = r"""
- name: Unpack an image saved with podman save --format oci-archive
  kernelbox.containers.image_layers:
    src: /srv/images/web.oci.tar
  register: image

- name: Mount its layers under a writable upper layer
  kernelbox.containers.overlay_rootfs:
    lower: "{{ image.lower }}"
    upper: /var/lib/kernelbox/rootfs/web/upper
    work: /var/lib/kernelbox/rootfs/web/work
    merged: /var/lib/kernelbox/rootfs/web/merged
    options:
      nodev: true
      index: false

- name: Two hand-made layers, read-only; /srv/layers/app wins over /srv/layers/base
  kernelbox.containers.overlay_rootfs:
    lower:
      - /srv/layers/app
      - /srv/layers/base
    readonly: true
    merged: /srv/rootfs/app

- name: Unmount and throw the container's changes away
  kernelbox.containers.overlay_rootfs:
    merged: /var/lib/kernelbox/rootfs/web/merged
    upper: /var/lib/kernelbox/rootfs/web/upper
    work: /var/lib/kernelbox/rootfs/web/work
    state: absent
"""

RETURN = r"""
merged:
  description: The mount point.
  returned: always
  type: str
  sample: /var/lib/kernelbox/rootfs/web/merged
mounted:
  description: Whether an overlay is mounted at RV(merged) after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
lower:
  description: The lower directories of the mount, topmost first, decoded from mountinfo; empty when not mounted.
  returned: always
  type: list
  elements: str
  sample: ["/var/lib/kernelbox/layers/sha256/3f1c.../diff", "/var/lib/kernelbox/layers/sha256/0a8e.../diff"]
upper:
  description: The upper directory of the mount; null when read-only or not mounted.
  returned: always
  type: str
  sample: /var/lib/kernelbox/rootfs/web/upper
work:
  description: The work directory of the mount; null when read-only or not mounted.
  returned: always
  type: str
  sample: /var/lib/kernelbox/rootfs/web/work
readonly:
  description: Whether the mount has no upper layer; null when not mounted.
  returned: always
  type: bool
  sample: false
options:
  description: The managed options of the mount, normalised as in O(options).
  returned: always
  type: dict
  sample: {"index": "off", "nodev": true}
source:
  description: The mount's source; C(kernelbox) plus the requested overlay options for mounts made by this module.
  returned: always
  type: str
  sample: "kernelbox:index=off"
kernel_options:
  description: The overlay options exactly as the kernel reports them (after octal decoding), for reference.
  returned: always
  type: list
  elements: str
  sample: ["rw", "lowerdir=/srv/l2:/srv/l1", "upperdir=/srv/u", "workdir=/srv/w", "uuid=on"]
users:
  description: When the module refused to unmount a busy overlay, the processes using it and how.
  returned: failure
  type: list
  elements: dict
  sample: [{"pid": 4242, "name": "sh", "uses": ["cwd /var/lib/kernelbox/rootfs/web/merged/tmp"]}]
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["create upper directory /srv/c/upper (missing)", "mount overlay at /srv/c/rootfs (lower /srv/l2:/srv/l1, upper /srv/c/upper) (not mounted)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import deps, flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.overlay_rootfs import (
    ARGUMENT_SPEC, OverlayRootfsResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    deps.require(module, "psutil")
    flow.run(module, OverlayRootfsResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
