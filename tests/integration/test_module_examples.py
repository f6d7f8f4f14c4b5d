# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module EXAMPLES that do not rot: the tasks are read from the module files of the collection installed from its
tarball, the names of the host objects they make get the test prefix, and they run in one playbook against
localhost, in the order they are written.  Each task must succeed; the leak check proves the examples (and the
cleanup after them) leave nothing behind.

The image examples run against test registries and image files of their own: the registries they name
(Docker Hub, quay.io, registry.example.com, ...) are mapped to local docker-registry instances holding the
podman-built test image, the host paths they name (/srv, /var/lib/kernelbox, /run/containers, /etc/pki) to
files and folders below the test's tmp_path, and every task gets a layer store of the test's own.  What an
example states (a pulled digest, the platform picked, a tag taken off, an overlay mounted read-only, what a
prune removes) is then checked in the registry, the store's records and /proc/self/mountinfo.

Every module is either run here, run by the VM stage (RUN_IN_VM: cgroup_v2, which needs pure cgroup v2), or listed in
NOT_RUN_YET with the reason, so a new module cannot be forgotten.
"""

import ast
import base64
import copy
import glob
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request

import pytest
import yaml

from harness import net, oci_images, snapshot
from harness.containers import containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import alive, build_busybox_rootfs, cgroup_parent, leaf_path, wait_until
from harness.containers import busybox_rootfs  # noqa: F401  pylint: disable=unused-import
from harness.cgroup_view import in_confined_cgroup_view
from harness.oci_runtime import not_a_subreaper
from harness.ansible_runner import PlaybookRun, TaskResult
from harness.ansible_runner import collections_path
from harness.net import play, task
from harness.registry import PASSWORD, USER, Registry

PREFIX = "kx"
MODULES = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins", "modules")

# --- the network examples: host objects renamed with PREFIX ---------------------------------------

# Module -> the options whose values name host objects (interfaces, namespaces): prefixed with PREFIX.
RENAME = {
    "netns": ("name",),
    "bridge": ("name",),
    "veth": ("name", "peer", "netns", "bridge"),
    "nat": ("bridge", "container"),
}
# Examples run in this order; a module's examples may need objects made by an earlier one's (SETUP).
NET_RUN = ("netns", "bridge", "veth", "nat")
SETUP = {
    "veth": [task("example bridge for veth", "bridge", {"name": PREFIX + "br0"})],
    # kb0 with the subnet the examples name, and the host address one of their ports is published on
    "nat": [task("example bridge for nat", "bridge", {"name": PREFIX + "kb0",
                                                      "addresses": ["10.88.0.1/24", "192.0.2.10/32"]})],
}
CLEANUP = [
    task("unpublish the example container's ports", "nat", {"container": PREFIX + "web", "state": "absent"}),
    task("remove the example network's NAT", "nat", {"bridge": PREFIX + "kb0", "state": "absent"}),
    task("remove the example nat bridge", "bridge", {"name": PREFIX + "kb0", "state": "absent"}),
    task("remove the example veth", "veth", {"name": PREFIX + "veth-web", "state": "absent"}),
    task("remove the example netns", "netns", {"name": PREFIX + "web", "state": "absent"}),
    task("remove the example bridge", "bridge", {"name": PREFIX + "br0", "state": "absent"}),
]

# --- the image examples: test registries, test files, a store of their own ------------------------

# The first playbook runs these modules' examples (image_info's first: they need busybox:1.36, which image_layers'
# examples take off the store again); the second, after the test pushed a new image over one tag, the prunes.
IMAGE_RUN = ("image_info", "image_layers", "overlay_rootfs")
PRUNE_RUN = ("image_prune",)
IMAGE_MODULES = ("image_layers", "image_info", "image_prune")
# Written as examples are, and rewritten as they are.
IMAGE_SETUP = {
    "image_info": [task("example image for image_info", "image_layers", {"name": "busybox:1.36"})],
    "image_prune": [task("the arm64 tag moved: pull it again", "image_layers", {
        "name": "registry.internal:5000/tools/debug:1", "platform": "linux/arm64",
        "ca_path": "/etc/pki/internal-ca.pem", "pull": "always"})],
}
IMAGE_CLEANUP = [
    task("unmount the example web rootfs", "overlay_rootfs", {
        "merged": "/var/lib/kernelbox/rootfs/web/merged", "upper": "/var/lib/kernelbox/rootfs/web/upper",
        "work": "/var/lib/kernelbox/rootfs/web/work", "state": "absent"}),
    task("unmount the example app rootfs", "overlay_rootfs", {"merged": "/srv/rootfs/app", "state": "absent"}),
]
# The registries the examples name -> the test registry standing in for it (short names are Docker Hub's).
REGISTRIES = {"docker.io": "plain", "quay.io": "plain", "registry.example.com": "basic",
              "registry.internal:5000": "tls", "10.0.0.5:5000": "tls"}
# Host paths below these are mapped into the test's folder (the files the image examples read are made there).
HOST_DIRS = ("/srv/", "/var/lib/kernelbox/", "/run/containers/", "/etc/pki/", "/etc/api/")

# --- the container examples: containers named with CONTAINER_PREFIX, below the test cgroup parent -------------

CONTAINER_MODULES = ("container_process", "container", "container_exec", "container_info")
CONTAINER_PREFIX = "kbt-x"  # the harness's containers fixture removes kbt-* containers a failed test left
# container_exec's and container_info's examples use the web server container_process's examples start, before
# those remove it.
PROCESS_RUN = ("container_process", "container_exec", "container_info")
# "Join any process by PID" is for processes kernelbox did not start (a container's seccomp filter cannot be
# copied): the bundle's init stands in, its config.json has no seccomp section.
EXEC_SETUP = [task("the bundle container's pid, for container_exec", "container_info", {"name": "bundle"},
                   register="kx_bundle")]
# The root the first example runs from, the netns it joins (written as examples are, rewritten as they are).
PROCESS_SETUP = [
    task("example image for container_process", "image_layers", {"src": "/srv/images/busybox.tar"},
         register="image"),
    task("example overlay for container_process", "overlay_rootfs", {
        "lower": "{{ image.lower }}", "upper": "/var/lib/kernelbox/rootfs/web/upper",
        "work": "/var/lib/kernelbox/rootfs/web/work", "merged": "/var/lib/kernelbox/rootfs/web/merged"},
        register="overlay"),
    task("example netns for container_process", "netns", {"name": "web"}),
]
PROCESS_CLEANUP = [task("remove the example container %s" % name, "container_process", {"name": name, "state": "absent"})
                   for name in ("web", "report", "bundle")] + [
    IMAGE_CLEANUP[0], task("remove the example netns", "netns", {"name": "web", "state": "absent"})]

# The container examples: a bridge standing in for the host role's kb0 (its subnet holds the fixed address one
# example asks for), and their images built here (busybox with httpd as nginx's and the api's server).
CONTAINER_RUN = ("container",)
CONTAINER_SETUP = [task("example bridge for container", "bridge", {"name": "kb0", "addresses": ["10.88.0.1/24"]})]
CONTAINER_CLEANUP = [task("remove the example container %s" % name, "container", {
    "name": name, "state": "absent", "keep_volumes": False}) for name in ("web", "sleeper", "api", "migrate")] + [
    task("remove the example image %s" % image, "image_layers", {"src": "/srv/images/" + image, "state": "absent"})
    for image in ("nginx.oci.tar", "busybox.tar", "api.oci.tar")] + [
    task("remove the example bridge", "bridge", {"name": "kb0", "state": "absent"})]

RUN = NET_RUN + IMAGE_RUN + PRUNE_RUN + PROCESS_RUN + CONTAINER_RUN + ("oci_runtime",)
# Modules whose examples the VM stage runs (pure cgroup v2; this host is hybrid): module -> the VM test file.
RUN_IN_VM = {
    "cgroup_v2": "tests/vm/test_cgroup_v2_examples.py",
}
NOT_RUN_YET = {}  # module -> why its examples are not run yet (none now: every module's are)


def _examples(module):
    with open(os.path.join(MODULES, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            return yaml.safe_load(node.value.value)
    raise AssertionError("%s has no EXAMPLES" % module)


def _prefixed(tasks):
    for entry in tasks:
        for module, keys in RENAME.items():
            args = entry.get("kernelbox.containers." + module)
            for key in keys if isinstance(args, dict) else ():
                value = args.get(key)
                if isinstance(value, str) and value and "{{" not in value and not value.startswith("/"):
                    args[key] = PREFIX + value
    return tasks


def test_every_module_is_run_or_listed():
    modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(MODULES, "*.py"))}
    assert modules - set(RUN) - set(RUN_IN_VM) - set(NOT_RUN_YET) == set(), \
        "add the module to RUN, RUN_IN_VM or NOT_RUN_YET"
    assert set(RUN) | set(RUN_IN_VM) <= modules
    assert not set(RUN) & set(NOT_RUN_YET) and not set(RUN_IN_VM) & (set(RUN) | set(NOT_RUN_YET))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for module, test_file in RUN_IN_VM.items():
        with open(os.path.join(repo, test_file), encoding="utf-8") as f:
            assert '"%s.py"' % module in f.read(), "%s does not load %s's EXAMPLES" % (test_file, module)


def _run_examples(ansible, tasks, title, extra_vars=None):
    """Run the tasks as one playbook; every one of them must have run and succeeded."""
    run = ansible.playbook(play(*tasks, name=title), extra_vars=extra_vars, timeout=1200)
    failed = [(t.task, t.msg) for t in run.tasks if t.failed]
    assert run.rc == 0 and not failed, "failed examples: %s\n%s" % (failed, run.stdout[-4000:])
    names = {entry["name"] for entry in tasks}
    assert names <= {t.task for t in run.tasks}, "examples that did not run: %s" % (
        names - {t.task for t in run.tasks})
    return run


def test_examples_run(ansible):
    tasks = []
    for module in NET_RUN:
        tasks += SETUP.get(module, []) + _prefixed(_examples(module))
    try:
        _run_examples(ansible, tasks, "module examples")
    finally:
        ansible.playbook(play(*CLEANUP, name="cleanup"))
        net.remove_test_objects(PREFIX)


def _marker_layer(path, text):
    return oci_images.tar_bytes([{"name": "etc/", "type": "dir"}, {"name": path, "data": text.encode()}])


@pytest.fixture(scope="module")
def example_registries(tmp_path_factory, images):
    """Docker Hub, quay.io and the rest, as the examples use them: a plain-HTTP registry, one with a login and one
    with TLS from a test CA.  The podman-built test image is pushed under each name the examples pull; the arm64
    example's image is a two-platform index, and a second one ("moved") is pushed over its tag later."""
    base = _marker_layer("etc/os-release", "kx\n")
    layouts = {}
    for ref, version in (("multi", "1"), ("moved", "2")):
        layout = str(tmp_path_factory.mktemp("kx-" + ref) / "oci")
        oci_images.write_multiplatform_layout(layout, {
            "linux/amd64": [base, _marker_layer("etc/arch", "amd64 %s\n" % version)],
            "linux/arm64/v8": [base, _marker_layer("etc/arch", "arm64 %s\n" % version)]}, ref)
        layouts[ref] = layout
    started = {}
    try:
        for mode in ("plain", "basic", "tls"):
            started[mode] = Registry(str(tmp_path_factory.mktemp("kx-reg-" + mode)), mode)
        pushes = (("plain", "library/busybox", "1.36"), ("plain", "prometheus/node-exporter", "latest"),
                  ("basic", "team/web", "2.4"), ("tls", "app", "dev"))
        for mode, repository, tag in pushes:
            started[mode].push(images["oci_layout"], repository, tag, source_tag="kbt")
        started["tls"].push(layouts["multi"], "tools/debug", "1", all_platforms=True, source_tag="multi")
        started["moved"] = layouts["moved"]
        yield started
    finally:
        for registry in started.values():
            if isinstance(registry, Registry):
                registry.stop()


class World:
    """Where the examples' registries, host paths, names and pins point in the test, and the rewrite applying it."""

    def __init__(self, folder):
        self.root, self.store = os.path.join(folder, "host"), os.path.join(folder, "store")
        self.hosts, self.paths, self.pins = {}, {}, {}
        self.limits = False  # whether the examples' cgroup limits are kept (a host with the controllers)

    def path(self, value):
        return self.paths.get(value, self.root + value)

    def name(self, value):
        """An image reference, with its registry replaced by the test registry standing in for it."""
        first, slash, rest = value.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            return self.hosts[first] + "/" + rest
        return self.hosts["docker.io"] + "/" + (value if slash else "library/" + value)

    def value(self, module, option, value, args):
        if isinstance(value, list):
            return [self.value(module, option, item, args) for item in value]
        if isinstance(value, dict) and option == "namespaces" and "netns" in value:
            return dict(value, netns=PREFIX + value["netns"])
        if isinstance(value, dict) and option != "cgroup":  # a mount, say: its paths
            return {key: self.value(module, key, item, args) for key, item in value.items()}
        if option == "pid" and module == "container_exec":
            return "{{ kx_bundle.containers[0].pid }}"  # see EXEC_SETUP
        if not isinstance(value, str) or "{{" in value and option != "name":
            return value
        if option == "name":
            if module in CONTAINER_MODULES:
                return CONTAINER_PREFIX + value
            return PREFIX + value if module in RENAME else self.name(value)
        if module == "container" and option == "network" and value not in ("none", "host"):
            return PREFIX + value
        if module == "container" and option == "volumes":
            source, colon, rest = value.partition(":")
            return (self.path(source) if source.startswith("/") else PREFIX + source) + colon + rest
        if option == "username":
            return USER  # the test registry's one user
        if option == "digest" and args.get("src") in self.pins:
            return self.pins[args["src"]]
        return self.path(value) if value.startswith(HOST_DIRS) else value

    def rewrite(self, tasks):
        tasks = copy.deepcopy(tasks)
        for entry in tasks:
            for key in [k for k in entry if k.startswith("kernelbox.containers.")]:
                module, args = key.rsplit(".", 1)[1], entry[key] or {}
                entry[key] = {option: self.value(module, option, value, args) for option, value in args.items()}
                if module in IMAGE_MODULES:
                    entry[key].setdefault("store", self.store)
                if module == "container" and {"image", "rootfs"} & set(args):
                    entry[key].update(cgroup_parent=cgroup_parent(), stop_timeout=1)
                    for limit in () if self.limits else ("memory", "cpus"):
                        entry[key].pop(limit, None)
                if module == "container_process":  # init ignores SIGTERM as PID 1: no 10 s wait on each stop
                    entry[key].setdefault("stop_timeout", 1)
                if module == "container_process" and {"rootfs", "command", "oci_config"} & set(args):
                    limits = entry[key].get("cgroup", {}) if self.limits else {}
                    entry[key]["cgroup"] = dict(limits, parent=cgroup_parent())
        return tasks


def image_world(folder, images, registries):
    world = World(folder)
    world.registries = registries
    world.hosts = {name: registries[mode].host for name, mode in REGISTRIES.items()}
    world.bundle = oci_images.write_docker_archive(os.path.join(folder, "bundle.tar"), {
        "localhost/web:latest": [_marker_layer("etc/os-release", "web\n")],
        "registry.example.com/tools:1.4": [_marker_layer("etc/os-release", "tools\n"),
                                           _marker_layer("etc/tool", "1.4\n")]})
    auth = os.path.join(folder, "auth.json")
    with open(auth, "w") as handle:  # what podman login writes
        json.dump({"auths": {registries["basic"].host: {
            "auth": base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()}}}, handle)
    world.paths = {"/srv/images/web.oci.tar": images["oci_archive"], "/srv/incoming/tool.oci.tar":
                   images["oci_archive"], "/srv/images/bundle.tar": os.path.join(folder, "bundle.tar"),
                   "/srv/images/alpine-minirootfs.tar.gz": images["rootfs_tgz"],
                   "/run/containers/0/auth.json": auth, "/etc/pki/internal-ca.pem": registries["tls"].ca_path}
    with tarfile.open(images["oci_archive"]) as tar:  # the manifest digest a user pins, read with json
        world.pins = {"/srv/images/web.oci.tar": json.load(tar.extractfile("index.json"))["manifests"][0]["digest"]}
    layers = {"app": {"etc/motd": "app\n"}, "base": {"etc/motd": "base\n", "etc/os-release": "base\n"}}
    for layer, files in layers.items():
        for name, text in files.items():
            os.makedirs(os.path.dirname(world.path("/srv/layers/%s/%s" % (layer, name))), exist_ok=True)
            with open(world.path("/srv/layers/%s/%s" % (layer, name)), "w") as handle:
                handle.write(text)
    return world


def _records(store):
    """The store's image records, read with json (an independent reader): {image id: record}."""
    folder = os.path.join(store, "images", "sha256")
    return {"sha256:" + name[:-5]: json.load(open(os.path.join(folder, name)))
            for name in (os.listdir(folder) if os.path.isdir(folder) else ())}


def _stored_layers(store):
    folder = os.path.join(store, "sha256")
    return sorted("sha256:" + name for name in os.listdir(folder)) if os.path.isdir(folder) else []


def _check_pulls(run, world):
    registries = world.registries
    hub, exporter = ("plain", "library/busybox", "1.36"), ("plain", "prometheus/node-exporter", "latest")
    pulls = {
        "Pull an image from Docker Hub (busybox is docker.io/library/busybox:latest)": hub,
        "Pull from a private registry with a login, and pin what the tag resolved to": ("basic", "team/web", "2.4"),
        "The same content whatever the tag does since, with the login podman login saved": ("basic", "team/web", "2.4"),
        "Follow a moving tag (changed only when the registry's digest moved)": exporter,
        "An insecure (plain HTTP or self-signed) registry, only when asked": ("tls", "app", "dev"),
    }
    for name, (mode, repository, tag) in pulls.items():
        result = run.named(name).result
        assert result["digest"] == registries[mode].manifest_digest(repository, tag), (name, result)
    assert run.named("An insecure (plain HTTP or self-signed) registry, only when asked")["image"]["source"] == \
        "https://" + registries["tls"].host
    arm = run.named("The arm64 image of a multi-platform index, from a registry with its own CA")
    assert arm["image"]["platform"] == "linux/arm64/v8", arm.result
    with open(os.path.join(arm["lower"][0], "etc", "arch")) as handle:
        assert handle.read() == "arm64 1\n"
    tags = [tag for record in _records(world.store).values() for tag in record["tags"]]
    assert world.name("busybox:1.36") not in tags and world.name("registry.example.com/team/web:2.4") in tags, tags


def _check_files(run, world):
    bundle = run.named("One image out of a docker save archive holding several")
    assert [layer["diff_id"] for layer in bundle["layers"]] == world.bundle["registry.example.com/tools:1.4"][
        "diff_ids"], bundle.result
    rootfs = run.named("A plain rootfs tarball becomes one layer")
    assert [layer["media_type"] for layer in rootfs["layers"]] == ["rootfs-tar"], rootfs.result
    pinned = run.named("Unpack an image saved with podman save --format oci-archive, pinned by its manifest digest")
    assert pinned["image"]["manifest_digest"] == world.pins["/srv/images/web.oci.tar"], pinned.result
    found = run.named("Is this image there, complete, and which digest does its tag point to?")
    assert [image["complete"] for image in found["images"]] == [True], found.result


def _check_mounts(world):
    mounts = {point: (fstype, options) for point, fstype, options in snapshot.mounts()}
    web = world.path("/var/lib/kernelbox/rootfs/web")
    assert not any(point.startswith(web) for point in mounts) and not os.path.exists(web + "/upper"), mounts
    app = world.path("/srv/rootfs/app")
    assert mounts.get(app, ("", ""))[0] == "overlay" and "ro" in mounts[app][1].split(","), mounts.get(app)
    for name, text in (("motd", "app\n"), ("os-release", "base\n")):  # app wins over base
        with open(os.path.join(app, "etc", name)) as handle:
            assert handle.read() == text
    assert not os.access(os.path.join(app, "etc", "motd"), os.W_OK), "the read-only overlay is writable"


def _check_prunes(run, world, before, old_arm):
    """``before``: the store's images before the prune playbook, whose first task moved the arm64 tag."""
    new_arm = run.named("the arm64 tag moved: pull it again")["image"]["id"]
    assert new_arm != old_arm and old_arm in before, (new_arm, old_arm, before)
    dangling = run.named("Remove dangling images and unused layers (what docker image prune does)")
    assert dangling["images"] == [old_arm], dangling.result
    everything = run.named("Keep only the images running containers use")
    assert sorted(everything["images"]) == sorted(set(before) - {old_arm} | {new_arm}), everything.result
    planned = run.named("What would go, without removing anything")
    assert planned["images"] == [] and not planned.changed, planned.result
    assert _records(world.store) == {} and _stored_layers(world.store) == [], os.listdir(world.store)


def test_image_examples_run(ansible, images, example_registries, tmp_path):
    world = image_world(str(tmp_path), images, example_registries)
    tasks, prunes = [], []
    for module in IMAGE_RUN:
        tasks += IMAGE_SETUP.get(module, []) + _examples(module)
    for module in PRUNE_RUN:
        prunes += IMAGE_SETUP.get(module, []) + _examples(module)
    extra_vars = {"registry_password": PASSWORD}
    cleaned = False
    try:
        run = _run_examples(ansible, world.rewrite(tasks), "image examples", extra_vars)
        _check_pulls(run, world)
        _check_files(run, world)
        _check_mounts(world)
        arm_id = run.named("The arm64 image of a multi-platform index, from a registry with its own CA")["image"]["id"]
        example_registries["tls"].push(example_registries["moved"], "tools/debug", "1", all_platforms=True,
                                       source_tag="moved")
        before = sorted(_records(world.store))
        # The prunes, then the cleanup (one Ansible run less)
        cleaned = _run_examples(ansible, world.rewrite(prunes + IMAGE_CLEANUP), "image prune examples", extra_vars)
        _check_prunes(cleaned, world, before, arm_id)
    finally:
        if not cleaned:
            ansible.playbook(play(*world.rewrite(IMAGE_CLEANUP), name="cleanup"))


def _controllers():
    with open(os.path.join(snapshot.cgroup2_root(), cgroup_parent(), "cgroup.controllers")) as handle:
        return handle.read().split()


def process_world(folder):
    """The busybox image, the batch job's read-only root with its report tool, the folder it writes and a bundle."""
    world = World(folder)
    world.limits = {"memory", "pids"} <= set(_controllers())
    root = build_busybox_rootfs(os.path.join(folder, "busybox"))
    os.makedirs(os.path.join(root, "var", "log"), exist_ok=True)
    with open(os.path.join(root, "var", "log", "app.log"), "w") as handle:
        handle.write(APP_LOG)
    world.paths["/srv/images/busybox.tar"] = os.path.join(folder, "busybox.tar")
    with tarfile.open(world.paths["/srv/images/busybox.tar"], "w") as tar:
        tar.add(root, arcname=".")
    tools = build_busybox_rootfs(world.path("/srv/images/tools"))
    os.makedirs(os.path.join(tools, "out"))
    with open(os.path.join(tools, "bin", "make-report"), "w") as handle:
        handle.write("#!/bin/sh\necho \"report by $(id -u):$(id -g)\"\n")
    os.chmod(os.path.join(tools, "bin", "make-report"), 0o755)
    os.makedirs(world.path("/srv/reports"))
    os.chown(world.path("/srv/reports"), 101000, 101000)  # uid 1000 of the default user namespace (100000 + 1000)
    bundle = world.path("/srv/bundles/app")
    build_busybox_rootfs(os.path.join(bundle, "rootfs"))
    with open(os.path.join(bundle, "config.json"), "w") as handle:
        json.dump({"ociVersion": "1.0.2", "hostname": "app", "root": {"path": "rootfs", "readonly": True},
                   "process": {"args": ["/bin/sleep", "600"], "cwd": "/", "env": ["PATH=/bin"],
                               "user": {"uid": 0, "gid": 0}},
                   "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
                   "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]}},
                  handle)
    for path in (folder, os.path.dirname(world.root)):
        os.chmod(path, 0o755)
    return world


APP_LOG = "".join("line %d of the app's log\n" % n for n in range(200))


def _check_exec_info(run, web):
    stdout = {name: run.named(name)["stdout"] for name in (
        "Read the container's hostname", "Run a script with input, as an unprivileged user, with a deadline",
        "Use the host's tools on the container's network only", "Join any process by PID (nsenter -t PID -a)")}
    assert list(stdout.values())[:2] == [CONTAINER_PREFIX + "web", "got hello"], stdout  # stripped, as command's
    assert "127.0.0.1/8" in stdout["Use the host's tools on the container's network only"], stdout
    assert "/bin/sleep 600" in stdout["Join any process by PID (nsenter -t PID -a)"], stdout
    log = run.named("Dump a large file, keeping at most 16 MiB of it in the result (stdout_dropped counts the rest)")
    assert log["stdout"] == APP_LOG.rstrip("\n") and log["stdout_dropped"] == 0, log.result
    one = run.named("One container, with a CPU sample and more log")["containers"]
    assert [(c["name"], c["state"], c["pid"]) for c in one] == [(CONTAINER_PREFIX + "web", "running", web)], one
    every = {c["name"] for c in run.named("Everything about every container, and the host's features")["containers"]}
    assert {CONTAINER_PREFIX + name for name in ("web", "report", "bundle")} <= every, every


def _until_removals(tasks):
    """The examples, and the stops and removals they end with (run after the test looked at what the others made)."""
    cut = len(tasks)
    while cut and next(iter(v for k, v in tasks[cut - 1].items() if k.startswith("kernelbox.")), {}).get(
            "state") in ("stopped", "absent"):
        cut -= 1
    return tasks[:cut], tasks[cut:]


def _listening(pid, port):
    """Whether the process's network namespace has a TCP socket listening on the port (/proc/PID/net/tcp, tcp6)."""
    lines = []
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as handle:
            lines += [line.split() for line in handle]
    return any(f[1].endswith(":%04X" % port) and f[3] == "0A" for f in lines)


def _check_processes(run, world):
    web = run.named("A web server from an overlay root, limited, restarted on failure, ready when it listens")
    pid = web["pid"]
    assert alive(pid) and _listening(pid, 8080), web.result
    with open("/proc/%d/environ" % pid, "rb") as handle:
        assert b"APP_ENV=production" in handle.read().split(b"\0")
    assert os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat("/run/netns/" + PREFIX + "web").st_ino
    bigger = run.named("The same container with a bigger memory limit (applied in place, no restart)")
    assert bigger["pid"] == pid, bigger.result
    if world.limits:
        with open(os.path.join(leaf_path(CONTAINER_PREFIX + "web"), "memory.max")) as handle:
            assert handle.read().strip() == str(512 << 20)
    report = os.path.join(world.path("/srv/reports"), "report.txt")
    assert wait_until(lambda: os.path.exists(report) and os.path.getsize(report), 120), "no report"
    with open(report) as handle:
        assert handle.read() == "report by 1000:1000\n"
    bundle = run.named("Run a bundle's config.json as it is")
    assert alive(bundle["pid"]) and bundle["config"]["hostname"] == "app", bundle.result
    return pid


def test_container_process_examples_run(ansible, containers, cgroup_test_parent, tmp_path):  # noqa: F811
    world = process_world(str(tmp_path))
    for name in ("web", "report", "bundle"):
        containers(CONTAINER_PREFIX + name)
    tasks, removals = _until_removals(PROCESS_SETUP + _examples("container_process"))
    tasks += EXEC_SETUP + _examples("container_exec") + _examples("container_info")
    cleaned = False
    try:
        run = _run_examples(ansible, world.rewrite(tasks), "container_process examples")
        web = _check_processes(run, world)
        _check_exec_info(run, web)
        # The removal examples, then the cleanup (one Ansible run less)
        cleaned = _run_examples(ansible, world.rewrite(removals + PROCESS_CLEANUP), "removal examples, cleanup")
        assert not alive(web) and not os.path.exists(leaf_path(CONTAINER_PREFIX + "web")), "web was not removed"
    finally:
        if not cleaned:
            ansible.playbook(play(*world.rewrite(PROCESS_CLEANUP), name="cleanup"))


def _rootfs_layer(root, extra):
    """A layer tar of a busybox root with ``extra`` files ({path: (text, mode)}), owned by root."""
    for path, (text, mode) in extra.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        if text is not None:
            with open(os.path.join(root, path), "w") as handle:
                handle.write(text)
            os.chmod(os.path.join(root, path), mode)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(root, arcname=".", filter=lambda info: (setattr(info, "uid", 0), setattr(info, "gid", 0), info)[-1])
    return buf.getvalue()


def _oci_archive(path, layer, config):
    layout = path + ".layout"
    oci_images.write_single_layout(layout, [layer], config=config)
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(os.path.join(layout, name), arcname=name)
    shutil.rmtree(layout)


def container_world(folder):
    """nginx's and the api's images (busybox httpd serving a folder), busybox's, the site and the api's env file."""
    world = World(folder)
    world.store = "/var/lib/kernelbox/layers"  # the container module's own store (the cleanup removes the images)
    world.limits = {"memory", "cpu"} <= set(_controllers())
    images = world.path("/srv/images")
    os.makedirs(images)
    nginx = _rootfs_layer(build_busybox_rootfs(os.path.join(folder, "nginx")), {
        "usr/share/nginx/html/x": (None, 0), "var/cache/nginx/x": (None, 0)})
    _oci_archive(os.path.join(images, "nginx.oci.tar"), nginx, {
        "Cmd": ["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"], "Env": ["PATH=/bin"]})
    api = _rootfs_layer(build_busybox_rootfs(os.path.join(folder, "api")), {
        "www/health": ("ok\n", 0o644), "app/migrate": ("#!/bin/sh\necho \"migrated: $*\"\n", 0o755)})
    _oci_archive(os.path.join(images, "api.oci.tar"), api, {"Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                                                            "Env": ["PATH=/bin"]})
    busybox = build_busybox_rootfs(os.path.join(folder, "busybox"))
    with tarfile.open(os.path.join(images, "busybox.tar"), "w") as tar:
        tar.add(busybox, arcname=".")
    os.makedirs(world.path("/srv/www"))
    with open(world.path("/srv/www/index.html"), "w") as handle:
        handle.write("hello from the examples\n")
    os.makedirs(world.path("/etc/api"))
    with open(world.path("/etc/api/env"), "w") as handle:
        handle.write("API_MODE=examples\n")
    for path in (folder, os.path.dirname(world.root)):
        os.chmod(path, 0o755)
    return world


def _environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as handle:
        return [item.decode() for item in handle.read().split(b"\0") if item]


def _check_containers(run):
    web = run.named("Change only the environment; every other option keeps its value")
    assert "LOG_LEVEL=debug" in _environ(web["pid"]), web.result
    with urllib.request.urlopen("http://%s/index.html" % web["ip"], timeout=60) as response:
        assert response.read() == b"hello from the examples\n"
    sleeper = run.named("Busybox from a rootfs tarball; the command is split like a shell would")
    with open("/proc/%d/cmdline" % sleeper["pid"], "rb") as handle:
        assert handle.read().split(b"\0")[:-1] == [b"sleep", b"600"]
    api = run.named("Wait until the health check passes")
    assert api["ip"] == "10.88.0.20" and api["health"]["status"] == "healthy", api.result
    assert "API_MODE=examples" in _environ(api["pid"]) and alive(api["pid"])
    with open("/proc/%d/status" % api["pid"]) as handle:
        uids = [line.split()[1:] for line in handle if line.startswith("Uid:")][0]
    assert int(uids[0]) == api["userns"]["uid_map"][1] + 65534, (uids, api["userns"])  # nobody, in its id range
    migration = run.named("A one-shot job; its output comes back like command's")
    assert migration["rc"] == 0 and migration["stdout"].rstrip("\n") == "migrated: --apply", migration.result
    return web["pid"]


def test_container_examples_run(ansible, containers, cgroup_test_parent, tmp_path):  # noqa: F811
    world = container_world(str(tmp_path))
    for name in ("web", "sleeper", "api", "migrate"):
        containers(CONTAINER_PREFIX + name)
    tasks, removals = _until_removals(CONTAINER_SETUP + _examples("container"))
    cleaned, had_volumes = False, os.path.isdir("/var/lib/kernelbox/volumes")
    try:
        run = _run_examples(ansible, world.rewrite(tasks), "container examples")
        web = _check_containers(run)
        cleaned = _run_examples(ansible, world.rewrite(removals + CONTAINER_CLEANUP), "stop, remove, cleanup")
        assert cleaned.named("Stop it (the name alone is enough)")["status"] in ("stopped", "exited"), cleaned.tasks
        assert not alive(web) and not os.path.exists(leaf_path(CONTAINER_PREFIX + "web")), "web was not removed"
    finally:
        if not cleaned:
            ansible.playbook(play(*world.rewrite(CONTAINER_CLEANUP), name="cleanup"))
        # A named volume outlives its container (as docker's does): the removal example keeps web's.
        shutil.rmtree("/var/lib/kernelbox/volumes/%sweb-cache" % PREFIX, ignore_errors=True)
        if not had_volumes and os.path.isdir("/var/lib/kernelbox/volumes") and not os.listdir(
                "/var/lib/kernelbox/volumes"):
            os.rmdir("/var/lib/kernelbox/volumes")


# --- the oci_runtime examples: install the command, run podman with it, remove it ---------------------------------

OCI_COMMAND = "/usr/local/bin/kernelbox-runtime"
# What this host needs of podman beyond the example's command line, given as podman's own configuration files
# (the example runs as written): no pids limit (a hybrid host has no pids controller in cgroup v2, and the runtime
# refuses a limit it cannot apply), ulimits root may set without CAP_SYS_RESOURCE, no network (netavark's bridge
# would outlive the test), no events journal; its storage in the test's folder.
OCI_CONTAINERS_CONF = """[containers]
pids_limit = 0
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"
[engine]
events_logger = "none"
"""
OCI_STORAGE_CONF = """[storage]
driver = "overlay"
graphroot = "{folder}/root"
runroot = "{folder}/runroot"
"""


def _oci_examples(folder):
    """The examples, with checks of the command between them and a second install (changed=false expected)."""
    install, use, remove = _examples("oci_runtime")
    use["environment"] = {"CONTAINERS_CONF": os.path.join(folder, "containers.conf"),
                          "CONTAINERS_STORAGE_CONF": os.path.join(folder, "storage.conf")}
    return [install, task("install again", "oci_runtime", {}),
            task("the command after the install", "ansible.builtin.slurp", {"src": OCI_COMMAND}),
            task("its mode", "ansible.builtin.stat", {"path": OCI_COMMAND}),
            use, remove, task("the command after the removal", "ansible.builtin.stat", {"path": OCI_COMMAND})]


def _reap_all(timeout):
    """Wait until every process re-parented to this subreaper has exited (the event, not a fixed time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid and time.monotonic() > deadline:
            left = [entry for entry in os.listdir("/proc") if entry.isdigit() and _ppid(entry) == os.getpid()]
            raise AssertionError("still running after %ds: %s" % (timeout, [_cmdline(pid) for pid in left]))
        if not pid:
            time.sleep(0.1)


def _ppid(pid):
    try:
        with open("/proc/%s/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid


def _oci_run(ansible, folder, archive):
    """In a forked child: a private mount namespace with a tmpfs on /usr/local/bin (gone with the child: the host's
    /usr/local/bin is never written), a cgroup namespace below the test parent (podman's cgroupfs groups land there
    and are removed after), busybox imported as docker.io/library/busybox (nothing is pulled), the examples run."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

    def child():
        # conmon and its exit command (podman container cleanup) outlive podman run: they are re-parented here
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        libc.mount("kbt-oci-bin", "/usr/local/bin", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755")
        with open("/proc/self/mountinfo") as handle:  # private: nothing mounted on it propagates to the host
            tags = [line.split(" - ")[0].split()[6:] for line in handle if line.split()[4] == "/usr/local/bin"]
        assert len(tags) == 1 and not any(tag.startswith(("shared:", "master:")) for tag in tags[0]), tags
        env = dict(os.environ, CONTAINERS_CONF=os.path.join(folder, "containers.conf"),
                   CONTAINERS_STORAGE_CONF=os.path.join(folder, "storage.conf"))
        imported = subprocess.run(["podman", "import", "-q", archive, "docker.io/library/busybox:latest"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                                  check=False)
        assert imported.returncode == 0, imported.stdout
        run = ansible.playbook(play(*_oci_examples(folder), name="oci_runtime examples"), timeout=600)
        _reap_all(600)
        return {"rc": run.rc, "stdout": run.stdout, "stderr": run.stderr,
                "tasks": [[t.task, t.status, t.result, t.host] for t in run.tasks]}

    with not_a_subreaper():
        got = in_confined_cgroup_view(cgroup_parent(), child)
    return PlaybookRun(got["rc"], got["stdout"], got["stderr"], [TaskResult(*entry) for entry in got["tasks"]])


def test_oci_runtime_examples_run(ansible, busybox_rootfs, tmp_path):  # noqa: F811
    folder = str(tmp_path / "podman")
    os.makedirs(folder)
    with open(os.path.join(folder, "containers.conf"), "w") as handle:
        handle.write(OCI_CONTAINERS_CONF)
    with open(os.path.join(folder, "storage.conf"), "w") as handle:
        handle.write(OCI_STORAGE_CONF.format(folder=folder))
    archive = os.path.join(folder, "busybox.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    host_had = os.path.lexists(OCI_COMMAND)
    try:
        run = _oci_run(ansible, folder, archive)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = [(t.task, t.msg) for t in run.tasks if t.failed]
    assert run.rc == 0 and not failed, "failed examples: %s\n%s" % (failed, run.stdout[-4000:])
    install, again = run.named("Install kernelbox-runtime"), run.named("install again")
    assert install["installed"] and install["path"] == OCI_COMMAND and install.changed, install.result
    assert again["installed"] and not again.changed, again.result
    wrapper = base64.b64decode(run.named("the command after the install")["content"]).decode()
    assert wrapper.startswith("#!") and "kernelbox-runtime" in wrapper, wrapper
    mode = run.named("its mode")["stat"]
    assert mode["exists"] and mode["isreg"] and mode["xusr"] and mode["xoth"], mode
    used = run.named("Use it from podman")
    assert used["rc"] == 0, used.result
    removed = run.named("Remove the command (the code copy stays for the supervisor)")
    assert removed.changed and not removed["installed"], removed.result
    assert not run.named("the command after the removal")["stat"]["exists"]
    # The tmpfs was the child's: the sandbox's /usr/local/bin (the host's) is as it was, with no mount left on it.
    assert os.path.lexists(OCI_COMMAND) == host_had
    assert "/usr/local/bin" not in [point for point, _type, _options in snapshot.mounts()]
