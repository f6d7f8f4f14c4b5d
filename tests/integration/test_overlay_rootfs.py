# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""overlay_rootfs: real overlay mounts, checked with findmnt, /proc/self/mountinfo and the layer directories."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from harness import snapshot


def findmnt(path):
    """The mount at exactly ``path`` as findmnt (util-linux) sees it, or None."""
    proc = subprocess.run(["findmnt", "-J", "-M", path, "-o", "TARGET,FSTYPE,SOURCE,VFS-OPTIONS,FS-OPTIONS"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout)["filesystems"]
    return found[-1] if found else None


def unmount_below(root):
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in reversed(points):
        if point == root or point.startswith(root + "/"):
            subprocess.run(["umount", "-l", point], check=False)


def play(ansible, *tasks, **kwargs):
    """Run (name, args[, extra task keys]) overlay_rootfs tasks as one playbook: cheaper than ad-hoc calls."""
    body = []
    for task in tasks:
        name, args = task[0], task[1]
        entry = {"name": name, "kernelbox.containers.overlay_rootfs": args, "ignore_errors": True}
        entry.update(task[2] if len(task) > 2 else {})
        body.append(entry)
    run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": body}], indent=1),
                           **kwargs)
    return {task[0]: run.named(task[0]) for task in tasks}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def listing(root):
    """Every path under ``root`` with its content, for 'lower layers were never touched' proofs."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = None if os.path.isdir(path) or os.path.islink(path) else \
                open(path, "rb").read()
    return found


@pytest.fixture
def ws(tmp_path):
    """Two lower layers (l1 on top of l2, l2 holding a static busybox) and paths for upper, work, merged.

    Every mount made below tmp_path is detached afterwards, whatever the test did.
    """
    root = str(tmp_path)
    l1, l2 = os.path.join(root, "l1"), os.path.join(root, "l2")
    write(os.path.join(l2, "shared"), "base")
    write(os.path.join(l2, "only_base"), "base")
    write(os.path.join(l2, "delete_me"), "bye")
    write(os.path.join(l2, "dir", "x"), "x")
    os.makedirs(os.path.join(l2, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(l2, "bin", "busybox"))
    os.symlink("busybox", os.path.join(l2, "bin", "sleep"))
    write(os.path.join(l1, "shared"), "top")
    write(os.path.join(l1, "only_top"), "top")

    class Paths:
        pass

    paths = Paths()
    paths.root, paths.l1, paths.l2 = root, l1, l2
    paths.upper, paths.work, paths.merged = (os.path.join(root, n) for n in ("upper", "work", "merged"))
    paths.args = {"lower": [l1, l2], "upper": paths.upper, "work": paths.work, "merged": paths.merged}
    try:
        yield paths
    finally:
        unmount_below(root)


def test_mount_copy_up_whiteout_and_idempotency(ansible, ws):
    first = ansible.module("overlay_rootfs", ws.args)
    assert first.changed and not first.failed, first.result
    assert first.actions == [
        "create merged directory %s (missing)" % ws.merged,
        "create upper directory %s (missing)" % ws.upper,
        "create work directory %s (missing)" % ws.work,
        "mount overlay at %s (lower %s:%s, upper %s) (not mounted)" % (ws.merged, ws.l1, ws.l2, ws.upper),
    ]
    seen = findmnt(ws.merged)
    assert seen["fstype"] == "overlay" and seen["source"] == "kernelbox"
    assert "lowerdir=%s:%s,upperdir=%s,workdir=%s" % (ws.l1, ws.l2, ws.upper, ws.work) in seen["fs-options"]
    assert first["mounted"] and first["lower"] == [ws.l1, ws.l2] and first["upper"] == ws.upper
    assert stat.S_IMODE(os.stat(ws.work).st_mode) == 0o700

    # the topmost lower wins, lower-only files show through
    assert read(os.path.join(ws.merged, "shared")) == "top"
    assert read(os.path.join(ws.merged, "only_base")) == "base"
    # copy-up: the write lands in upper, the lower file is unchanged
    write(os.path.join(ws.merged, "only_base"), "changed")
    assert read(os.path.join(ws.upper, "only_base")) == "changed"
    assert read(os.path.join(ws.l2, "only_base")) == "base"
    # deleting a lower file leaves a whiteout (char 0/0) in upper and the lower file in place
    os.unlink(os.path.join(ws.merged, "delete_me"))
    whiteout = os.lstat(os.path.join(ws.upper, "delete_me"))
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert read(os.path.join(ws.l2, "delete_me")) == "bye"
    assert not os.path.exists(os.path.join(ws.merged, "delete_me"))

    again = ansible.module("overlay_rootfs", ws.args)
    assert not again.changed and again.actions == [], again.result
    assert again["source"] == "kernelbox" and any(o.startswith("lowerdir=") for o in again["kernel_options"])


def test_options_flags_and_readonly(ansible, ws):
    args = dict(ws.args, options={"volatile": True, "index": "off", "nodev": True})
    runs = play(ansible, ("with options", args),
                ("same, spelled differently", dict(args, options={"volatile": "yes", "index": False, "nodev": "true"})))
    mounted = runs["with options"]
    assert mounted.changed and not mounted.failed, mounted.result
    assert not runs["same, spelled differently"].changed, runs["same, spelled differently"].result
    seen = findmnt(ws.merged)
    assert seen["source"] == "kernelbox:index=off,volatile"
    assert "nodev" in seen["vfs-options"].split(",")
    assert {"volatile", "fsync=volatile"} & set(seen["fs-options"].split(","))  # spelling differs across kernels
    assert mounted["options"] == {"index": "off", "nodev": True, "volatile": True}

    # A flags-only change is made in place: it even works while a process sits in the mount
    # (an unmount would be refused), and that process stays on the same filesystem.
    sitter = subprocess.Popen(["sleep", "60"], cwd=ws.merged)
    try:
        flags = ansible.module("overlay_rootfs", dict(args, options={"volatile": True, "index": "off"}))
        assert flags.changed and flags.actions == [
            "change mount flags of overlay at %s to defaults (was nodev)" % ws.merged], flags.result
        assert os.stat("/proc/%d/cwd" % sitter.pid).st_dev == os.stat(ws.merged).st_dev
        assert "nodev" not in findmnt(ws.merged)["vfs-options"].split(",")
    finally:
        sitter.kill()
        sitter.wait()

    readonly_merged = os.path.join(ws.root, "ro")
    ro_args = {"lower": [ws.l1, ws.l2], "readonly": True, "merged": readonly_merged}
    runs = play(ansible, ("drop volatile", ws.args), ("read-only", ro_args), ("read-only again", ro_args))
    # dropping volatile remounts; the volatile marker is cleared so the same upper mounts again
    assert runs["drop volatile"].changed and not runs["drop volatile"].failed, runs["drop volatile"].result
    assert not os.path.lexists(os.path.join(ws.work, "work", "incompat", "volatile"))
    assert findmnt(ws.merged)["source"] == "kernelbox"  # the label only changes with a new mount
    ro = runs["read-only"]
    assert ro.changed and ro["readonly"] is True and ro["upper"] is None
    assert not runs["read-only again"].changed
    assert "ro" in findmnt(readonly_merged)["vfs-options"].split(",")
    with pytest.raises(OSError) as info:
        write(os.path.join(readonly_merged, "new"), "x")
    assert info.value.errno == errno.EROFS
    runs = play(ansible, ("unmount", dict(ro_args, state="unmounted")),
                ("unmount again", dict(ro_args, state="unmounted")))
    assert runs["unmount"].changed and not runs["unmount again"].changed
    assert findmnt(readonly_merged) is None and os.path.isdir(readonly_merged)


def start_in_namespace_chrooted(merged):
    """A process in its own mount namespace whose root is the overlay (what a container looks like)."""
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "chroot", merged, "/bin/sleep", "60"])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if os.stat("/proc/%d/root" % proc.pid).st_dev == os.stat(merged).st_dev and \
                    os.readlink("/proc/%d/exe" % proc.pid).endswith("busybox"):
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError("the chrooted sleeper never started")


def test_remount_when_layers_change_refused_while_busy(any_ansible, ws):
    assert any_ansible.module("overlay_rootfs", ws.args).changed
    swapped = dict(ws.args, lower=[ws.l2, ws.l1])
    sitter = subprocess.Popen(["sleep", "60"], cwd=os.path.join(ws.merged, "dir"))
    container = start_in_namespace_chrooted(ws.merged)
    try:
        refused = any_ansible.module("overlay_rootfs", swapped)
        assert refused.failed and not refused.changed, refused.result
        assert "in use" in refused.msg
        assert "%d (sleep: cwd %s/dir)" % (sitter.pid, ws.merged) in refused.msg
        assert "%d (" % container.pid in refused.msg and "root" in refused.msg
        assert {u["pid"] for u in refused["users"]} >= {sitter.pid, container.pid}
        assert "lowerdir=%s:%s," % (ws.l1, ws.l2) in findmnt(ws.merged)["fs-options"]  # left as it was
        assert sitter.poll() is None and container.poll() is None  # never killed
    finally:
        for proc in (sitter, container):
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    remount = any_ansible.module("overlay_rootfs", swapped)
    why = "lower was %s:%s" % (ws.l1, ws.l2)
    assert remount.changed and remount.actions == [
        "unmount overlay at %s (%s)" % (ws.merged, why),
        "mount overlay at %s (lower %s:%s, upper %s) (%s)" % (ws.merged, ws.l2, ws.l1, ws.upper, why)]
    assert "lowerdir=%s:%s," % (ws.l2, ws.l1) in findmnt(ws.merged)["fs-options"]
    assert read(os.path.join(ws.merged, "shared")) == "base"


def test_check_mode_changes_nothing_and_diff(ansible, ws, host_state):
    before = host_state()
    planned = ansible.module("overlay_rootfs", ws.args, check=True, diff=True)
    assert planned.changed and len(planned.actions) == 4 and planned.actions[-1].startswith("mount overlay")
    assert planned.diff["before"]["mounted"] is False and planned.diff["after"]["mounted"] is True
    assert planned.diff["after"]["lower"] == [ws.l1, ws.l2]
    assert host_state() == before
    assert not any(os.path.exists(p) for p in (ws.upper, ws.work, ws.merged))

    mounted = ansible.module("overlay_rootfs", ws.args, diff=True)
    assert mounted.changed and mounted.diff["before"]["exists"] == {"merged": False, "upper": False, "work": False}
    before = host_state()
    seen = findmnt(ws.merged)
    runs = play(ansible, ("swap", dict(ws.args, lower=[ws.l2, ws.l1])), ("absent", dict(ws.args, state="absent")),
                ("same", ws.args), check=True, diff=True)
    swap, gone = runs["swap"], runs["absent"]
    assert swap.changed and swap.actions[0].startswith("unmount overlay")
    assert swap.diff["before"]["lower"] == [ws.l1, ws.l2] and swap.diff["after"]["lower"] == [ws.l2, ws.l1]
    assert gone.changed and gone.diff["after"] == {"merged": ws.merged, "mounted": False,
                                                   "exists": {"merged": False, "upper": False, "work": False}}
    assert not runs["same"].changed
    assert host_state() == before and findmnt(ws.merged) == seen and os.path.isdir(ws.upper)


def test_absent_twice_removes_upper_and_work_never_lowers(ansible, ws):
    lowers = (listing(ws.l1), listing(ws.l2))
    assert ansible.module("overlay_rootfs", ws.args).changed
    write(os.path.join(ws.merged, "dir", "new"), "data")
    os.unlink(os.path.join(ws.merged, "shared"))
    submount = os.path.join(ws.merged, "dir")
    subprocess.run(["mount", "-t", "tmpfs", "kbt-sub", submount], check=True)
    refused = ansible.module("overlay_rootfs", dict(ws.args, state="absent"))
    assert refused.failed and "mounts inside it: %s (tmpfs)" % submount in refused.msg
    assert os.path.isdir(ws.upper) and findmnt(ws.merged) is not None
    subprocess.run(["umount", submount], check=True)
    # a process of another mount namespace that holds a copy of the mount without using it: no refusal, a warning
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"], cwd="/")
    try:
        deadline = time.time() + 10
        while os.stat("/proc/%d/ns/mnt" % holder.pid).st_ino == os.stat("/proc/self/ns/mnt").st_ino or \
                not os.readlink("/proc/%d/exe" % holder.pid).endswith("sleep"):
            assert time.time() < deadline, "the namespace holder never started"
            time.sleep(0.05)
        runs = play(ansible, ("absent", dict(ws.args, state="absent")),
                    ("absent again", dict(ws.args, state="absent")))
    finally:
        holder.kill()
        holder.wait()
    gone, again = runs["absent"], runs["absent again"]
    assert "%d (sleep: holds a copy of the mount" % holder.pid in " ".join(gone.get("warnings", [])), gone.result
    assert gone.changed and gone.actions == [
        "unmount overlay at %s (state=absent)" % ws.merged,
        "remove upper directory %s (state=absent)" % ws.upper,
        "remove work directory %s (state=absent)" % ws.work,
        "remove mount point directory %s (state=absent)" % ws.merged]
    assert findmnt(ws.merged) is None
    assert not any(os.path.lexists(p) for p in (ws.upper, ws.work, ws.merged))
    assert (listing(ws.l1), listing(ws.l2)) == lowers
    assert not again.changed and not again.failed and again.actions == [] and again["mounted"] is False


def test_bad_inputs_fail_early(ansible, ws, host_state):
    os.makedirs(ws.work)
    write(os.path.join(ws.root, "full_work", "stray"), "x")
    os.symlink(ws.l1, os.path.join(ws.root, "l1-link"))
    tmpfs = os.path.join(ws.root, "tmpfs")
    os.makedirs(tmpfs)
    subprocess.run(["mount", "-t", "tmpfs", "kbt-tmpfs", tmpfs], check=True)
    other_fs_work = "/run/kbt-ovl-work"
    cases = [
        ("comma injection", dict(lower=[ws.l1 + ",upperdir=/etc"]), "contains a comma"),
        ("comma in upper", dict(upper=ws.upper + ",lowerdir=/etc"), "contains a comma"),
        ("relative path", dict(lower=["relative/dir"]), "not an absolute path"),
        ("dot dot", dict(lower=[ws.root + "/../etc"]), "contains '..'"),
        ("merged is /etc", dict(merged="/etc"), "/etc is a system directory"),
        ("merged in /proc", dict(merged="/proc/kbt"), "kernel interface"),
        ("work inside upper", dict(work=ws.upper + "/work"), "must not be inside upper"),
        ("different filesystems", dict(work=other_fs_work), "are on different filesystems"),
        ("work not empty", dict(work=os.path.join(ws.root, "full_work")), "is not empty (stray)"),
        ("symlinked lower", dict(lower=[os.path.join(ws.root, "l1-link")]), "is a symlink"),
        ("missing lower", dict(lower=[os.path.join(ws.root, "nope")]), "does not exist"),
        ("merged is another mount", dict(merged=tmpfs), "already a mount of tmpfs"),
        ("option not allowed", dict(options={"lowerdir": "/etc"}), "not an allowed overlay option"),
        ("bad option value", dict(options={"redirect_dir": "on,upperdir=/etc"}), "redirect_dir must be one of"),
        ("single read-only lower", dict(lower=[ws.l1], upper=None, work=None, readonly=True), "at least two lower"),
        ("readonly with upper", dict(readonly=True), "has no upper layer"),
        ("no upper", dict(upper=None, work=None), "upper and work are required"),
    ]
    tasks = [{"name": name, "kernelbox.containers.overlay_rootfs": {k: v for k, v in dict(ws.args, **args).items()
                                                                    if v is not None},
              "ignore_errors": True} for name, args, _fragment in cases]
    try:
        before = host_state()
        listed = sorted(os.listdir(ws.root))
        run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1))
        for name, _args, fragment in cases:
            result = run.named(name)
            assert result.failed and not result.changed, (name, result.result)
            assert fragment in result.msg, (name, result.msg)
        assert host_state() == before
        assert sorted(os.listdir(ws.root)) == listed and not os.path.exists(other_fs_work)
        assert not os.path.exists("/proc/kbt")
    finally:
        subprocess.run(["umount", tmpfs], check=False)
    assert snapshot.mounts() == [m for m in snapshot.mounts() if not m[0].startswith(ws.root)]


def test_kernel_refusal_is_explained_and_the_old_mount_restored(ansible, ws):
    """With index=on, overlayfs refuses an upper that was used over other lowers: the kernel's reason is shown,
    and the mount that was there before the remount is put back."""
    indexed = dict(ws.args, options={"index": "on"})
    runs = play(ansible, ("mount", indexed), ("other lowers", dict(indexed, lower=[ws.l2, ws.l1])))
    assert runs["mount"].changed
    refused = runs["other lowers"]
    assert refused.failed and "mounting the overlay at %s failed" % ws.merged in refused.msg
    assert "the kernel says: overlayfs:" in refused.msg and "the previous mount was put back" in refused.msg
    assert "(after: unmount overlay at %s" % ws.merged in refused.msg
    seen = findmnt(ws.merged)
    assert seen["source"] == "kernelbox:index=on" and "lowerdir=%s:%s," % (ws.l1, ws.l2) in seen["fs-options"]
    assert not ansible.module("overlay_rootfs", indexed).changed
