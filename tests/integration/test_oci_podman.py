# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real client: podman (with conmon) runs containers with ``--runtime kernelbox-runtime``.

podman's storage lives in the sandbox's /var/lib, and every podman command runs in
a cgroup namespace rooted below the test parent (harness/cgroup_view.py), so its
cgroupfs groups (/libpod_parent/...) land there and are removed afterwards.
Options this host needs: ``--cgroup-manager=cgroupfs`` (no systemd here),
``--pids-limit 0`` (podman's default of 2048 needs the pids controller, which
cgroup v2 lacks on this hybrid host; kernelbox-runtime refuses a limit it cannot
apply), ``--ulimit nofile/nproc`` (root lacks CAP_SYS_RESOURCE to raise them to
podman's defaults), and ``--network none`` (netavark's bridge would outlive the test).
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import tarfile
import time

import pytest

from harness.cgroup_view import in_confined_cgroup_view
from harness.containers import busybox_rootfs, cgroup_parent  # noqa: F401  pylint: disable=unused-import
from harness.oci_runtime import not_a_subreaper, runtime  # noqa: F401  pylint: disable=unused-import

STORAGE = "/var/lib/kbt-podman"
IMAGE = "localhost/kbt-busybox:latest"
RUN_OPTIONS = ["--pids-limit", "0", "--network", "none", "--ulimit", "nofile=1024:1024",
               "--ulimit", "nproc=4096:4096"]


def podman_argv(command: str) -> list:
    return ["podman", "--root", os.path.join(STORAGE, "root"), "--runroot", os.path.join(STORAGE, "runroot"),
            "--runtime", command, "--cgroup-manager=cgroupfs", "--events-backend", "none",
            "--storage-driver", "overlay"]


@pytest.fixture(scope="module")
def podman(runtime, busybox_rootfs):
    """The podman command line with kernelbox-runtime, and a busybox image imported once."""
    argv = podman_argv(runtime)
    os.makedirs(STORAGE, mode=0o755, exist_ok=True)
    archive = os.path.join(STORAGE, "busybox.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    subprocess.run(argv + ["import", "-q", archive, IMAGE], check=True, stdout=subprocess.DEVNULL, timeout=300)
    try:
        with not_a_subreaper():
            yield argv
    finally:
        subprocess.run(argv + ["rm", "-a", "-f", "-t", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=300)
        subprocess.run(argv + ["system", "reset", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=300)
        shutil.rmtree(STORAGE, ignore_errors=True)


def confined(func):
    """``func()`` in the confined cgroup view (its result comes back as JSON)."""
    return in_confined_cgroup_view(cgroup_parent(), func)


def run(argv: list, timeout: float = 180, **kwargs) -> dict:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          check=False, **kwargs)
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def test_podman_run_rm(podman):
    def steps():
        return [run(podman + ["run", "--rm"] + RUN_OPTIONS + [IMAGE, "true"]),
                run(podman + ["run", "--rm"] + RUN_OPTIONS + [IMAGE, "sh", "-c", "echo out-$((2+3)); exit 3"]),
                run(podman + ["ps", "-a", "-q"])]
    true, three, listed = confined(steps)
    assert true["rc"] == 0, true
    assert three["rc"] == 3 and three["out"] == "out-5\n", three
    assert listed["out"] == "", listed        # --rm: podman deleted them, and so did the runtime
    assert not os.listdir("/run/kernelbox-runtime")


def test_podman_detached_exec_stop_rm(podman):
    def steps():
        results = {"run": run(podman + ["run", "-d", "--name", "kbt-pod1"] + RUN_OPTIONS + [IMAGE, "sleep", "1000"])}
        results["inspect"] = run(podman + ["inspect", "kbt-pod1"])
        results["exec"] = run(podman + ["exec", "kbt-pod1", "sh", "-c", "echo exec-$((4*5)); cat /proc/1/cmdline"])
        results["exec_rc"] = run(podman + ["exec", "kbt-pod1", "sh", "-c", "exit 9"])
        results["state_dir"] = sorted(os.listdir("/run/kernelbox-runtime"))
        results["stop"] = run(podman + ["stop", "-t", "1", "kbt-pod1"])
        results["stopped"] = run(podman + ["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "kbt-pod1"])
        results["rm"] = run(podman + ["rm", "kbt-pod1"])
        results["after"] = sorted(os.listdir("/run/kernelbox-runtime"))
        return results
    got = confined(steps)
    assert got["run"]["rc"] == 0, got["run"]
    container_id = got["run"]["out"].strip()
    state = json.loads(got["inspect"]["out"])[0]["State"]
    assert state["Status"] == "running" and state["Pid"] > 0, state
    assert got["exec"]["rc"] == 0 and got["exec"]["out"].startswith("exec-20\nsleep"), got["exec"]
    assert got["exec_rc"]["rc"] == 9
    assert got["state_dir"] == [container_id]                      # the runtime's own record of it
    assert got["stop"]["rc"] == 0, got["stop"]
    assert got["stopped"]["out"].split()[0] == "exited"
    assert got["rm"]["rc"] == 0 and got["after"] == []


def test_podman_run_interactive_tty(podman):
    """`podman run -it`: conmon hands kernelbox-runtime a console socket and gets the pty master back."""
    def steps():
        master, slave = pty.openpty()
        proc = subprocess.Popen(podman + ["run", "--rm", "-it"] + RUN_OPTIONS + [IMAGE, "sh"], stdin=slave,
                                stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
        os.close(slave)
        output = b""
        typed = False
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    output += os.read(master, 4096)
                except OSError:
                    break
            if not typed and b"# " in output:
                time.sleep(0.5)
                os.write(master, b"tty; echo hi-$((1+1)); exit 4\r")
                typed = True
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait(timeout=60)
        os.close(master)
        return {"rc": rc, "out": output.decode(errors="replace"), "err": proc.stderr.read().decode()}
    got = confined(steps)
    assert got["rc"] == 4, got
    text = got["out"].replace("\r", "")
    assert "/dev/pts/0" in text and "hi-2" in text, got
