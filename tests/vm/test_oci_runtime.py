# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernelbox-runtime on a pure cgroup v2 kernel: limits from config.json and ``update`` in place, by enforcement.

The command runs from a code copy made in the VM's scratch tmpfs (the host filesystem is read-only here), with
the host's /usr/bin/python3, as the installed wrapper runs it.  pids.max holds a fork bomb and ``update`` raises
it for the same init; ``update --memory`` makes the kernel OOM-kill an exec'd allocation; the device program
denies a node on a pure v2 host too (the build machine, hybrid, proves it as well).
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from harness.containers import build_busybox_rootfs

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise

BOMB = 'exec awk \'BEGIN { while (1) { system("sleep 1000 &"); system("sleep 0.05") } }\''
HOG = "x=0123456789; while :; do x=$x$x; done"


def _until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


@pytest.fixture(scope="module")
def oci():
    scratch = tempfile.mkdtemp(prefix="kbvm-oci-")
    os.chmod(scratch, 0o755)
    layout = kbstate.Layout(os.path.join(scratch, "run"), os.path.join(scratch, "lib"))
    code = materialise.materialise(layout)
    command = ["/usr/bin/python3", "-I", "-S", os.path.join(code, materialise.CLI_SCRIPT), "--root",
               os.path.join(scratch, "state")]
    rootfs = build_busybox_rootfs(os.path.join(scratch, "rootfs"))

    def call(*args, check=True):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(command + list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=600, check=False)
            out.seek(0)
            err.seek(0)
            result = (proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))
        if check:
            assert result[0] == 0, (args, result)
        return result

    def bundle(name, args, parent, resources=None, **options):
        config = S.default_spec(rootfs, list(args), hostname=name, **options).to_oci()
        config["linux"]["cgroupsPath"] = "/%s/%s" % (parent, name)
        if resources:
            config["linux"]["resources"] = resources
        path = os.path.join(scratch, "bundle-" + name)
        os.makedirs(path)
        with open(os.path.join(path, "config.json"), "w") as handle:
            json.dump(config, handle)
        return path

    call.bundle = bundle
    try:
        yield call
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_update_raises_pids_and_lowers_memory_in_place(oci, module_parent, cgroup_file, flat_keyed):
    bomb, sleeper = "kbvm-oci-bomb", "kbvm-oci-mem"
    leaf = "%s/%s" % (module_parent, bomb)
    try:
        oci("run", "-d", "--bundle", oci.bundle(bomb, ["/bin/sh", "-c", BOMB], module_parent, {"pids": {"limit": 16}}),
            bomb)
        pid = json.loads(oci("state", bomb)[1])["pid"]
        assert _until(lambda: flat_keyed(cgroup_file(leaf, "pids.events"))["max"] > 0, 120)
        assert int(cgroup_file(leaf, "pids.current")) == 16
        oci("update", "--pids-limit", "40", bomb)
        assert _until(lambda: int(cgroup_file(leaf, "pids.current")) > 16, 120)
        assert int(cgroup_file(leaf, "pids.current")) <= 40
        assert json.loads(oci("state", bomb)[1])["pid"] == pid          # in place: the same init
        oci("run", "-d", "--bundle", oci.bundle(sleeper, ["/bin/sleep", "100000"], module_parent,
                                                {"memory": {"limit": 512 << 20}}), sleeper)
        oci("update", "--memory", "32M", "--memory-swap", "32M", sleeper)
        assert cgroup_file("%s/%s" % (module_parent, sleeper), "memory.max").strip() == str(32 << 20)
        rc, _out, _err = oci("exec", sleeper, "/bin/sh", "-c", HOG, check=False)
        assert rc == 137, rc                                              # SIGKILL from the OOM killer
        events = flat_keyed(cgroup_file("%s/%s" % (module_parent, sleeper), "memory.events"))
        assert events["oom_kill"] >= 1, events
        assert json.loads(oci("state", sleeper)[1])["status"] == "running"
    finally:
        for name in (bomb, sleeper):
            oci("delete", "--force", name, check=False)
    assert not os.path.exists("/sys/fs/cgroup/%s" % leaf)


def test_device_program_on_pure_cgroup_v2(oci, module_parent):
    name = "kbvm-oci-dev"
    resources = {"devices": [{"allow": False, "access": "rwm"}]}
    bundle = oci.bundle(name, ["/bin/sleep", "100000"], module_parent, resources, user_namespace=False)
    with open(os.path.join(bundle, "config.json")) as handle:
        config = json.load(handle)
    config["linux"]["devices"] = [{"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237}]
    with open(os.path.join(bundle, "config.json"), "w") as handle:
        json.dump(config, handle)
    try:
        oci("run", "-d", "--bundle", bundle, name)
        rc, out, err = oci("exec", name, "/bin/sh", "-c", ": < /dev/loop-control", check=False)
        assert rc == 1 and "Operation not permitted" in out + err, (rc, out, err)
        assert oci("exec", name, "/bin/sh", "-c", "head -c 1 /dev/zero | wc -c")[1].strip() == "1"
    finally:
        oci("delete", "--force", name, check=False)
