# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""OCI mapping shared by container_process and kernelbox-runtime: resources, device rules, cgroupsPath."""

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_devices
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import cgroups_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import resources as R
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


def resources(data):
    return S._from(S.Resources, data, "linux.resources")


def files(data):
    return R.limits_from_oci(resources(data)).normalise(page=4096).files


def test_limits_mapping():
    assert files({"memory": {"limit": 1 << 28, "swap": 1 << 29, "reservation": -1}, "pids": {"limit": 64},
                  "cpu": {"quota": 50000, "period": 100000, "shares": 1024, "cpus": "0-1", "burst": 1000,
                          "idle": 1},
                  "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
                  "unified": {"memory.high": "200000000"}}) == {
        "memory.max": str(1 << 28), "memory.swap.max": str(1 << 28), "memory.low": "max", "pids.max": "64",
        "cpu.max": "50000 100000", "cpu.weight": "100", "cpuset.cpus": "0-1", "cpu.max.burst": "1000",
        "cpu.idle": "1", "hugetlb.2MB.max": str(4 << 20), "memory.high": "199999488"}


def test_zero_means_unset_and_negative_means_max():
    # runc's reading: podman's --pids-limit 0 asks for no pids limit at all, and needs no controller.
    assert files({"pids": {"limit": 0}, "memory": {"limit": 0}, "cpu": {"shares": 0, "quota": 0}}) == {}
    assert files({"pids": {"limit": -1}, "memory": {"limit": -1}}) == {"pids.max": "max", "memory.max": "max"}


@pytest.mark.parametrize("data, fragment", [
    ({"memory": {"swappiness": 10}}, "memory.swappiness"),
    ({"memory": {"disableOOMKiller": True}}, "disableOOMKiller"),
    ({"memory": {"swap": 100}}, "memory.swap without memory.limit"),
    ({"cpu": {"realtimeRuntime": 5}}, "realtimeRuntime"),
    ({"blockIO": {"weight": 100}}, "blockIO.weight"),
    ({"rdma": {"mlx": {"hcaHandles": 1}}}, "rdma"),
])
def test_what_cgroup_v2_cannot_do_is_refused(data, fragment):
    with pytest.raises(ValidationError, match=fragment):
        R.limits_from_oci(resources(data))


def test_device_rules_get_the_defaults_after_the_configs():
    rules = R.device_rules(resources({"devices": [{"allow": False, "access": "rwm"},
                                                  {"allow": True, "type": "c", "major": 10, "minor": 200}]}))
    assert rules[:2] == [cgroup_devices.DeviceRule(False), cgroup_devices.DeviceRule(True, "c", 10, 200, "rwm")]
    assert rules[2:] == list(cgroup_devices.DEFAULT_ALLOWED)
    assert R.device_rules(resources({})) is None and R.device_rules(None) is None
    with pytest.raises(ValidationError, match=r"linux.resources.devices\[0\].access"):
        R.device_rules(resources({"devices": [{"allow": True, "access": "x"}]}))


def test_fresh_defaults_need_no_controller():
    wanted = {"pids.max": "max", "memory.max": "max", "memory.high": "1048576", "cgroup.max.depth": "3"}
    assert R.without_fresh_defaults(wanted, available=[]) == {"memory.high": "1048576", "cgroup.max.depth": "3"}
    assert R.without_fresh_defaults(wanted, available=["pids", "memory"]) == wanted


@pytest.mark.parametrize("value, expected", [
    (None, "kernelbox/web"), ("", "kernelbox/web"),
    ("/libpod_parent/libpod-abc", "libpod_parent/libpod-abc"),
    ("//a/./b/", "a/b"),
    ("app/web", "kernelbox/app/web"),
    ("machine.slice:libpod:abc", "machine.slice/libpod-abc.scope"),
    ("system-kb-web.slice:kb:1", "system.slice/system-kb.slice/system-kb-web.slice/kb-1.scope"),
    ("-.slice:kb:1", "kb-1.scope"),
    (":kb:1", "system.slice/kb-1.scope"),
    ("user.slice::web.slice", "user.slice/web.slice"),
])
def test_cgroups_path(value, expected):
    assert cgroups_path.resolve(value, "web") == expected


@pytest.mark.parametrize("value, fragment", [
    ("/", "is the cgroup root"), ("/a/../b", "must not contain '..'"), ("a.slice:b", "neither a path"),
    ("notaslice:p:n", "not a systemd slice name"), ("a--b.slice:p:n", "empty component"), ("a.slice:p:", "names no unit"),
])
def test_cgroups_path_refusals(value, fragment):
    with pytest.raises(ValidationError, match="linux.cgroupsPath: .*%s" % fragment):
        cgroups_path.resolve(value, "web")


def test_mount_label_goes_to_new_filesystems_only():
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs
    spec = S.default_spec("/srv/rootfs", ["/bin/sh"])
    spec.linux.mount_label = "system_u:object_r:container_file_t:s0:c1,c2"
    spec.mounts.append(S.Mount("/data", None, "/srv/data", ["rbind", "ro"]))
    ops = {op.destination: op for op in rootfs.plan(spec.validate()).mounts}
    assert ops["/tmp"].data == 'mode=1777,context="system_u:object_r:container_file_t:s0:c1,c2"'
    assert ops["/dev/mqueue"].data == 'context="system_u:object_r:container_file_t:s0:c1,c2"'
    assert ops["/proc"].data is None and ops["/data"].data is None
