# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image layers and overlay mounts against the plain tools, measured in the same run.

1. Unpacking a 3-layer gzip image of about 100 MB (uncompressed) into the layer store, against
   ``tar -xzf`` of the same three blobs.  Ours also verifies both digests of every layer, converts
   whiteouts, extracts through dir fds and syncs the store (syncfs) before writing each marker;
   ``tar -x`` + ``sync -f`` is shown as the closest like-for-like rival.
2. Mounting and unmounting the overlay, against ``mount -t overlay`` and ``umount``.  Ours resolves
   every path without symlinks, mounts on an fd and reads mountinfo back; its unmount first scans every
   process for users of the mount (that scan is most of its cost).
3. The same two through Ansible (the module as a user runs it), once each, for scale.

Everything happens on a tmpfs inside the sandbox (/var/lib is one there), so the disk of this shared
machine does not add noise; ratios are what to read.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
import subprocess
import sys
import time

from common import REPO, ansible, interleaved, ratio_rows, table

sys.path.insert(0, os.path.join(REPO, "tests"))
importlib.import_module("conftest")   # makes ansible_collections.kernelbox.containers importable
from harness import oci_images  # noqa: E402

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (  # noqa: E402
    image_source, layer_store, mounts, overlay)

ROOT = "/var/lib/kbbench-overlay"
ROUNDS_UNPACK = 5
ROUNDS_MOUNT = 30


def layer(seed: int, files: int, size: int, extra=()):
    """A layer tar of ``files`` files of about ``size`` bytes, half random, half runs (like binaries)."""
    rng = random.Random(seed)
    entries = [{"name": "usr/", "type": "dir"}, {"name": "usr/lib%d/" % seed, "type": "dir"}]
    for index in range(files):
        length = rng.randint(size // 2, size * 3 // 2)
        body = rng.randbytes(length // 2) + bytes(length - length // 2)
        entries.append({"name": "usr/lib%d/f%05d" % (seed, index), "data": body, "mode": 0o755})
    entries.extend(extra)
    return oci_images.tar_bytes(entries)


def build_image(path: str):
    base = layer(1, 2400, 25000, [{"name": "etc/", "type": "dir"}, {"name": "etc/motd", "data": b"hi"},
                                  {"name": "etc/keep/", "type": "dir"}, {"name": "etc/keep/a", "data": b"a"}])
    middle = layer(2, 1200, 25000, [{"name": "etc/.wh.motd"}, {"name": "etc/keep/.wh..wh..opq"},
                                    {"name": "usr/lib1/.wh.f00001"}])
    top = layer(3, 400, 25000)
    oci_images.write_oci_layout(path, [base, middle, top])
    return sum(len(x) for x in (base, middle, top))


def clear(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    clear(ROOT)
    os.makedirs(ROOT)
    image_dir = os.path.join(ROOT, "image")
    start = time.perf_counter()
    total = build_image(image_dir)
    blob_dir = os.path.join(image_dir, "blobs", "sha256")
    compressed = sum(os.path.getsize(os.path.join(blob_dir, name)) for name in os.listdir(blob_dir))
    print("built a 3-layer image: %.1f MB uncompressed, %.1f MB of gzip blobs (%.1f s)"
          % (total / 1e6, compressed / 1e6, time.perf_counter() - start))
    image = image_source.open_image(image_dir)
    blobs = [os.path.join(image_dir, layer_.name) for layer_ in image.layers]
    store = os.path.join(ROOT, "store")
    tar_dir = os.path.join(ROOT, "tar")

    def ours():
        for layer_ in image.layers:
            layer_store.unpack_layer(store, layer_, layer_.diff_id)

    def tar_x():
        for index, blob in enumerate(blobs):
            target = os.path.join(tar_dir, str(index))
            os.makedirs(target)
            subprocess.run(["tar", "-xzf", blob, "-C", target], check=True)

    def tar_x_sync():
        tar_x()
        subprocess.run(["sync", "-f", tar_dir], check=True)

    samples = interleaved({"image_layers (library)": ours, "tar -xzf": tar_x, "tar -xzf + sync -f": tar_x_sync},
                          ROUNDS_UNPACK, teardown=lambda _name: (clear(store), clear(tar_dir)))
    table("unpack a 3-layer image (%.0f MB), median of %d" % (total / 1e6, ROUNDS_UNPACK),
          ratio_rows(samples, "tar -xzf"), ["candidate", "seconds", "ratio to tar -xzf"])
    ours()
    lower = [layer_store.lower_dir(store, layer_.diff_id) for layer_ in reversed(image.layers)]
    spec_dirs = {name: os.path.join(ROOT, name) for name in ("upper", "work", "merged")}
    for path in spec_dirs.values():
        os.makedirs(path, exist_ok=True)
    spec = overlay.OverlaySpec(spec_dirs["merged"], lower, spec_dirs["upper"], spec_dirs["work"], {})
    data = spec.mount_data()

    mounted = {}

    def our_mount():
        mounted["m"] = overlay.mount(spec)

    def our_unmount():
        overlay.unmount(mounted.pop("m"))

    def tool_mount():
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, spec.merged], check=True)

    def tool_unmount():
        subprocess.run(["umount", spec.merged], check=True)

    def raw_unmount():
        mounts.unmount(spec.merged)

    mount_samples = {"overlay.mount (library)": [], "mount -t overlay": []}
    unmount_samples = {"overlay.unmount (library, with busy scan)": [], "umount2 only": [], "umount": []}
    pairs = [("overlay.mount (library)", our_mount, "overlay.unmount (library, with busy scan)", our_unmount),
             ("mount -t overlay", tool_mount, "umount", tool_unmount),
             ("mount -t overlay", tool_mount, "umount2 only", raw_unmount)]
    for _round in range(ROUNDS_MOUNT):
        for mount_name, do_mount, unmount_name, do_unmount in pairs:
            began = time.perf_counter()
            do_mount()
            middle = time.perf_counter()
            do_unmount()
            ended = time.perf_counter()
            mount_samples[mount_name].append(middle - began)
            unmount_samples[unmount_name].append(ended - middle)
    table("mount the overlay (3 lowers + upper), median of %d" % ROUNDS_MOUNT,
          ratio_rows(mount_samples, "mount -t overlay"), ["candidate", "seconds", "ratio to mount(8)"])
    table("unmount it, median of %d" % ROUNDS_MOUNT,
          ratio_rows(unmount_samples, "umount"), ["candidate", "seconds", "ratio to umount(8)"])
    print("processes scanned by the busy check: %d" % len([p for p in os.listdir("/proc") if p.isdigit()]))

    clear(store)
    runner = ansible()
    rows = []
    began = time.perf_counter()
    first = runner.module("image_layers", {"src": image_dir, "store": store})
    rows.append(("image_layers module, 3 layers unpacked", time.perf_counter() - began))
    began = time.perf_counter()
    again = runner.module("image_layers", {"src": image_dir, "store": store})
    rows.append(("image_layers module, nothing to do", time.perf_counter() - began))
    args = {"lower": first["lower"], "upper": spec.upper, "work": spec.work, "merged": spec.merged}
    began = time.perf_counter()
    runner.module("overlay_rootfs", args)
    rows.append(("overlay_rootfs module, mount", time.perf_counter() - began))
    began = time.perf_counter()
    runner.module("overlay_rootfs", dict(args, state="unmounted"))
    rows.append(("overlay_rootfs module, unmount", time.perf_counter() - began))
    assert first.changed and not again.changed, (first.result, again.result)
    table("through Ansible (one run each; ~1.3 s of every run is Ansible itself)", rows, ["what", "seconds"])
    image.close()
    clear(ROOT)


if __name__ == "__main__":
    main()
