# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module EXAMPLES that do not rot: the tasks are read from the module files of the collection installed from its
tarball, the names of the host objects they make get the test prefix, and they run in one playbook against
localhost, in the order they are written.  Each task must succeed; the leak check proves the examples (and the
cleanup after them) leave nothing behind.

Every module is either run here or listed in NOT_RUN_YET with the reason, so a new module cannot be forgotten.
"""

import ast
import glob
import os

import yaml

from harness import net
from harness.ansible_runner import collections_path
from harness.net import play, task

PREFIX = "kx"
MODULES = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins", "modules")

# Module -> the options whose values name host objects (interfaces, namespaces): prefixed with PREFIX.
RENAME = {
    "netns": ("name",),
    "bridge": ("name",),
    "veth": ("name", "peer", "netns", "bridge"),
}
# Examples run in this order; a module's examples may need objects made by an earlier one's (SETUP).
RUN = ("netns", "bridge", "veth")
SETUP = {"veth": [task("example bridge for veth", "bridge", {"name": PREFIX + "br0"})]}
CLEANUP = [
    task("remove the example veth", "veth", {"name": PREFIX + "veth-web", "state": "absent"}),
    task("remove the example netns", "netns", {"name": PREFIX + "web", "state": "absent"}),
    task("remove the example bridge", "bridge", {"name": PREFIX + "br0", "state": "absent"}),
]
NOT_RUN_YET = {
    "cgroup_v2": "its limits need pure cgroup v2 and /dev/sda (the VM stage), this host is hybrid",
    "container_exec": "needs a running container named web",
    "container_info": "asserts the memory controller, which a hybrid host lacks; restarts a container named web",
    "container_process": "needs an overlay root, a netns and /srv paths",
    "image_prune": "prunes the whole shared layer store (all: true), taking images that earlier tests of the session "
                   "still hold; to run once it can be pointed at a store of its own",
    "image_info": "asserts busybox:1.36 is in the store (needs the test registry)",
    "image_layers": "pulls from Docker Hub, quay.io and other registries (needs the test registry)",
    "overlay_rootfs": "needs an image file and /srv layer directories",
    # Modules landing late in this session; their examples are to be wired in here.
    "container": "needs image files under /srv/images",
    "nat": "needs the kb0 bridge and a container named web; not wired in yet",
    "oci_runtime": "writes /usr/local/bin/kernelbox-runtime (outside the sandbox's /run and /var/lib); uses podman",
}


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
    assert modules - set(RUN) - set(NOT_RUN_YET) == set(), "add the module to RUN or NOT_RUN_YET"
    assert set(RUN) <= modules


def test_examples_run(ansible):
    tasks = []
    for module in RUN:
        tasks += SETUP.get(module, []) + _prefixed(_examples(module))
    try:
        run = ansible.playbook(play(*tasks, name="module examples"), timeout=1200)
        failed = [(t.task, t.msg) for t in run.tasks if t.failed]
        assert run.rc == 0 and not failed, "failed examples: %s\n%s" % (failed, run.stdout[-4000:])
        ran = {t.task for t in run.tasks}
        assert {entry["name"] for entry in tasks} <= ran, "examples that did not run: %s" % (
            {entry["name"] for entry in tasks} - ran)
    finally:
        ansible.playbook(play(*CLEANUP, name="cleanup"))
        net.remove_test_objects(PREFIX)
