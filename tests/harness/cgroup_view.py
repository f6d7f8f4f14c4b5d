# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A confined cgroup view for OCI tools (runc, crun, podman, kernelbox-runtime) in tests and benchmarks.

On this hybrid host, clients such as podman put groups at the cgroup2 root
(/libpod_parent/...) and in every v1 hierarchy.  Run them in a child that
entered a cgroup namespace rooted below the test parent, with that view
mounted on /sys/fs/cgroup in a private mount namespace: they see a pure cgroup
v2 host whose root is inside the test parent, and whatever they leave there is
removed afterwards (``in_confined_cgroup_view``).
"""

import os
import time
import typing as t


def host_cgroup2_mount() -> str:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    raise SystemExit("no cgroup2 mount on this host")


def enter_confined_cgroup_view(parent_name: str) -> str:
    """Move into <test parent>/bench, make it our cgroup namespace root, mount that view on /sys/fs/cgroup.

    Every OCI tool run afterwards sees a pure cgroup v2 host whose root is that group: runc and podman
    enable controllers and make their groups (podman's libpod_parent/conmon included) only below the
    test parent, never in the host's cgroup2 root or the v1 hierarchies of a hybrid host (the private
    mount namespace of tests/sandbox hides them).  Returns the host path of the namespace root.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
    host_root = host_cgroup2_mount()
    ns_root = os.path.join(host_root, parent_name, "bench")
    os.makedirs(os.path.join(ns_root, "self"), exist_ok=True)
    with open(os.path.join(ns_root, "cgroup.procs"), "w") as handle:
        handle.write("0")
    libc.unshare(libc.CLONE_NEWCGROUP)
    # Out of the namespace root again, so runc may enable controllers there (no internal processes).
    with open(os.path.join(ns_root, "self", "cgroup.procs"), "w") as handle:
        handle.write("0")
    libc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    return ns_root


def in_confined_cgroup_view(parent_name: str, func: t.Callable[[], t.Any]) -> t.Any:
    """``func()`` in a forked child inside ``enter_confined_cgroup_view``; its JSON-able result comes back.

    A process cannot leave a cgroup namespace, so the child takes it and the caller, still where it
    was, removes the groups afterwards: nothing is left under the test parent.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.forked import call_in_child
    holder: t.Dict[str, str] = {}

    def child() -> t.Any:
        from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
        # Its own mount namespace too: the cgroup2 view on /sys/fs/cgroup ends with the child.
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        holder["root"] = enter_confined_cgroup_view(parent_name)
        return func()

    try:
        return call_in_child(child)
    finally:
        top = os.path.join(host_cgroup2_mount(), parent_name, "bench")
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            for _attempt in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
