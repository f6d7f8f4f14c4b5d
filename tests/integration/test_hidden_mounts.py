# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A mount hidden under another one is not there: netns, overlay_rootfs and image_layers judge a mount by what
statx of the path reaches in this mount namespace, never by a path string of /proc/self/mountinfo.

Each test runs its playbook in a fresh private mount namespace (unshare), where it first builds the state
that fooled the path lookups: mountinfo still lists a mount at a path, but another mount made over that
path (or over a directory above it) hides it.  This is what a fresh tmpfs over /run does to the host's
shared /run/netns (any nested or chrooted set-up, and this suite's own sandbox after ``make demo``).
Everything made in that namespace goes away with its last process.
"""

import json
import os
import shlex

import pytest

from harness import oci_images
from harness.ansible_runner import Ansible, venv_bin

NAME = "kbt-hidden"


def in_new_mount_namespace(setup):
    """A wrapper that runs ansible in a new private mount namespace, after the shell commands ``setup``."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", setup + '\nexec "$@"', NAME]


def play(setup, tasks):
    """Run ``tasks`` (name, module, args) in one playbook, inside a mount namespace prepared by ``setup``."""
    body = [{"name": name, module: args, "ignore_errors": True} for name, module, args in tasks]
    run = Ansible(venv_bin("python"), wrapper=in_new_mount_namespace(setup)).playbook(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": body}], indent=1), timeout=600)
    assert len(run.tasks) == len(tasks), "rc %d\n%s\n%s" % (run.rc, run.stdout, run.stderr)
    return {task.task: task for task in run.tasks}


def mountinfo(text):
    """mount id -> (parent id, mount point, fs type, source, optional fields), read with split() alone."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        table[int(fields[0])] = (int(fields[1]), fields[4], fields[sep + 1], fields[sep + 2], fields[6:sep])
    return table


def children(table, parent, mount_point):
    return [mount_id for mount_id, entry in table.items() if entry[0] == parent and entry[1] == mount_point]


def test_netns_under_a_fresh_run_over_a_shared_run_netns():
    """The host's /run/netns is a shared self-bind (what ``ip netns add`` or ``make demo`` leave); a fresh tmpfs
    over /run hides it, yet mountinfo still prints it at /run/netns.  The module must make the new /run/netns a
    shared mount point of its own, not take the hidden one for it (MS_SHARED on a plain directory: EINVAL)."""
    setup = ("mkdir -p /run/netns && mount --bind /run/netns /run/netns && mount --make-shared /run/netns\n"
             "mount -t tmpfs %s /run" % NAME)
    result = play(setup, [
        ("create", "kernelbox.containers.netns", {"name": NAME}),
        ("create again", "kernelbox.containers.netns", {"name": NAME}),
        ("mountinfo", "ansible.builtin.command", {"argv": ["cat", "/proc/self/mountinfo"]}),
        ("inside", "ansible.builtin.command", {"argv": ["ip", "-n", NAME, "-o", "link", "show"]}),
    ])
    created = result["create"]
    assert not created.failed and created.changed, created.result
    again = result["create again"]
    assert not again.failed and not again.changed, again.result
    table = mountinfo(result["mountinfo"]["stdout"])
    fresh_run = [mount_id for mount_id, entry in table.items() if entry[1:4] == ("/run", "tmpfs", NAME)]
    assert len(fresh_run) == 1, result["mountinfo"]["stdout"]
    run_netns = children(table, fresh_run[0], "/run/netns")
    assert len(run_netns) == 1, result["mountinfo"]["stdout"]
    assert any(tag.startswith("shared:") for tag in table[run_netns[0]][4]), table[run_netns[0]]
    bound = children(table, run_netns[0], "/run/netns/" + NAME)
    assert len(bound) == 1 and table[bound[0]][2] == "nsfs", result["mountinfo"]["stdout"]
    hidden = [entry for entry in table.values() if entry[1] == "/run/netns" and entry[0] not in fresh_run]
    assert hidden, "the hidden /run/netns should still be listed: %s" % result["mountinfo"]["stdout"]
    assert "lo:" in result["inside"]["stdout"], result["inside"].result


@pytest.fixture
def layers(tmp_path):
    root = str(tmp_path)
    for name, text in (("l1/a", "top\n"), ("l2/a", "bottom\n"), ("l2/b", "b\n")):
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as handle:
            handle.write(text)
    for name in ("up", "wk", "up2", "wk2", "box"):
        os.makedirs(os.path.join(root, name))
    return root


def test_overlay_rootfs_does_not_take_a_hidden_overlay_for_the_live_one(layers):
    """An overlay at box/merged, then a tmpfs over box: mountinfo still lists the overlay at box/merged, but that
    path is now a plain directory.  overlay_rootfs mounts there (before: it tried to unmount the hidden one),
    is idempotent, unmounts only its own, and never touches the hidden one."""
    d = layers
    merged = d + "/box/merged"
    setup = "\n".join([
        "mkdir -p %s" % shlex.quote(merged),
        "mount -t overlay %s -o lowerdir=%s/l1:%s/l2,upperdir=%s/up,workdir=%s/wk %s" % (NAME, d, d, d, d, merged),
        "mount -t tmpfs %s-box %s/box" % (NAME, d),
        "mkdir %s" % merged,
    ])
    spec = {"merged": merged, "lower": [d + "/l1", d + "/l2"], "upper": d + "/up2", "work": d + "/wk2"}
    result = play(setup, [
        ("mount", "kernelbox.containers.overlay_rootfs", spec),
        ("mount again", "kernelbox.containers.overlay_rootfs", spec),
        ("fs type", "ansible.builtin.command", {"argv": ["stat", "-f", "-c", "%T", merged]}),
        ("read through", "ansible.builtin.command", {"argv": ["cat", merged + "/a", merged + "/b"]}),
        ("unmount", "kernelbox.containers.overlay_rootfs", dict(spec, state="unmounted")),
        ("unmount again", "kernelbox.containers.overlay_rootfs", dict(spec, state="unmounted")),
        ("mountinfo", "ansible.builtin.command", {"argv": ["cat", "/proc/self/mountinfo"]}),
    ])
    first = result["mount"]
    assert not first.failed and first.changed, first.result
    assert first.actions and first.actions[0].startswith("mount overlay"), first.actions
    second = result["mount again"]
    assert not second.failed and not second.changed, second.result
    assert result["fs type"]["stdout"].strip() == "overlayfs"
    assert result["read through"]["stdout"] == "top\nb"
    unmounted = result["unmount"]
    assert not unmounted.failed and unmounted.changed, unmounted.result
    again = result["unmount again"]
    assert not again.failed and not again.changed, again.result
    table = mountinfo(result["mountinfo"]["stdout"])
    assert [entry[2:4] for entry in table.values() if entry[1] == merged] == [("overlay", NAME)], \
        "only the hidden overlay is left at %s:\n%s" % (merged, result["mountinfo"]["stdout"])


def test_image_layers_absent_is_not_refused_by_a_hidden_overlay(layers):
    """A store at box/store with an overlay on its layer, then a tmpfs over box (what the sandbox's /var/lib does to
    the host's demo): the new store at the same path is removable; the hidden overlay's lowerdir names a directory
    this namespace no longer sees (before: "layer ... is a lower layer of the overlay at box/rootfs")."""
    d = layers
    layer = oci_images.tar_bytes([{"name": "etc", "type": "dir"}, {"name": "etc/kbt", "data": b"layer\n"}])
    diff_id = oci_images.write_oci_layout(d + "/image", [layer])["diff_ids"][0].split(":")[1]
    store, rootfs = d + "/box/store", d + "/box/rootfs"
    image = {"src": d + "/image", "store": store}
    result = play("true", [
        ("unpack", "kernelbox.containers.image_layers", image),
        ("mkdir", "ansible.builtin.file", {"path": rootfs, "state": "directory"}),
        ("mount", "ansible.builtin.command", {"argv": [
            "mount", "-t", "overlay", NAME, "-o", "lowerdir=%s/sha256/%s/diff:%s/l2" % (store, diff_id, d), rootfs]}),
        ("hide", "ansible.builtin.command", {"argv": ["mount", "-t", "tmpfs", NAME + "-box", d + "/box"]}),
        ("unpack into the new store", "kernelbox.containers.image_layers", image),
        ("remove", "kernelbox.containers.image_layers", dict(image, state="absent")),
        ("mountinfo", "ansible.builtin.command", {"argv": ["cat", "/proc/self/mountinfo"]}),
    ])
    for name in ("unpack", "mkdir", "mount", "hide"):
        assert not result[name].failed, result[name].result
    fresh = result["unpack into the new store"]
    assert not fresh.failed and fresh.changed, fresh.result
    removed = result["remove"]
    assert not removed.failed and removed.changed, removed.result
    assert [entry[2:4] for entry in mountinfo(result["mountinfo"]["stdout"]).values() if entry[1] == rootfs] \
        == [("overlay", NAME)]
