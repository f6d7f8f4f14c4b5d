# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""image_layers: real images built with podman (and hostile ones built by hand), unpacked and mounted.

The image is built once per session inside the sandbox: a busybox rootfs
imported as the base layer, a RUN layer that deletes a file and replaces a
directory (real whiteouts and an opaque directory), and a COPY layer; then
saved as an OCI archive and a docker archive, and copied by skopeo into an
OCI layout directory (gzip) and one with zstd layers.
"""

import gzip
import json
import os
import stat
import subprocess
import tarfile

import pytest

from harness import oci_images


def archive_diff_ids(oci_archive):
    """diff_ids of an OCI archive, read with tarfile and json only (independent of the module)."""
    with tarfile.open(oci_archive) as tar:
        def blob(digest):
            return json.load(tar.extractfile("blobs/sha256/" + digest.split(":")[1]))
        index = json.load(tar.extractfile("index.json"))
        manifest = blob(index["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"])["rootfs"]["diff_ids"]


def tasks_playbook(tasks):
    body = []
    for name, module, args in tasks:
        body.append({"name": name, "kernelbox.containers." + module: args, "ignore_errors": True})
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": body}], indent=1)


def unmount_below(root):
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in reversed(points):
        if point.startswith(root + "/"):
            subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def work(tmp_path):
    try:
        yield str(tmp_path)
    finally:
        unmount_below(str(tmp_path))


def test_real_image_unpacks_verifies_and_mounts(ansible, images, work):
    store = os.path.join(work, "store")
    args = {"src": images["oci_archive"], "store": store}
    first = ansible.module("image_layers", args)
    assert first.changed and not first.failed, first.result
    diff_ids = archive_diff_ids(images["oci_archive"])
    config_digest = first["image"]["config_digest"]
    assert [layer["diff_id"] for layer in first["layers"]] == diff_ids and len(diff_ids) == 3
    assert first.actions[3] == "record image %s (localhost/kbt-img:latest) (no record of image %s)" % (
        config_digest, config_digest)
    assert [a.split(" (")[0].rsplit(" into ", 1)[0] for a in first.actions] == [
        "unpack layer %d/3 %s" % (i + 1, d) for i, d in enumerate(diff_ids)] + ["record image %s" % config_digest]
    paths = [os.path.join(store, "sha256", d.split(":")[1], "diff") for d in diff_ids]
    assert first["lower"] == paths[::-1]  # topmost first, for overlay_rootfs
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    for path, diff_id in zip(paths, diff_ids):
        with open(os.path.join(os.path.dirname(path), "layer.json")) as handle:
            assert json.load(handle)["diff_id"] == diff_id
    # the RUN layer: /etc/motd deleted (whiteout device), /etc/keep replaced (opaque directory)
    motd = os.lstat(os.path.join(paths[1], "etc", "motd"))
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert os.getxattr(os.path.join(paths[1], "etc", "keep"), "trusted.overlay.opaque") == b"y"
    assert not any(name.startswith(".wh.") for _d, dirs, files in os.walk(paths[1]) for name in dirs + files)
    assert os.readlink(os.path.join(paths[0], "bin", "sh")) == "busybox"
    assert first["config"]["Entrypoint"] == ["/bin/sh", "-c"] and first["config"]["Cmd"] == ["cat app.txt"]
    assert first["config"]["WorkingDir"] == "/app" and first["config"]["User"] == "1000:1000"
    assert "FOO=bar" in first["config"]["Env"]
    assert first["process"] == {"args": ["/bin/sh", "-c", "cat app.txt"], "env": first["config"]["Env"],
                                "cwd": "/app", "user": "1000:1000"}
    assert first["image"]["format"] == "oci-archive" and first["image"]["reference"] == "localhost/kbt-img:latest"

    again = ansible.module("image_layers", args)
    assert not again.changed and again.actions == [] and again["lower"] == first["lower"]

    merged = os.path.join(work, "rootfs")
    rootfs = {"lower": first["lower"], "upper": os.path.join(work, "upper"), "work": os.path.join(work, "work"),
              "merged": merged}
    assert ansible.module("overlay_rootfs", rootfs).changed
    assert not os.path.exists(os.path.join(merged, "etc", "motd"))
    assert sorted(os.listdir(os.path.join(merged, "etc", "keep"))) == ["b"]
    run = subprocess.run(["chroot", merged, "/bin/sh", "-c", "cd /app && cat app.txt /etc/keep/b && ls /etc"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    # buildah's RUN step with --network host (chroot isolation) leaves /etc/hosts and /etc/resolv.conf in the layer.
    shown = [entry for entry in run.stdout.split() if entry not in ("hosts", "resolv.conf")]
    assert run.returncode == 0 and shown == ["app", "new", "hostname", "keep"], run

    runs = ansible.playbook(tasks_playbook([
        ("remove while mounted", "image_layers", dict(args, state="absent")),
        ("unmount", "overlay_rootfs", dict(rootfs, state="absent")),
        ("remove", "image_layers", dict(args, state="absent")),
        ("remove again", "image_layers", dict(args, state="absent")),
    ]))
    refused = runs.named("remove while mounted")
    assert refused.failed and "is a lower layer of the overlay at %s" % merged in refused.msg
    assert runs.named("unmount").changed
    removed = runs.named("remove")
    assert removed.changed and removed.actions == ["remove layer %s (state=absent)" % d for d in diff_ids] + [
        "remove image %s (%s) from the store's records (state=absent)" % (config_digest, images["oci_archive"])]
    assert not any(os.path.exists(p) for p in paths) and removed["lower"] == []
    assert not runs.named("remove again").changed and not runs.named("remove again").failed


def test_every_format_gives_the_same_layers(ansible_distro, images, work):
    """oci-archive, docker-archive, OCI layout (gzip and zstd) and plain tarballs, through Debian's Python."""
    sources = ["oci_archive", "docker_archive", "oci_layout", "oci_zstd", "rootfs_tar", "rootfs_tgz"]
    runs = ansible_distro.playbook(tasks_playbook([
        (name, "image_layers", {"src": images[name], "store": os.path.join(work, name)}) for name in sources]))
    results = {name: runs.named(name) for name in sources}
    for name, result in results.items():
        assert result.changed and not result.failed, (name, result.result)
    expected = {"oci_archive": "oci-archive", "docker_archive": "docker-archive", "oci_layout": "oci-layout",
                "oci_zstd": "oci-layout", "rootfs_tar": "rootfs-tar", "rootfs_tgz": "rootfs-tar"}
    assert {name: r["image"]["format"] for name, r in results.items()} == expected
    reference = [oci_images.tree_snapshot(p) for p in results["oci_archive"]["lower"]]
    for name in ("docker_archive", "oci_layout", "oci_zstd"):
        assert [layer["diff_id"] for layer in results[name]["layers"]] == \
            [layer["diff_id"] for layer in results["oci_archive"]["layers"]], name
        assert [oci_images.tree_snapshot(p) for p in results[name]["lower"]] == reference, name
    assert results["oci_zstd"]["layers"][0]["media_type"].endswith("+zstd")
    # the plain tarball is the image's base layer: the same tree, under the same diff_id
    base = reference[-1]
    for name in ("rootfs_tar", "rootfs_tgz"):
        assert len(results[name]["lower"]) == 1
        assert oci_images.tree_snapshot(results[name]["lower"][0]) == base, name
    assert results["rootfs_tar"]["layers"][0]["diff_id"] == results["oci_archive"]["layers"][0]["diff_id"]
    assert results["rootfs_tgz"]["layers"][0]["digest"] != results["rootfs_tar"]["layers"][0]["digest"]


def test_check_mode_diff_and_partial_layer_redone(ansible, images, work, host_state):
    store = os.path.join(work, "store")
    args = {"src": images["docker_archive"], "store": store}
    before = host_state()
    planned = ansible.module("image_layers", args, check=True, diff=True)
    assert planned.changed and len(planned.actions) == 4 and not os.path.exists(store)
    assert planned.actions[3].startswith("record image %s" % planned["image"]["config_digest"])
    assert host_state() == before
    assert all(entry.endswith(" absent") for entry in planned.diff["before"]["layers"])
    assert all(entry.endswith(" present") for entry in planned.diff["after"]["layers"])
    assert len(planned["lower"]) == 3  # known before anything is unpacked

    done = ansible.module("image_layers", args)
    assert done.changed
    middle = os.path.dirname(done["layers"][1]["path"])
    tree = oci_images.tree_snapshot(done["layers"][1]["path"])
    # a crash: the marker of one layer is gone, a staging directory was left behind
    os.unlink(os.path.join(middle, "layer.json"))
    os.makedirs(os.path.join(store, "tmp", "deadbeef.kbt", "diff", "etc"))
    redo = ansible.module("image_layers", args, diff=True)
    assert redo.changed and redo.actions == [
        "unpack layer 2/3 %s (tar, %s) into %s (partially unpacked (no valid completion marker): unpacking it again)"
        % (done["layers"][1]["diff_id"], redo.actions[0].split(", ")[1].split(")")[0], done["layers"][1]["path"])]
    assert redo.diff["before"]["layers"][1].endswith(" partial")
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert oci_images.tree_snapshot(done["layers"][1]["path"]) == tree
    assert not ansible.module("image_layers", args).changed


def hostile_layouts(root, outside):
    """OCI layouts whose top layer tries to escape; the base layer is the same good one everywhere."""
    base = oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": "etc/ok", "data": b"ok"}])
    bad = {
        "dot-dot entry": [{"name": "../../outside/dotdot", "data": b"x"}],
        "absolute entry": [{"name": outside + "/absolute", "data": b"x"}],
        "escaping symlink": [{"name": "etc/up", "type": "symlink", "link": "../../outside"}],
        "write through a symlink": [{"name": "lnk", "type": "symlink", "link": outside},
                                    {"name": "lnk/through", "data": b"x"}],
        "write through a relative symlink": [{"name": "etc/lnk", "type": "symlink", "link": ".."},
                                             {"name": "etc/lnk/x", "data": b"x"}],
        "escaping hardlink": [{"name": "h", "type": "hardlink", "link": "../outside/secret"}],
        "absolute hardlink": [{"name": "h", "type": "hardlink", "link": outside + "/secret"}],
        "hardlink through a symlink": [{"name": "lnk", "type": "symlink", "link": outside},
                                       {"name": "h", "type": "hardlink", "link": "lnk/secret"}],
    }
    layouts = {}
    for name, entries in bad.items():
        path = os.path.join(root, name.replace(" ", "-"))
        oci_images.write_oci_layout(path, [base, oci_images.tar_bytes(entries)])
        layouts[name] = path
    good_top = oci_images.tar_bytes([{"name": "etc/new", "data": b"new"}])
    path = os.path.join(root, "tampered-blob")
    digests = oci_images.write_oci_layout(path, [base, good_top])
    blob = os.path.join(path, "blobs", "sha256", digests["layers"][1].split(":")[1])
    with open(blob, "r+b") as handle:
        data = bytearray(handle.read())
        data[-9] ^= 0xFF  # breaks the deflate stream too: the digest mismatch is what gets reported
        handle.seek(0)
        handle.write(bytes(data))
    layouts["tampered blob"] = path
    path = os.path.join(root, "wrong-diff-id")
    oci_images.write_oci_layout(path, [base, good_top],
                                diff_ids=[oci_images.sha256(base), oci_images.sha256(good_top + b"\0")])
    layouts["wrong diff_id"] = path
    path = os.path.join(root, "truncated")
    digests = oci_images.write_oci_layout(path, [base, gzip.decompress(gzip.compress(good_top))[:700]],
                                          compress=False)
    layouts["truncated tar"] = path
    return layouts


def test_hostile_and_corrupt_layers_are_refused(ansible, work):
    outside = os.path.join(work, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret"), "w") as handle:
        handle.write("secret")
    layouts = hostile_layouts(os.path.join(work, "images"), outside)
    store = os.path.join(work, "store")
    runs = ansible.playbook(tasks_playbook([(name, "image_layers", {"src": path, "store": store})
                                            for name, path in layouts.items()]))
    fragments = {
        "dot-dot entry": "contains '..'",
        "absolute entry": "is an absolute path",
        "escaping symlink": "climbs above the layer root",
        "write through a symlink": "lnk is a symlink in this layer; refusing to write through it",
        "write through a relative symlink": "etc/lnk is a symlink in this layer",
        "escaping hardlink": "points outside the layer",
        "absolute hardlink": "points outside the layer",
        "hardlink through a symlink": "lnk is a symlink in this layer",
        "tampered blob": "does not match its digest",
        "wrong diff_id": "does not match its diff_id",
        "truncated tar": "is not a valid tar stream",
    }
    for name in layouts:
        result = runs.named(name)
        assert result.failed and fragments[name] in result.msg, (name, result.msg)
    assert runs.named("dot-dot entry").changed  # the good base layer went in first
    assert sorted(os.listdir(outside)) == ["secret"]
    with open(os.path.join(outside, "secret")) as handle:
        assert handle.read() == "secret"
    assert os.stat(os.path.join(outside, "secret")).st_nlink == 1  # no hardlink was made to it
    base_id = oci_images.sha256(oci_images.tar_bytes([{"name": "etc/", "type": "dir"},
                                                      {"name": "etc/ok", "data": b"ok"}]))
    assert os.listdir(os.path.join(store, "sha256")) == [base_id.split(":")[1]]
    assert os.listdir(os.path.join(store, "tmp")) == []


class _Zeros:
    """A file object of ``size`` zero bytes, read in pieces (for a decompression bomb)."""

    def __init__(self, size):
        self.left = size

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return b"\0" * size


def _rootfs_tarball(path, files, compression=""):
    with tarfile.open(path, "w:" + compression) as tar:
        for name, size in files:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, _Zeros(size))
    return path


def _sparse_tarball(path, size, fmt):
    """GNU tar's own sparse entry: ``size`` bytes, data only at the start and the end."""
    src = path + ".src"
    os.makedirs(src)
    with open(os.path.join(src, "hole"), "wb") as handle:
        handle.write(b"start")
        handle.truncate(size)
        handle.seek(size - 3)
        handle.write(b"end")
    subprocess.run(["tar", "--sparse", "--format=" + fmt, "-C", src, "-cf", path, "hole"], check=True)
    return path


def test_bombs_sparse_files_and_damaged_tarballs(ansible, work):
    """Sparse entries stay holes; a layer past max_layer_size (expanding, or declared) and a damaged compressed
    tarball fail with a message naming the file, before the disk fills, and leave no store behind."""
    images = os.path.join(work, "images")
    os.makedirs(images)
    good = _rootfs_tarball(os.path.join(images, "good.tar"), [("etc/ok", 3)])
    with open(good, "rb") as handle:
        plain = handle.read()
    damaged = {}
    for kind, module in (("gz", gzip), ("xz", __import__("lzma")), ("bz2", __import__("bz2"))):
        packed = module.compress(plain)
        damaged["truncated " + kind] = (packed[:len(packed) // 2], "truncated or corrupt")
        broken = bytearray(packed)
        broken[len(broken) // 2:len(broken) // 2 + 8] = b"\xff" * 8
        damaged["corrupt " + kind] = (bytes(broken), "")
    cases = {
        "sparse gnu": (_sparse_tarball(os.path.join(images, "sparse-gnu.tar"), 100 << 20, "gnu"), None, ""),
        "sparse pax": (_sparse_tarball(os.path.join(images, "sparse-pax.tar"), 100 << 20, "posix"), None, ""),
        "gzip bomb": (_rootfs_tarball(os.path.join(images, "bomb.tar.gz"), [("zeros", 64 << 20)], "gz"), "16M",
                      "bomb.tar.gz in %s expands to more than 16777216 bytes uncompressed (max_layer_size)" % images),
        "declared": (_sparse_tarball(os.path.join(images, "huge.tar"), 2 << 30, "gnu"), "1G",
                     "huge.tar in %s is larger than max_layer_size (1073741824 bytes): its entries declare more "
                     "than 1073741824 bytes (hole is 2147483648 bytes)" % images),
    }
    for name, (data, fragment) in damaged.items():
        path = os.path.join(images, name.replace(" ", "-") + ".tar." + name.split()[-1])
        with open(path, "wb") as handle:
            handle.write(data)
        cases[name] = (path, None, "%s in %s cannot be decompressed" % (os.path.basename(path), images))
    tasks = []
    for name, (path, limit, _fragment) in cases.items():
        args = {"src": path, "store": os.path.join(work, "store-" + name.replace(" ", "-"))}
        if limit:
            args["max_layer_size"] = limit
        tasks.append((name, "image_layers", args))
    runs = ansible.playbook(tasks_playbook(tasks))
    for name in ("sparse gnu", "sparse pax"):
        result = runs.named(name)
        assert result.changed and not result.failed, (name, result.result)
        hole = os.path.join(result["lower"][0], "hole")
        info = os.stat(hole)
        assert info.st_size == 100 << 20 and info.st_blocks * 512 <= 1 << 20, (name, info)  # holes kept as holes
        with open(hole, "rb") as handle:
            assert handle.read(5) == b"start" and handle.seek((100 << 20) - 3) and handle.read() == b"end"
    for name, (path, _limit, fragment) in cases.items():
        if name.startswith("sparse"):
            continue
        result = runs.named(name)
        assert result.failed and not result.changed and fragment in result.msg, (name, result.msg)
        assert "Traceback" not in result.msg and "module_stderr" not in result.result, (name, result.result)
        assert not os.path.exists(os.path.join(work, "store-" + name.replace(" ", "-"))), name  # no skeleton


@pytest.mark.parametrize("point", ["layer-staged", "layer-committed"])
def test_sigkill_while_unpacking_converges(ansible, images, work, point):
    """The module SIGKILLed with a layer staged (not in place yet) or in place (not recorded yet): the next run
    cleans the staging area, finishes, and the one after changes nothing."""
    store = os.path.join(work, "store")
    args = {"src": images["oci_archive"], "store": store}
    play = json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "killed", "kernelbox.containers.image_layers": args, "environment": {"KERNELBOX_TEST_FAULT": point},
         "ignore_errors": True},
        {"name": "converge", "kernelbox.containers.image_layers": args},
        {"name": "again", "kernelbox.containers.image_layers": args}]}], indent=1)
    run = ansible.playbook(play)
    assert run.tasks, run.stdout + run.stderr
    assert run.named("killed").failed, run.named("killed").result
    converge, again = run.named("converge"), run.named("again")
    assert not converge.failed and converge.changed, converge.result
    # staged: the first layer was never in place, so all three go in; committed: it was, the other two go in
    unpacked = [action for action in converge.actions if action.startswith("unpack layer")]
    assert len(unpacked) == (3 if point == "layer-staged" else 2), converge.actions
    assert not again.changed and [entry["status"] for entry in again["layers"]] == ["present"] * 3
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert sorted(os.listdir(os.path.join(store, "sha256"))) == sorted(
        d.split(":")[1] for d in archive_diff_ids(images["oci_archive"]))


def test_a_full_store_is_refused_cleanly(ansible, work):
    """A layer that does not fit: the message names the layer, the staging directory is gone, nothing partial
    stays, and the same image goes in once there is room."""
    src = os.path.join(work, "random.tar")
    with tarfile.open(src, "w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = 4 << 20
        tar.addfile(info, open("/dev/urandom", "rb"))
    store = os.path.join(work, "store")
    os.makedirs(store)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "kbt-full-store", store], check=True)
    full = ansible.module("image_layers", {"src": src, "store": store})
    assert full.failed and not full.changed, full.result
    assert ("no space left on the layer store's filesystem while unpacking random.tar in %s" % work) in full.msg
    assert os.listdir(os.path.join(store, "tmp")) == [] and not os.path.exists(os.path.join(store, "sha256"))
    subprocess.run(["mount", "-o", "remount,size=16m", store], check=True)
    roomy = ansible.module("image_layers", {"src": src, "store": store})
    assert roomy.changed and not roomy.failed, roomy.result
    assert os.path.getsize(os.path.join(roomy["lower"][0], "blob")) == 4 << 20


def test_bad_inputs_fail_early(ansible, images, work):
    store = os.path.join(work, "store")
    pinned = "sha256:" + "0" * 64
    cases = [
        ("pin mismatch", {"src": images["oci_archive"], "digest": pinned}, "not the pinned " + pinned),
        ("bad digest", {"src": images["oci_archive"], "digest": "sha256:xyz"}, "is not a digest"),
        ("bad platform", {"src": images["oci_archive"], "platform": "linux amd64"}, "is not like linux/amd64"),
        ("missing src", {"src": os.path.join(work, "nope.tar")}, "does not exist"),
        ("relative src", {"src": "relative.tar"}, "not an absolute path"),
        ("store with comma", {"src": images["oci_archive"], "store": work + "/a,b"}, "contains a comma"),
        ("store is /var/lib", {"src": images["oci_archive"], "store": "/var/lib"}, "system directory"),
        ("unknown reference", {"src": images["oci_archive"], "reference": "nothere"}, "no image named 'nothere'"),
        ("wrong format", {"src": images["oci_archive"], "format": "docker-archive"}, "manifest.json is missing"),
    ]
    runs = ansible.playbook(tasks_playbook([(name, "image_layers", dict({"store": store}, **args))
                                            for name, args, _fragment in cases]))
    for name, _args, fragment in cases:
        result = runs.named(name)
        assert result.failed and not result.changed and fragment in result.msg, (name, result.msg)
    assert not os.path.exists(store) and not os.path.exists(work + "/a,b")


def test_the_container_role_runs_an_image_with_its_config(ansible, images, work, cgroup_test_parent):
    """The container role on a real OCI image: the image's Env, WorkingDir and User reach the process."""
    name = "kbt-role-img"
    role = {"container_name": name, "container_image": images["oci_archive"], "container_stop_timeout": 1,
            "container_cgroup_parent": cgroup_test_parent,
            # The image's Entrypoint is [/bin/sh, -c]: as with Docker, command gives its arguments.
            "container_command": ['echo "env=$FOO cwd=$(pwd) uid=$(id -u):$(id -g)"; exec sleep 1000']}
    playbook = json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "up", "ansible.builtin.include_role": {"name": "kernelbox.containers.container"}, "vars": role},
        {"name": "log", "kernelbox.containers.container_info": {"name": name, "features": False},
         "register": "info", "retries": 40, "delay": 0.25,
         "until": "info.containers[0].log.tail | select('match', 'env=') | list | length > 0"},
        {"name": "down", "ansible.builtin.include_role": {"name": "kernelbox.containers.container"},
         "vars": {"container_name": name, "container_state": "absent"}},
        {"name": "layers gone", "kernelbox.containers.image_layers": {"src": images["oci_archive"],
                                                                      "state": "absent"}},
    ]}], indent=1) + "\n"
    run = ansible.playbook(playbook)
    assert not run.failed_tasks, run.stdout[-3000:]
    container = run.named("log")["containers"][0]
    assert container["state"] == "running"
    assert "env=bar cwd=/app uid=1000:1000" in container["log"]["tail"], container["log"]
    assert run.named("layers gone").changed
    assert not os.path.exists("/var/lib/kernelbox/rootfs/" + name)
