# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pulling a 5-layer image of about 50 MB from a local registry, cold and warm, against the usual tools.

The registry is Debian's docker-registry (distribution 2.8) on loopback inside the sandbox, plain HTTP.

Cold (an empty store each round), interleaved:
* ``pull.ensure`` (the library image_layers ``name`` runs): manifest, config, 5 blobs downloaded concurrently
  to disk with their digests computed as they arrive, each unpacked (verified again with its diff_id, whiteouts,
  syncfs) as soon as it is complete;
* ``skopeo copy docker://... oci:DIR`` followed by our unpack of the five layers from that layout;
* ``podman pull`` into a throwaway storage (overlay driver; ``--runtime runc --cgroup-manager=cgroupfs``).

Warm (the image is there), interleaved:
* ``pull.ensure`` with ``pull=always``: one HEAD of the manifest, then the store's records and layer markers;
* ``pull.ensure`` with ``pull=missing``: the store only, no network;
* a plain HEAD of the manifest (the same HTTP client, a fresh connection, as one request of any client);
* ``podman pull`` of the image it has (for scale).

Targets (issue 10): cold no slower than podman pull; warm ``always`` under 2x the plain HEAD.
Everything lives on the sandbox's tmpfs /var/lib, so this shared machine's disk adds no noise.
"""

from __future__ import annotations

import importlib
import os
import http.client as http_client
import random
import shutil
import ssl
import subprocess
import sys
import time
import typing as t

from common import REPO, ansible, interleaved, median, ratio_rows, table

sys.path.insert(0, os.path.join(REPO, "tests"))
importlib.import_module("conftest")  # makes ansible_collections.kernelbox.containers importable
from harness import oci_images  # noqa: E402
from harness.registry import Registry  # noqa: E402

from ansible.module_utils.urls import Request  # noqa: E402

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (  # noqa: E402
    image_source, layer_store)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import client, pull  # noqa: E402

ROOT = "/var/lib/kbbench-pull"
ROUNDS_COLD = 5
ROUNDS_WARM = 40
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--storage-driver", "overlay",
          "--events-backend", "none"]


def layer(seed: int, files: int, size: int) -> bytes:
    """A layer of ``files`` files of about ``size`` bytes, half random, half runs (compresses to about half)."""
    rng = random.Random(seed)
    entries: t.List[t.Dict[str, t.Any]] = [{"name": "usr/", "type": "dir"},
                                           {"name": "usr/lib%d/" % seed, "type": "dir"}]
    for index in range(files):
        length = rng.randint(size // 2, size * 3 // 2)
        entries.append({"name": "usr/lib%d/f%05d" % (seed, index),
                        "data": rng.randbytes(length // 2) + bytes(length - length // 2), "mode": 0o755})
    if seed > 1:
        entries.append({"name": "usr/lib1/.wh.f00001"})
    return oci_images.tar_bytes(entries)


def clear(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def podman(root: str, *argv: str) -> None:
    subprocess.run(PODMAN + ["--root", os.path.join(root, "root"), "--runroot", os.path.join(root, "run")]
                   + list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    clear(ROOT)
    os.makedirs(ROOT)
    began = time.perf_counter()
    layout = os.path.join(ROOT, "image")
    layers = [layer(seed, 400, 50000) for seed in range(1, 6)]
    written = oci_images.write_single_layout(layout, layers, "bench", level=6)
    registry = Registry(os.path.join(ROOT, "registry"), "plain")
    try:
        ref = registry.push(layout, "kbt/bench", "latest", source_tag="bench")
        print("5-layer image: %.1f MB of layers, %.1f MB of gzip blobs; pushed to %s (%.1f s)"
              % (sum(map(len, layers)) / 1e6, sum(written["sizes"]) / 1e6, ref, time.perf_counter() - began))
        run(registry, ref, written)
    finally:
        registry.stop()
        clear(ROOT)


def run(registry: Registry, ref: str, written: t.Mapping[str, t.Any]) -> None:
    store = os.path.join(ROOT, "store")
    oci_dir = os.path.join(ROOT, "skopeo")
    podman_root = os.path.join(ROOT, "podman")
    options = pull.PullOptions(client=client.Options(retries=1))

    def ours() -> None:
        result = pull.ensure(store, ref, "missing", options)
        assert len(result.fetched) == 5, result.fetched

    def skopeo_and_unpack() -> None:
        subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + ref, "oci:%s:x" % oci_dir],
                       check=True)
        image = image_source.open_image(oci_dir)
        try:
            for item in image.layers:
                layer_store.unpack_layer(store, item, item.diff_id)
        finally:
            image.close()

    def podman_pull() -> None:
        podman(podman_root, "pull", "-q", "--tls-verify=false", ref)

    def reset(_name: str) -> None:
        clear(store)
        clear(oci_dir)
        if os.path.isdir(podman_root):
            subprocess.run(PODMAN + ["--root", os.path.join(podman_root, "root"), "--runroot",
                                     os.path.join(podman_root, "run"), "rmi", "-a", "-f"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        clear(podman_root)

    reset("")
    cold = interleaved({"kernelbox pull (library)": ours, "skopeo copy + our unpack": skopeo_and_unpack,
                        "podman pull": podman_pull}, ROUNDS_COLD, setup=reset)
    blobs = sum(written["sizes"]) / 1e6
    table("cold pull of the 5-layer image (%.0f MB of blobs), median of %d" % (blobs, ROUNDS_COLD),
          ratio_rows(cold, "podman pull"), ["candidate", "seconds", "ratio to podman pull"])

    reset("")
    ours()
    podman_pull()
    host, port = registry.host.split(":")
    path = "/v2/kbt/bench/manifests/latest"
    http = Request(timeout=30, follow_redirects="urllib2", decompress=False, use_netrc=False)
    plain_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def raw_head() -> None:
        connection = http_client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("HEAD", path, headers={"Accept": client.MANIFEST_ACCEPT})
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and response.getheader("Docker-Content-Digest")
        finally:
            connection.close()

    def ansible_head() -> None:
        response = http.open("HEAD", "http://%s%s" % (registry.host, path), headers={"Accept": client.MANIFEST_ACCEPT},
                             context=plain_context)
        response.close()

    def warm(policy: str) -> t.Callable[[], None]:
        def call() -> None:
            result = pull.ensure(store, ref, policy, options)
            assert not result.fetched and not result.changes()
        return call

    warm_samples = interleaved({"HEAD with http.client (the floor)": raw_head,
                                "HEAD with ansible.module_utils.urls": ansible_head,
                                "kernelbox pull=always": warm("always"),
                                "kernelbox pull=missing (no network)": warm("missing")}, ROUNDS_WARM)
    podman_warm = interleaved({"podman pull (image present)": podman_pull}, 5)
    floor = median(warm_samples["HEAD with http.client (the floor)"])
    rows = ratio_rows(warm_samples, "HEAD with http.client (the floor)")
    rows.append(("podman pull (image present), median of 5", median(podman_warm["podman pull (image present)"]),
                 median(podman_warm["podman pull (image present)"]) / floor))
    table("warm pull (nothing to fetch), median of %d" % ROUNDS_WARM, rows,
          ["candidate", "seconds", "ratio to a plain HEAD (http.client)"])
    memory(store, ref)
    through_ansible(store, ref)


def memory(store: str, ref: str) -> None:
    """Peak RSS (VmHWM) of a cold pull in a fresh process: the blobs stream to disk, none is held in memory."""
    clear(store)
    code = ("import sys; sys.path.insert(0, %r); import conftest; "
            "from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import pull\n"
            "def hwm():\n"
            "    return [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "before = hwm(); pull.ensure(%r, %r); print(before, hwm())"
            % (os.path.join(REPO, "tests"), store, ref))
    out = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    table("peak memory of one cold pull (a fresh Python process; 50 MB of blobs, 101 MB unpacked)",
          [("VmHWM after imports", "%.1f MB" % (int(out[0]) / 1024)),
           ("VmHWM after the pull", "%.1f MB" % (int(out[1]) / 1024))], ["what", "value"])


def through_ansible(store: str, ref: str) -> None:
    clear(store)
    runner = ansible()
    rows = []
    for what, policy in (("cold, 5 layers", "missing"), ("warm, pull=missing", "missing"),
                         ("warm, pull=always", "always")):
        began = time.perf_counter()
        result = runner.module("image_layers", {"name": ref, "store": store, "pull": policy})
        rows.append(("image_layers module, %s" % what, time.perf_counter() - began))
        assert not result.failed, result.result
    table("through Ansible (one run each; most of a warm run is Ansible itself)", rows, ["what", "seconds"])


if __name__ == "__main__":
    main()
