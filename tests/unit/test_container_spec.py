# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_process options -> OCI spec (pure mapping, no host)."""
import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_options as options
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_spec as cs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

BASE = {"rootfs": "/srv/root", "command": ["/bin/sh", "-c", "sleep 1"], "seccomp": "unconfined"}


def build(**extra):
    params = dict(BASE)
    params.update(extra)
    return cs.from_options(params, "web")


def test_defaults_are_the_secure_ones():
    spec = build()
    oci = spec.to_oci()
    assert oci["root"] == {"path": "/srv/root", "readonly": False}
    assert oci["hostname"] == "web"
    assert [n["type"] for n in oci["linux"]["namespaces"]] == ["user", "pid", "network", "ipc", "uts", "mount",
                                                               "cgroup"]
    caps = oci["process"]["capabilities"]
    assert len(caps["bounding"]) == 14 and caps["inheritable"] == [] and caps["ambient"] == []
    assert oci["process"]["noNewPrivileges"] is True
    assert "/proc/kcore" in oci["linux"]["maskedPaths"] and "/proc/sys" in oci["linux"]["readonlyPaths"]
    assert oci["annotations"]["io.kernelbox.etc.hostname"] == "web\n"
    assert "127.0.1.1\tweb" in oci["annotations"]["io.kernelbox.etc.hosts"]
    assert "io.kernelbox.etc.resolv-conf" not in oci["annotations"]


def test_default_seccomp_is_dockers_profile_for_the_caps():
    params = dict(BASE, seccomp=None)
    oci = cs.from_options(params, "web").to_oci()
    assert oci["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_env_is_sorted_with_a_default_path():
    a = build(env={"B": 2, "A": "x"}).process.env
    b = build(env={"A": "x", "B": "2"}).process.env
    assert a == b == ["A=x", "B=2", specs.DEFAULT_PATH]
    assert build(env={"PATH": "/bin"}).process.env == ["PATH=/bin"]


def test_capabilities_add_drop():
    spec = build(cap_drop=["net_raw", "CAP_MKNOD"], cap_add=["sys_ptrace"])
    bounding = spec.process.capabilities.bounding
    assert "CAP_NET_RAW" not in bounding and "CAP_MKNOD" not in bounding and "CAP_SYS_PTRACE" in bounding
    assert build(cap_drop=["ALL"]).process.capabilities.effective == []
    assert build(capabilities=["kill"]).process.capabilities.permitted == ["CAP_KILL"]
    with pytest.raises(ValidationError, match="unknown capability"):
        build(cap_add=["CAP_FLY"])


def test_user_groups_umask_rlimits():
    spec = build(user="1000:2000", groups=[20, 10, 20], umask="0077", rlimits={"nofile": "100:200", "core": 0})
    assert (spec.process.user.uid, spec.process.user.gid, spec.process.user.additional_gids) == (1000, 2000, [10, 20])
    assert spec.process.user.umask == 0o077
    limits = {r.type: (r.soft, r.hard) for r in spec.process.rlimits}
    assert limits == {"RLIMIT_NOFILE": (100, 200), "RLIMIT_CORE": (0, 0)}
    assert build(user="7").process.user.gid == 7
    with pytest.raises(ValidationError, match="numeric"):
        build(user="nobody")


def test_namespaces_and_joined_netns():
    spec = build(namespaces={"netns": "blue", "user": False, "time": True}, time_offsets={"boottime": 3600.5})
    types = {n.type: n.path for n in spec.linux.namespaces}
    assert types["network"] == "/run/netns/blue" and "user" not in types and "time" in types
    assert spec.linux.uid_mappings == []
    assert spec.linux.time_offsets.boottime.secs == 3600 and spec.linux.time_offsets.boottime.nanosecs == 500000000
    with pytest.raises(ValidationError, match="time_offsets"):
        build(time_offsets={"monotonic": 5})
    with pytest.raises(ValidationError):
        build(namespaces={"netns": "a/b"})


def test_uid_map():
    spec = build(uid_map=[{"container_id": 0, "host_id": 200000, "size": 1000}],
                 gid_map=[{"container_id": 0, "host_id": 200000, "size": 1000}])
    assert spec.linux.uid_mappings[0].host_id == 200000


def test_no_uts_means_no_hostname():
    spec = build(namespaces={"uts": False})
    assert spec.hostname is None and "io.kernelbox.etc.hostname" not in spec.annotations


def test_mounts_add_and_replace_defaults():
    spec = build(mounts=[{"type": "tmpfs", "destination": "/tmp", "size": "8m", "mode": "1777"},
                         {"type": "bind", "source": "/srv/data", "destination": "/data", "readonly": True,
                          "options": ["nosuid"]}])
    by_dest = {m.destination: m for m in spec.mounts}
    assert by_dest["/tmp"].options == ["nosuid", "nodev", "size=8m", "mode=1777"]
    assert by_dest["/data"].options == ["rbind", "ro", "nosuid"] and by_dest["/data"].source == "/srv/data"
    assert [m.destination for m in spec.mounts].count("/tmp") == 1
    with pytest.raises(ValidationError, match="absolute host path"):
        build(mounts=[{"type": "bind", "source": "rel", "destination": "/x"}])


def test_etc_files():
    spec = build(etc_hosts={"db": "10.0.0.2"}, dns=["1.1.1.1", "2606:4700:4700:0::1111"], dns_search=["example.org"],
                 dns_options=["ndots:2"])
    assert "10.0.0.2\tdb" in spec.annotations["io.kernelbox.etc.hosts"]
    assert spec.annotations["io.kernelbox.etc.resolv-conf"] == (
        "nameserver 1.1.1.1\nnameserver 2606:4700:4700::1111\nsearch example.org\noptions ndots:2\n")
    with pytest.raises(ValidationError, match="io.kernelbox.etc"):
        build(annotations={"io.kernelbox.etc.hosts": "x"})


# Each of these once reached the container's /etc/hosts, /etc/hostname or /etc/resolv.conf as an extra line.
@pytest.mark.parametrize("extra, fragment", [
    ({"hostname": "web\n10.6.6.6 evil"}, "hostname: 'web\\n10.6.6.6 evil' is not a valid host name"),
    ({"hostname": "web\r"}, "hostname:"),
    ({"hostname": "under_score"}, "hostname:"),
    ({"hostname": "-dash"}, "hostname:"),
    ({"domainname": "corp\nnameserver 10.6.6.6"}, "domainname:"),
    ({"etc_hosts": {"db\n10.6.6.6 evil": "10.0.0.2"}}, "etc_hosts: 'db\\n10.6.6.6 evil' is not a valid host name"),
    ({"etc_hosts": {"db evil": "10.0.0.2"}}, "etc_hosts:"),
    ({"etc_hosts": {"db#": "10.0.0.2"}}, "etc_hosts:"),
    ({"dns_search": ["example.org\nnameserver 10.6.6.6"]}, "dns_search:"),
    ({"dns_search": ["a b"]}, "dns_search:"),
    ({"dns_options": ["ndots:2\nnameserver 10.6.6.6"]}, "dns_options: 'ndots:2\\nnameserver 10.6.6.6' is not a"),
    ({"dns_options": ["ndots:2 rotate"]}, "dns_options:"),
    ({"dns_options": ["\tedns0"]}, "dns_options:"),
])
def test_control_characters_never_reach_a_generated_file(extra, fragment):
    with pytest.raises(ValidationError) as info:
        build(**extra)
    assert fragment in str(info.value)


def test_valid_names_and_options_still_pass():
    spec = build(hostname="web-1.example.org", domainname="corp.example", etc_hosts={"DB-2.local": "10.0.0.2"},
                 dns_search=["example.org.", "corp"], dns_options=["ndots:2", "single-request-reopen", "edns0"])
    assert "10.0.0.2\tDB-2.local" in spec.annotations["io.kernelbox.etc.hosts"]
    assert "search example.org. corp\noptions ndots:2 single-request-reopen edns0\n" in (
        spec.annotations["io.kernelbox.etc.resolv-conf"])


def test_messages_name_the_option_at_fault(tmp_path):
    not_json = tmp_path / "passwd"
    not_json.write_text("root:x:0:0:root:/root:/bin/sh\n")
    with pytest.raises(ValidationError) as info:
        build(seccomp=str(not_json))
    assert str(info.value).startswith("seccomp: %s is not valid JSON" % not_json)
    for size in ("lots", "64 m", "1.5g", "-1", "50%%"):
        with pytest.raises(ValidationError) as info:
            build(mounts=[{"type": "tmpfs", "destination": "/scratch", "size": size}])
        assert str(info.value).startswith("mounts[0].size: %r is not a tmpfs size" % size)
    spec = build(mounts=[{"type": "tmpfs", "destination": "/scratch", "size": "50%"},
                         {"type": "tmpfs", "destination": "/big", "size": "2G"}])
    by_dest = {m.destination: m for m in spec.mounts}
    assert "size=50%" in by_dest["/scratch"].options and "size=2G" in by_dest["/big"].options


def test_bad_input_is_refused_early():
    with pytest.raises(ValidationError, match="rootfs"):
        cs.from_options({"command": ["x"]}, "web")
    with pytest.raises(ValidationError, match="command"):
        cs.from_options({"rootfs": "/r"}, "web")
    with pytest.raises(ValidationError, match="seccomp"):
        build(seccomp="sometimes")
    with pytest.raises(ValidationError, match="sysctl"):
        build(sysctls={"kernel.panic": 1})


def test_same_options_same_spec_different_command_names_the_key():
    old, new = build(), build(command=["/bin/true"])
    assert specs.recreate_keys(old, build()) == []
    assert specs.recreate_keys(old, new) == ["process.args"]


def test_limits_live_in_resources_and_never_force_a_recreate():
    base = build()
    limited = cs.with_limits(base, {"memory.max": "268435456", "pids.max": "10"})
    assert cs.unified_of(limited) == {"memory.max": "268435456", "pids.max": "10"}
    assert specs.recreate_keys(base, limited) == []


def test_oci_resources_become_limits_and_leave_the_spec():
    config = build().to_oci()
    config["linux"]["resources"] = {"memory": {"limit": 1 << 28, "swap": 1 << 29}, "pids": {"limit": 64},
                                    "cpu": {"quota": 50000, "period": 100000, "shares": 1024, "cpus": "0-1"},
                                    "unified": {"memory.high": "200000000", "cgroup.max.depth": "3"}}
    spec, limits = cs.from_oci(config, bundle=None)
    assert spec.linux.resources is None
    files = limits.normalise(page=4096).files
    assert files == {"memory.max": str(1 << 28), "memory.swap.max": str(1 << 28), "pids.max": "64",
                     "cpu.max": "50000 100000", "cpu.weight": "100", "cpuset.cpus": "0-1",
                     "memory.high": "199999488", "cgroup.max.depth": "3"}
    config["linux"]["resources"] = {"blockIO": {"weight": 10}}
    with pytest.raises(ValidationError, match="blockIO.weight"):
        cs.from_oci(config, bundle=None)
    config["linux"]["resources"] = {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]}}
    _spec, limits = cs.from_oci(config, bundle=None)
    assert [(rule.device, rule.rbps) for rule in limits.normalise().io_rules] == [("8:0", "1000")]


@pytest.mark.parametrize("raw, error", [
    ({"port": 80, "file": "/x"}, "exactly one"), ({}, None), ({"timeout": 3}, "exactly one"),
    ({"port": 70000}, "TCP port"), ({"file": "rel"}, "absolute"), ({"command": ["true"], "timeout": 0}, "positive"),
])
def test_wait_for_validation(raw, error):
    if error is None:
        assert options.wait_for(raw) is None
        return
    with pytest.raises(ValidationError, match=error):
        options.wait_for(raw)


def test_wait_for_normalised():
    expected = {"kind": "port", "value": 8080, "timeout": 30.0, "interval": 0.2}
    assert options.wait_for({"port": 8080, "timeout": None}) == expected


def test_cgroup_path_excludes_placement():
    with pytest.raises(ValidationError, match="path joins"):
        options.cgroup_params({"path": "a", "parent": "b"})
