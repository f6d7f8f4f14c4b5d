# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""image_layers ``name``: images pulled from a real registry (docker-registry 2.8) on loopback in the sandbox.

The images are pushed with skopeo: the podman-built 3-layer image (whiteouts, an opaque directory) and a
hand-made multi-platform index (amd64 + arm64).  Every request the module makes goes through a logging
proxy, so "no network on the second run" and "one HEAD for pull: always" are counted, not assumed.
"""

import base64
import hashlib
import json
import os
import stat
import subprocess
import tarfile
import threading

import pytest

from harness import oci_images
from harness.registry import FaultProxy, Registry, wait_for


def archive_diff_ids(oci_archive):
    with tarfile.open(oci_archive) as tar:
        def blob(digest):
            return json.load(tar.extractfile("blobs/sha256/" + digest.split(":")[1]))
        manifest = blob(json.load(tar.extractfile("index.json"))["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"])["rootfs"]["diff_ids"]


def marker_layer(text):
    return oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": "etc/arch", "data": text.encode()}])


@pytest.fixture(scope="session")
def multi_layout(tmp_path_factory):
    layout = str(tmp_path_factory.mktemp("kbt-multi") / "oci")
    base = oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": "etc/os-release", "data": b"kbt\n"}])
    written = oci_images.write_multiplatform_layout(layout, {"linux/amd64": [base, marker_layer("amd64\n")],
                                                             "linux/arm64/v8": [base, marker_layer("arm64\n")]})
    return layout, written


@pytest.fixture(scope="session")
def plain(tmp_path_factory, images, multi_layout):
    """A plain-HTTP registry holding kbt/img:latest (podman-built) and kbt/multi:latest (amd64 + arm64)."""
    registry = Registry(str(tmp_path_factory.mktemp("kbt-reg-plain")), "plain")
    try:
        registry.push(images["oci_layout"], "kbt/img", "latest", source_tag="kbt")
        registry.push(multi_layout[0], "kbt/multi", "latest", all_platforms=True, source_tag="multi")
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def proxy(plain):
    front = FaultProxy(plain.port)
    try:
        yield front
    finally:
        front.close()


def test_pull_verifies_unpacks_and_second_runs_stay_offline(ansible, images, plain, proxy, tmp_path):
    store = str(tmp_path / "store")
    name = "%s/kbt/img:latest" % proxy.host
    args = {"name": name, "store": store}
    served = plain.manifest_digest("kbt/img", "latest")
    diff_ids = archive_diff_ids(images["oci_archive"])

    planned = ansible.module("image_layers", args, check=True, diff=True)
    assert planned.changed and not planned.failed, planned.result
    assert planned["digest"] == served and not os.path.exists(os.path.join(store, "sha256"))
    assert [a.split(" (")[0] for a in planned.actions] == [
        "download and unpack layer %d/3 %s" % (i + 1, d) for i, d in enumerate(diff_ids)] + [
        "record image %s as %s" % (planned["image"]["id"], name)]
    assert planned.diff["before"]["image"] is None and planned.diff["after"]["digest"] == served
    assert not [e for e in proxy.log if "/blobs/" in e["path"] and e["path"].endswith(tuple(
        layer["digest"] for layer in planned["layers"]))], "check mode downloaded a layer"

    first = ansible.module("image_layers", args)
    assert first.changed and not first.failed, first.result
    assert first["digest"] == served and [layer["diff_id"] for layer in first["layers"]] == diff_ids
    paths = [os.path.join(store, "sha256", d.split(":")[1], "diff") for d in diff_ids]
    assert first["lower"] == paths[::-1]
    motd = os.lstat(os.path.join(paths[1], "etc", "motd"))
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert os.getxattr(os.path.join(paths[1], "etc", "keep"), "trusted.overlay.opaque") == b"y"
    assert first["process"]["args"] == ["/bin/sh", "-c", "cat app.txt"] and first["process"]["user"] == "1000:1000"
    assert os.listdir(os.path.join(store, "downloads", "sha256")) == []  # blobs are deleted once unpacked
    for layer in first["layers"]:  # each blob fetched exactly once, in full
        assert [e["status"] for e in proxy.blob_requests(layer["digest"])] == [200]

    # The same layers unpacked from the podman archive on disk: identical trees (an independent reference).
    local = ansible.module("image_layers", {"src": images["oci_archive"], "store": str(tmp_path / "local")})
    assert [layer["diff_id"] for layer in local["layers"]] == diff_ids
    for pulled, unpacked in zip(first["lower"], local["lower"]):
        assert oci_images.tree_snapshot(pulled) == oci_images.tree_snapshot(unpacked)

    before = len(proxy.log)
    again = ansible.module("image_layers", args)
    assert not again.changed and again.actions == [] and again["digest"] == served
    assert len(proxy.log) == before, "pull: missing went to the registry: %s" % proxy.log[before:]

    always = ansible.module("image_layers", dict(args, pull="always"))
    assert not always.changed and always["digest"] == served
    assert [(e["method"], e["path"]) for e in proxy.log[before:]] == [("HEAD", "/v2/kbt/img/manifests/latest")]

    pinned = ansible.module("image_layers", dict(args, digest="sha256:" + "0" * 64))
    assert pinned.failed and "not the pinned sha256:000" in pinned.msg and not pinned.changed


def test_tag_moves_to_a_new_image_and_never_stays_offline(ansible, plain, proxy, tmp_path, multi_layout):
    """A pushed image over the tag: pull: always sees the new digest and pulls only its new layers."""
    store = str(tmp_path / "store")
    layout = str(tmp_path / "moving")
    base = oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": "etc/base", "data": b"base\n"}])
    v1 = oci_images.write_single_layout(layout, [base, marker_layer("v1\n")], "v1")
    v2 = oci_images.write_single_layout(layout, [base, marker_layer("v2\n")], "v2")
    plain.push(layout, "kbt/moving", "current", source_tag="v1")
    name = "%s/kbt/moving:current" % proxy.host
    first = ansible.module("image_layers", {"name": name, "store": store, "pull": "always"})
    assert first.changed and first["image"]["manifest_digest"] == v1["manifest"]
    plain.push(layout, "kbt/moving", "current", source_tag="v2")
    never = ansible.module("image_layers", {"name": name, "store": store, "pull": "never"})
    assert not never.changed and never["digest"] == v1["manifest"]  # never asks nobody: still v1
    moved = ansible.module("image_layers", {"name": name, "store": store, "pull": "always"})
    assert moved.changed and moved["digest"] == v2["manifest"]
    assert [a.split(" (")[0] for a in moved.actions] == [
        "download and unpack layer 2/2 %s" % v2["diff_ids"][1], "record image %s as %s" % (moved["image"]["id"], name)]
    assert "the tag %s is on image %s" % (name, first["image"]["id"]) in moved.actions[1]
    with open(os.path.join(moved["lower"][0], "etc", "arch")) as handle:
        assert handle.read() == "v2\n"
    records = {}
    for entry in os.listdir(os.path.join(store, "images", "sha256")):
        with open(os.path.join(store, "images", "sha256", entry)) as handle:
            record = json.load(handle)
        records[record["id"]] = record
    assert records[first["image"]["id"]]["dangling"] and records[first["image"]["id"]]["tags"] == {}
    assert records[moved["image"]["id"]]["tags"] == {name: v2["manifest"]}
    missing_tag = ansible.module("image_layers", {"name": name.replace("current", "nope"), "store": store,
                                                  "pull": "never"})
    assert missing_tag.failed and "is not in the layer store" in missing_tag.msg


def test_multi_platform_index_picks_the_platform(ansible, plain, proxy, tmp_path, multi_layout):
    store = str(tmp_path / "store")
    _layout, written = multi_layout
    name = "%s/kbt/multi:latest" % proxy.host
    amd = ansible.module("image_layers", {"name": name, "store": store})
    assert amd.changed and not amd.failed, amd.result
    assert amd["digest"] == written["index"] and amd["image"]["manifest_digest"] == written["linux/amd64"]["manifest"]
    assert amd["image"]["platform"] == "linux/amd64" and not amd.get("warnings")
    with open(os.path.join(amd["lower"][0], "etc", "arch")) as handle:
        assert handle.read() == "amd64\n"
    arm = ansible.module("image_layers", {"name": name, "store": store, "platform": "linux/arm64"})
    assert arm.changed and arm["image"]["manifest_digest"] == written["linux/arm64/v8"]["manifest"]
    assert arm["image"]["platform"] == "linux/arm64/v8"
    assert not arm.get("warnings")  # asked for by name: no warning, as with docker --platform
    # the shared base layer was not fetched twice
    base_blob = written["linux/amd64"]["layers"][0]
    assert [e["status"] for e in proxy.blob_requests(base_blob)] == [200]
    by_digest = ansible.module("image_layers", {"name": "%s/kbt/multi@%s" % (proxy.host, written["index"]),
                                                "store": store})
    assert not by_digest.failed and by_digest["image"]["platform"] == "linux/amd64"
    wrong = ansible.module("image_layers", {"name": name, "store": store, "platform": "linux/s390x"})
    assert wrong.failed and "no image for platform linux/s390x; it has linux/amd64, linux/arm64/v8" in wrong.msg


def test_missing_manifest_and_repository_are_clear(ansible, plain, tmp_path):
    store = str(tmp_path / "store")
    tag = ansible.module("image_layers", {"name": "%s/kbt/img:nope" % plain.host, "store": store})
    assert tag.failed and "manifest nope of %s/kbt/img not found" % plain.host in tag.msg
    assert "MANIFEST_UNKNOWN" in tag.msg
    repo = ansible.module("image_layers", {"name": "%s/kbt/nothing" % plain.host, "store": store})
    assert repo.failed and "not found" in repo.msg and ("NAME_UNKNOWN" in repo.msg or "MANIFEST_UNKNOWN" in repo.msg)
    assert not os.path.exists(store)


def test_absent_takes_the_name_off(ansible, plain, tmp_path):
    store = str(tmp_path / "store")
    name = "%s/kbt/img:latest" % plain.host
    pulled = ansible.module("image_layers", {"name": name, "store": store})
    assert pulled.changed
    gone = ansible.module("image_layers", {"name": name, "store": store, "state": "absent"})
    assert gone.changed and gone.actions[0].startswith("remove image %s" % pulled["image"]["id"])
    assert len(gone.actions) == 4 and not os.listdir(os.path.join(store, "sha256"))
    assert not os.listdir(os.path.join(store, "images", "sha256"))
    again = ansible.module("image_layers", {"name": name, "store": store, "state": "absent"})
    assert not again.changed and not again.failed


# --- TLS and authentication ----------------------------------------------------------------------

def tasks_playbook(tasks):
    body = [{"name": name, "kernelbox.containers.image_layers": args, "ignore_errors": True} for name, args in tasks]
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": body}], indent=1)


def _registry(tmp_path_factory, mode, layout, repositories):
    registry = Registry(str(tmp_path_factory.mktemp("kbt-reg-" + mode)), mode)
    try:
        for repository in repositories:
            registry.push(layout, repository, "latest", all_platforms=True, source_tag="multi")
    except BaseException:
        registry.stop()
        raise
    return registry


def test_tls_with_a_test_ca(ansible, tmp_path_factory, tmp_path, multi_layout):
    registry = _registry(tmp_path_factory, "tls", multi_layout[0], ["kbt/multi"])
    try:
        name = "%s/kbt/multi:latest" % registry.host
        runs = ansible.playbook(tasks_playbook([
            ("untrusted", {"name": name, "store": str(tmp_path / "a")}),
            ("with the CA", {"name": name, "store": str(tmp_path / "b"), "ca_path": registry.ca_path}),
            ("insecure on request", {"name": name, "store": str(tmp_path / "c"), "validate_certs": False}),
        ]))
    finally:
        registry.stop()
    untrusted = runs.named("untrusted")
    assert untrusted.failed and "TLS certificate verification failed" in untrusted.msg, untrusted.result
    assert "give ca_path" in untrusted.msg and not os.path.exists(str(tmp_path / "a"))
    for task in ("with the CA", "insecure on request"):
        result = runs.named(task)
        assert result.changed and not result.failed, result.result
        assert result["image"]["source"] == "https://%s" % registry.host
        assert result["digest"] == multi_layout[1]["index"]


def test_basic_auth_and_auth_files(ansible, tmp_path_factory, tmp_path, multi_layout):
    from harness.registry import PASSWORD, USER
    registry = _registry(tmp_path_factory, "basic", multi_layout[0], ["kbt/multi"])
    auth_file = str(tmp_path / "auth.json")
    with open(auth_file, "w") as handle:
        json.dump({"auths": {registry.host: {"auth": base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode())
                                             .decode()}}}, handle)
    name = "%s/kbt/multi:latest" % registry.host
    try:
        runs = ansible.playbook(tasks_playbook([
            ("anonymous", {"name": name, "store": str(tmp_path / "a")}),
            ("wrong password", {"name": name, "store": str(tmp_path / "a"), "username": USER,
                                "password": "not-" + PASSWORD}),
            ("login", {"name": name, "store": str(tmp_path / "b"), "username": USER, "password": PASSWORD}),
            ("auth file", {"name": name, "store": str(tmp_path / "c"), "auth_file": auth_file}),
        ]))
    finally:
        registry.stop()
    anonymous = runs.named("anonymous")
    assert anonymous.failed and "requires a login (Basic realm 'kbt-basic-realm')" in anonymous.msg
    wrong = runs.named("wrong password")
    assert wrong.failed and "HTTP 401" in wrong.msg and "credentials of %r" % USER in wrong.msg
    for task in ("login", "auth file"):
        assert runs.named(task).changed and not runs.named(task).failed, runs.named(task).result
    assert PASSWORD not in runs.stdout + runs.stderr + json.dumps([r.result for r in runs.tasks])


def test_token_flow_anonymous_and_with_login(ansible, tmp_path_factory, tmp_path, multi_layout):
    from harness.registry import PASSWORD, USER
    registry = _registry(tmp_path_factory, "token", multi_layout[0], ["kbt/multi", "private/multi"])
    public, private = ("%s/%s:latest" % (registry.host, repo) for repo in ("kbt/multi", "private/multi"))
    try:
        runs = ansible.playbook(tasks_playbook([
            ("anonymous token", {"name": public, "store": str(tmp_path / "a")}),
            ("private anonymous", {"name": private, "store": str(tmp_path / "b")}),
            ("private with login", {"name": private, "store": str(tmp_path / "b"), "username": USER,
                                    "password": PASSWORD}),
        ]))
        tokens = list(registry.token_server.requests)
    finally:
        registry.stop()
    assert runs.named("anonymous token").changed and not runs.named("anonymous token").failed
    assert {"scope": "repository:kbt/multi:pull", "user": None, "service": "kbt-registry", "granted": True} in tokens
    refused = runs.named("private anonymous")
    assert refused.failed and "HTTP 401" in refused.msg and "needs a login" in refused.msg, refused.result
    assert runs.named("private with login").changed and not runs.named("private with login").failed
    assert {"scope": "repository:private/multi:pull", "user": USER, "service": "kbt-registry",
            "granted": True} in tokens


# --- faults --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_layout(tmp_path_factory):
    """kbt/big: a small layer and a 24 MiB incompressible one; kbt/zeros: 64 MiB of zeros, gzip-compressed."""
    layout = str(tmp_path_factory.mktemp("kbt-big") / "oci")
    big = oci_images.write_single_layout(layout, [marker_layer("big\n"), oci_images.random_layer(7, 24 << 20)], "big")
    zeros = oci_images.tar_bytes([{"name": "zeros.bin", "data": bytes(64 << 20)}])
    flat = oci_images.write_single_layout(layout, [marker_layer("zeros\n"), zeros], "zeros", level=9)
    return layout, big, flat


def store_layers(store):
    """diff_id -> marker of every layer directory in the store, read with json (an independent reader)."""
    found = {}
    folder = os.path.join(store, "sha256")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name, "layer.json")) as handle:
            marker = json.load(handle)
        assert marker["diff_id"] == "sha256:" + name and os.path.isdir(os.path.join(folder, name, "diff"))
        found[marker["diff_id"]] = marker
    return found


def test_registry_killed_mid_blob_then_the_rerun_resumes(ansible, tmp_path_factory, tmp_path, big_layout):
    layout, big, _zeros = big_layout
    registry = Registry(str(tmp_path_factory.mktemp("kbt-reg-killed")), "plain")
    proxy = FaultProxy(registry.port)
    store = str(tmp_path / "store")
    try:
        registry.push(layout, "kbt/big", "latest", source_tag="big")
        blob = big["layers"][1]
        proxy.fault = {"digest": blob, "kind": "hold", "offset": 3 << 20}
        args = {"name": "%s/kbt/big:latest" % proxy.host, "store": store, "timeout": 20}
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(run=ansible.module("image_layers", args)))
        worker.start()
        wait_for(proxy.held.is_set, 300, "the download of the 24 MiB blob reaching 3 MiB")
        # The small layer is downloaded beside it: kill the registry only once all of it has been sent.
        wait_for(lambda: [e for e in proxy.blob_requests(big["layers"][0]) if e["sent"] == big["sizes"][0]], 300,
                 "the proxy sending the whole small layer")
        registry.kill()
        proxy.release.set()
        worker.join(600)
        first = outcome["run"]
        assert first.failed and "the download broke off at" in first.msg, first.result
        assert "kept in %s/downloads/sha256 for the next run to resume" % store in first.msg
        partial = os.path.join(store, "downloads", "sha256", blob.split(":")[1] + ".partial")
        kept = os.path.getsize(partial)
        assert 3 << 20 <= kept < big["sizes"][1]
        # The complete small layer; never a partial one.
        assert set(store_layers(store)) == {big["diff_ids"][0]}, (os.listdir(os.path.dirname(partial)), proxy.log)
        registry.start()
        proxy.fault = None
        second = ansible.module("image_layers", args)
        assert second.changed and not second.failed, second.result
        resumed = [e for e in proxy.blob_requests(blob) if e["range"]]
        assert resumed and resumed[-1]["range"] == "bytes=%d-" % kept and resumed[-1]["status"] == 206, proxy.log
        assert resumed[-1]["sent"] == big["sizes"][1] - kept
    finally:
        proxy.close()
        registry.stop()
    assert set(store_layers(store)) == set(big["diff_ids"])
    assert os.listdir(os.path.join(store, "downloads", "sha256")) == []
    with open(os.path.join(second["lower"][0], "data", "blob7.bin"), "rb") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(oci_images.random_body(7, 24 << 20)).digest()


def test_corrupted_blob_is_refused_and_never_unpacked(ansible, plain, proxy, tmp_path, images):
    store = str(tmp_path / "store")
    diff_ids = archive_diff_ids(images["oci_archive"])
    name = "%s/kbt/img:latest" % proxy.host
    planned = ansible.module("image_layers", {"name": name, "store": store}, check=True)
    victim = planned["layers"][2]
    proxy.fault = {"digest": victim["digest"], "kind": "corrupt", "offset": 100}
    bad = ansible.module("image_layers", {"name": name, "store": store})
    assert bad.failed and "layer 3/3 %s of %s" % (victim["digest"], name) in bad.msg, bad.result
    assert "does not match its digest" in bad.msg and "discarded and nothing was unpacked" in bad.msg
    assert victim["diff_id"] not in store_layers(store) and set(store_layers(store)) <= set(diff_ids)
    assert not [n for n in os.listdir(os.path.join(store, "downloads", "sha256")) if not n.endswith(".partial")]
    staging = os.path.join(store, "tmp")  # made by the first unpack: none if every other download was stopped
    assert not os.path.exists(staging) or not os.listdir(staging)
    proxy.fault = None
    good = ansible.module("image_layers", {"name": name, "store": store})
    assert good.changed and not good.failed and set(store_layers(store)) == set(diff_ids)


def test_disk_full_in_the_store(ansible, plain, tmp_path, big_layout):
    layout, big, zeros = big_layout
    plain.push(layout, "kbt/big", "latest", source_tag="big")
    plain.push(layout, "kbt/zeros", "latest", source_tag="zeros")
    small = str(tmp_path / "small")
    os.makedirs(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "kbt-full", small], check=True)
    try:
        store = os.path.join(small, "store")
        runs = ansible.playbook(tasks_playbook([
            ("download", {"name": "%s/kbt/big:latest" % plain.host, "store": store}),
            ("unpack", {"name": "%s/kbt/zeros:latest" % plain.host, "store": store}),
        ]))
        layers = store_layers(store)
        downloads = os.listdir(os.path.join(store, "downloads", "sha256"))
        staging = os.listdir(os.path.join(store, "tmp"))
    finally:
        subprocess.run(["umount", small], check=True)
    download, unpack = runs.named("download"), runs.named("unpack")
    assert download.failed and "no space left on device in the layer store %s while downloading layer 2/2" % store \
        in download.msg and "the partial download was removed" in download.msg, download.result
    assert unpack.failed and "while unpacking layer 2/2 %s" % zeros["diff_ids"][1] in unpack.msg, unpack.result
    assert "the partly unpacked layer was removed" in unpack.msg
    # Only complete, verified layers (the small ones, if they finished before the big one failed); never the failed.
    assert set(layers) <= {big["diff_ids"][0], zeros["diff_ids"][0]}
    assert downloads == [] and staging == []


def test_the_container_role_runs_an_image_by_reference(ansible, plain, tmp_path, cgroup_test_parent):
    """The container role with container_image as a reference: pulled, mounted, run with its config."""
    name = "kbt-role-pull"
    image = "%s/kbt/img:latest" % plain.host
    # The image's Entrypoint is [/bin/sh, -c]: as with Docker, command gives its arguments.
    role = {"container_name": name, "container_image": image, "container_stop_timeout": 1,
            "container_cgroup_parent": cgroup_test_parent,
            "container_command": ['echo "app=$(cat app.txt) uid=$(id -u)"; exec sleep 1000']}
    playbook = json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "up", "ansible.builtin.include_role": {"name": "kernelbox.containers.container"}, "vars": role},
        {"name": "log", "kernelbox.containers.container_info": {"name": name, "features": False},
         "register": "info", "retries": 40, "delay": 0.25,
         "until": "info.containers[0].log.tail | select('match', 'app=') | list | length > 0"},
        {"name": "down", "ansible.builtin.include_role": {"name": "kernelbox.containers.container"},
         "vars": {"container_name": name, "container_state": "absent"}},
        {"name": "image gone", "kernelbox.containers.image_layers": {"name": image, "state": "absent"}},
    ]}], indent=1) + "\n"
    run = ansible.playbook(playbook)
    assert not run.failed_tasks, run.stdout[-3000:]
    container = run.named("log")["containers"][0]
    assert container["state"] == "running" and "app=app uid=1000" in container["log"]["tail"], container["log"]
    made = [task for task in run.tasks if task.task.endswith(": The container")][0]  # the role's one task
    assert made["image"].startswith("sha256:") and made["definition"]["image"] == image, made.result
    assert run.named("image gone").changed


# --- the store's life cycle: image_info and image_prune ------------------------------------------

def test_info_and_prune_keep_what_overlays_use(ansible, plain, images, tmp_path):
    """Dangling images after a tag moved, a file image, leftovers; prune keeps whatever a mounted overlay uses."""
    store = str(tmp_path / "store")
    layout = str(tmp_path / "moving")
    base = oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": "etc/base", "data": b"base\n"}])
    v1 = oci_images.write_single_layout(layout, [base, marker_layer("v1\n")], "v1")
    v2 = oci_images.write_single_layout(layout, [base, marker_layer("v2\n")], "v2")
    plain.push(layout, "kbt/prune", "current", source_tag="v1")
    name = "%s/kbt/prune:current" % plain.host
    first = ansible.module("image_layers", {"name": name, "store": store})
    assert first.changed, first.result
    plain.push(layout, "kbt/prune", "current", source_tag="v2")
    rootfs = {"lower": first["lower"], "upper": str(tmp_path / "upper"), "work": str(tmp_path / "work"),
              "merged": str(tmp_path / "merged")}
    v2_rootfs = dict(rootfs, upper=str(tmp_path / "upper2"), work=str(tmp_path / "work2"),
                     merged=str(tmp_path / "merged2"))
    partial = os.path.join(store, "downloads", "sha256", "ab" * 32 + ".partial")
    tasks = [
        ("tag moves", "image_layers", {"name": name, "store": store, "pull": "always"}),
        ("file image", "image_layers", {"src": images["rootfs_tar"], "store": store}),
        ("mount v1", "overlay_rootfs", rootfs),
        ("info", "image_info", {"store": store}),
        ("info by name", "image_info", {"store": store, "name": ["%s/kbt/prune:current" % plain.host,
                                                                 "%s/kbt/none:1" % plain.host]}),
        ("prune while v1 is mounted", "image_prune", {"store": store}),
        ("unmount v1", "overlay_rootfs", dict(rootfs, state="absent")),
        ("leftover", "ansible.builtin.copy", {"dest": partial, "content": "interrupted", "mode": "0600"}),
        ("prune check", "image_prune", {"store": store}),
        ("prune", "image_prune", {"store": store}),
        ("prune again", "image_prune", {"store": store}),
        ("mount v2", "overlay_rootfs", dict(v2_rootfs, lower="{{ v2_lower }}")),
        ("forget v2", "ansible.builtin.file", {"path": os.path.join(store, "images", "sha256",
                                                                    "{{ v2_id[7:] }}.json"), "state": "absent"}),
        ("prune all", "image_prune", {"store": store, "all": True}),
        ("unmount v2", "overlay_rootfs", dict(v2_rootfs, state="absent")),
        ("prune all again", "image_prune", {"store": store, "all": True}),
        ("info at the end", "image_info", {"store": store}),
    ]
    body = []
    for task, module, args in tasks:
        fqcn = module if "." in module else "kernelbox.containers." + module
        entry = {"name": task, fqcn: args, "ignore_errors": True}
        if task == "tag moves":
            entry["register"] = "moved"
        if task == "prune check":
            entry["check_mode"] = True
        body.append(entry)
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": body,
             "vars": {"v2_lower": "{{ moved.lower }}", "v2_id": "{{ moved.image.id }}"}}]
    runs = ansible.playbook(json.dumps(play, indent=1))
    assert not runs.failed_tasks, runs.stdout[-4000:]
    moved = runs.named("tag moves")
    v1_id, v2_id = first["image"]["id"], moved["image"]["id"]
    file_id = runs.named("file image")["image"]["config_digest"] or runs.named("file image")["layers"][0]["digest"]
    info = {image["id"]: image for image in runs.named("info")["images"]}
    assert set(info) == {v1_id, v2_id, file_id}
    assert info[v1_id]["dangling"] and info[v1_id]["tags"] == [] and info[v1_id]["in_use"] == [rootfs["merged"]]
    assert info[v2_id]["tags"] == [name] and info[v2_id]["complete"]
    assert info[v2_id]["in_use"] == [rootfs["merged"]]  # through the base layer it shares with v1
    assert info[file_id]["source"] == images["rootfs_tar"] and not info[file_id]["dangling"]
    layers = {layer["diff_id"]: layer for layer in runs.named("info")["layers"]}
    assert sorted(layers[v1["diff_ids"][0]]["images"]) == sorted([v1_id, v2_id])  # the shared base
    assert [image["id"] for image in runs.named("info by name")["images"]] == [v2_id]

    held = runs.named("prune while v1 is mounted")
    assert not held.changed and held["images"] == [] and held["layers"] == []
    check = runs.named("prune check")
    assert check.changed and check["images"] == [v1_id] and check["layers"] == [v1["diff_ids"][1]]
    assert check["leftovers"] == ["downloads/sha256/%s.partial" % ("ab" * 32)]
    assert check.actions[0] == "remove image %s (%s) (dangling: its tags moved to newer images)" % (
        v1_id, "%s/kbt/prune@%s" % (plain.host, v1["manifest"]))
    pruned = runs.named("prune")
    assert pruned.changed and pruned["images"] == [v1_id] and pruned["layers"] == [v1["diff_ids"][1]]
    assert pruned["space_reclaimed"] > 0 and pruned.actions == check.actions
    assert not runs.named("prune again").changed

    everything = runs.named("prune all")
    assert everything.changed and everything["images"] == [file_id]
    assert sorted(everything["kept"], key=lambda k: k["diff_id"]) == sorted(
        [{"diff_id": d, "in_use": [v2_rootfs["merged"]]} for d in v2["diff_ids"]], key=lambda k: k["diff_id"])
    assert any("is a lower layer of the overlay at %s" % v2_rootfs["merged"] in w
               for w in everything.get("warnings", []))
    final = runs.named("prune all again")
    assert final.changed and sorted(final["layers"]) == sorted(v2["diff_ids"])
    end = runs.named("info at the end")
    assert end["images"] == [] and end["layers"] == [] and end["leftovers"] == []
