# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
import copy
import json
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities as caps
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")


def runc_config():
    """`runc spec` output of runc 1.1.5 (Debian 12), recorded."""
    with open(os.path.join(DATA, "runc_spec_config.json")) as handle:
        return json.load(handle)


def runnable_runc_config():
    """runc's example, with its ambient capabilities made inheritable (so the kernel keeps them)."""
    data = runc_config()
    data["process"]["capabilities"]["inheritable"] = list(data["process"]["capabilities"]["ambient"])
    return data


def test_default_spec_has_the_secure_defaults():
    spec = S.default_spec("/srv/rootfs", ["/bin/sh"])
    assert [ns.type for ns in spec.linux.namespaces] == ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert [(m.container_id, m.host_id, m.size) for m in spec.linux.uid_mappings] == [(0, 100000, 65536)]
    assert spec.process.capabilities.bounding == spec.process.capabilities.effective \
        == spec.process.capabilities.permitted
    assert len(spec.process.capabilities.bounding) == 14
    assert spec.process.capabilities.inheritable == [] and spec.process.capabilities.ambient == []
    assert spec.process.no_new_privileges is True
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert "/proc/kcore" in spec.linux.masked_paths and "/sys/devices/virtual/powercap" in spec.linux.masked_paths
    assert "/proc/sys" in spec.linux.readonly_paths
    destinations = [m.destination for m in spec.mounts]
    assert destinations[:3] == ["/proc", "/dev", "/dev/pts"]
    assert {"/dev/shm", "/sys", "/sys/fs/cgroup", "/tmp"} <= set(destinations)
    sysfs = [m for m in spec.mounts if m.destination == "/sys"][0]
    assert "ro" in sysfs.options


def test_default_spec_without_user_namespace():
    spec = S.default_spec("/srv/rootfs", ["/bin/sh"], user_namespace=False)
    assert spec.linux.namespace("user") is None and spec.linux.uid_mappings == []


def test_round_trip_is_one_to_one():
    spec = S.default_spec("/srv/rootfs", ["/bin/sh", "-c", "echo hi"])
    spec.linux.resources = S.Resources(memory=S.Memory(limit=1 << 20), pids=S.Pids(limit=10),
                                       unified={"memory.high": "1M"})
    spec.linux.time_offsets = S.TimeOffsets(boottime=S.TimeOffset(3600, 5))
    spec.linux.namespaces.append(S.Namespace("time"))
    spec.validate()
    data = spec.to_oci()
    assert data["linux"]["resources"]["pids"] == {"limit": 10}
    assert data["linux"]["timeOffsets"] == {"boottime": {"secs": 3600, "nanosecs": 5}}
    again = S.from_oci(json.loads(json.dumps(data)))
    assert again == spec
    assert again.to_oci() == data


def test_runc_example_maps_and_relative_root_uses_the_bundle():
    spec = S.from_oci(runnable_runc_config(), bundle="/srv/bundle")
    assert spec.root.path == "/srv/bundle/rootfs" and spec.root.readonly is True
    assert spec.hostname == "runc"
    assert spec.process.capabilities.ambient == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    assert spec.linux.resources.devices[0].allow is False
    assert spec.to_oci()["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}


def test_runc_example_as_is_maps_with_a_warning_for_ambient():
    """runc 1.1's example asks for a terminal and for ambient capabilities it never makes inheritable:
    the terminal is kept, the ambient set is what the kernel would keep (none), and a warning says so."""
    spec = S.from_oci(runc_config(), bundle="/srv/bundle")
    assert spec.process.terminal is True
    assert spec.process.capabilities.ambient == []
    assert spec.warnings == ["process.capabilities.ambient: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE not kept "
                             "(an ambient capability must also be permitted and inheritable, and these are not)"]
    assert "ambient" not in spec.to_oci()["process"]["capabilities"] or \
        spec.to_oci()["process"]["capabilities"]["ambient"] == []


@pytest.mark.parametrize("version, ok", [
    ("1.0.0", True), ("1.0.2-dev", True), ("1.1.0", True), ("1.2.1", True), ("1.3.0+dev", True),
    ("2.0.0", False), ("0.5.0", False), ("1.4.0", False), ("1.0", False), ("latest", False),
])
def test_oci_version_range(version, ok):
    data = runnable_runc_config()
    data["ociVersion"] = version
    if ok:
        assert S.from_oci(data, bundle="/srv/bundle").oci_version == version
    else:
        with pytest.raises(ValidationError, match="ociVersion: %r is not a runtime-spec version" % version):
            S.from_oci(data, bundle="/srv/bundle")


def test_hooks_map_one_to_one_and_empty_hooks_are_none():
    hooks = {"prestart": [{"path": "/bin/a", "args": ["a", "1"], "env": ["X=1"], "timeout": 5}],
             "createRuntime": [{"path": "/bin/b"}], "createContainer": [{"path": "/bin/c"}],
             "startContainer": [{"path": "/bin/d"}], "poststart": [{"path": "/bin/e"}], "poststop": [{"path": "/bin/f"}]}
    spec = S.from_oci(_config(lambda d: d.update(hooks=copy.deepcopy(hooks))), bundle="/srv/bundle")
    assert [h.path for h in spec.hooks.of("startContainer")] == ["/bin/d"]
    assert spec.hooks.prestart[0].timeout == 5
    assert spec.to_oci()["hooks"] == hooks
    assert S.from_oci(_config(lambda d: d.update(hooks={"poststop": []})), bundle="/srv/bundle").hooks is None


def test_labels_and_console_size_are_modelled():
    spec = S.from_oci(_config(lambda d: (d["process"].update(apparmorProfile="p", selinuxLabel="l",
                                                             consoleSize={"height": 24, "width": 80}),
                                         d["linux"].update(mountLabel="m"))), bundle="/srv/bundle")
    assert (spec.process.apparmor_profile, spec.process.selinux_label, spec.linux.mount_label) == ("p", "l", "m")
    assert (spec.process.console_size.height, spec.process.console_size.width) == (24, 80)


def _config(mutate):
    data = runnable_runc_config()
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), r"linux.namespaces\[5\].type: .*'pid' is given twice"),
    (lambda d: d["linux"]["namespaces"].append({"type": "net"}), "'network' is given twice"),
    (lambda d: d["linux"]["namespaces"].append({"type": "ufo"}), "unknown namespace type"),
    (lambda d: d["linux"].update(namespaces=[{"type": "pid"}]), "a mount namespace is required"),
    (lambda d: d["linux"]["namespaces"].append({"type": "user", "path": "relative"}), "must be an absolute path"),
    (lambda d: d["mounts"].append({"destination": "data", "type": "tmpfs"}),
     r"mounts\[7\].destination: 'data' must be an absolute path"),
    (lambda d: d["mounts"].append({"destination": "/a/../../etc", "type": "tmpfs"}), "must not contain '..'"),
    (lambda d: d["mounts"].append({"destination": "/data", "type": "bind", "source": "rel"}),
     "needs an absolute host path"),
    (lambda d: d["mounts"].append({"destination": "/data", "source": "/srv", "options": ["rbind", "size=1"]}),
     "not valid for a bind mount"),
    (lambda d: d["mounts"].append({"destination": "/data", "source": "x"}), "a filesystem type is required"),
    (lambda d: d["mounts"].append({"destination": "/data", "type": "tmpfs", "options": ["remount"]}), "remount"),
    (lambda d: d["mounts"][6]["options"].remove("ro"), "writable cgroup mount"),
    (lambda d: d["process"]["capabilities"]["bounding"].append("CAP_FLY"), "unknown capability 'CAP_FLY'"),
    (lambda d: d["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN"),
     "effective: CAP_SYS_ADMIN not in the permitted set"),
    (lambda d: d["process"]["capabilities"].update(bounding="CAP_KILL"), "must be a list"),
    (lambda d: d["process"]["rlimits"].append({"type": "nofile", "soft": 1, "hard": 2}), "RLIMIT_NOFILE is given twice"),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_FOO", "soft": 1, "hard": 2}), "unknown rlimit"),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_CORE", "soft": 3, "hard": 2}), "above the hard limit"),
    (lambda d: d["process"].update(args=[]), "process.args"),
    (lambda d: d["process"].update(cwd="tmp"), "process.cwd"),
    (lambda d: d["process"].update(env=["NOVALUE"]), r"process.env\[0\]"),
    (lambda d: d["process"].update(oomScoreAdj=2000), "oomScoreAdj"),
    (lambda d: d["process"]["user"].update(uid=-1), "process.user.uid"),
    (lambda d: d["process"]["user"].update(uid="0"), "must be an integer"),
    (lambda d: d.update(hooks={"prestart": [{"path": "bin/x"}]}), r"hooks.prestart\[0\].path: 'bin/x' must be an absolute path"),
    (lambda d: d.update(hooks={"poststop": [{"path": "/x", "timeout": 0}]}), "timeout: 0 must be greater than zero"),
    (lambda d: d.update(hooks={"poststart": [{"path": "/x", "env": ["X"]}]}), r"hooks.poststart\[0\].env\[0\]"),
    (lambda d: d.update(hooks={"onReboot": []}), "hooks.onReboot: unknown or unsupported field"),
    (lambda d: d["process"].update(consoleSize={"height": -1, "width": 1}), "consoleSize"),
    (lambda d: d["linux"].update(personality={"domain": "LINUX32"}), "linux.personality: unknown or unsupported"),
    (lambda d: d.update(hostname="x" * 65), "longer than 64"),
    (lambda d: d["linux"].update(namespaces=[{"type": "mount"}]), "hostname: setting it needs a uts namespace"),
    (lambda d: d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     "id mappings need a new user namespace"),
    (lambda d: d["linux"]["namespaces"].append({"type": "user"}), "a new user namespace needs id mappings"),
    (lambda d: (d["linux"]["namespaces"].append({"type": "user"}),
                d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10},
                                               {"containerID": 5, "hostID": 5000, "size": 1}],
                                  gidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}])),
     "containerID ranges overlap"),
    (lambda d: (d["linux"]["namespaces"].append({"type": "user"}),
                d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}],
                                  gidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}]),
                d["process"]["user"].update(uid=20)),
     "process.user.uid is 20, which these mappings do not map"),
    (lambda d: (d["linux"]["namespaces"].append({"type": "user"}),
                d["linux"].update(uidMappings=[{"containerID": 1, "hostID": 1000, "size": 10}],
                                  gidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}])),
     "must map container id 0"),
    (lambda d: d["linux"].update(timeOffsets={"boottime": {"secs": 1}}), "need a new time namespace"),
    (lambda d: d["linux"].update(sysctl={"kernel.panic": "1"}), "not a namespaced sysctl"),
    (lambda d: d["linux"].update(sysctl={"net.ipv4.ip_forward": "1"}, namespaces=[
        {"type": "mount"}, {"type": "uts"}]), "needs a network namespace"),
    (lambda d: d["linux"].update(maskedPaths=["proc/kcore"]), r"linux.maskedPaths\[0\]"),
    (lambda d: d["linux"].update(rootfsPropagation="rshared"), "rootfsPropagation"),
    (lambda d: d["linux"].update(devices=[{"path": "/etc/x", "type": "c", "major": 1, "minor": 3}]), "under /dev"),
    (lambda d: d["root"].update(path="/srv/../etc"), "root.path"),
    (lambda d: d.update(annotations={"io.kernelbox.etc.hosts": "x" * 70000}), "limited to"),
])
def test_invalid_specs_are_refused_naming_the_key(mutate, fragment):
    with pytest.raises(ValidationError, match=fragment):
        S.from_oci(_config(mutate), bundle="/srv/bundle")


def test_normalisation_makes_equivalent_specs_equal():
    data = _config(lambda d: None)
    other = copy.deepcopy(data)
    other["process"]["capabilities"]["bounding"] = ["net_bind_service", "cap_kill", "AUDIT_WRITE", "KILL"]
    other["linux"]["namespaces"] = [{"type": "mnt"}, {"type": "uts"}, {"type": "net"}, {"type": "ipc"},
                                    {"type": "pid"}]
    other["mounts"][0]["destination"] = "//proc/"
    other["process"]["rlimits"][0]["type"] = "nofile"
    assert S.from_oci(other, bundle="/srv/bundle") == S.from_oci(data, bundle="/srv/bundle")


def test_recreate_keys_ignore_resources_and_name_what_changed():
    old = S.default_spec("/srv/rootfs", ["/bin/sh"])
    new = old.copy()
    new.linux.resources = S.Resources(pids=S.Pids(limit=20), memory=S.Memory(limit=1 << 24))
    assert S.recreate_keys(old, new) == []
    assert S.recreate_digest(old) == S.recreate_digest(new)
    new.process.env.append("DEBUG=1")
    new.mounts.append(S.Mount("/data", None, "/srv/data", ["rbind", "ro"]))
    new.annotations["io.kernelbox.etc.hosts"] = "127.0.0.1 localhost\n"
    new.process.capabilities.ambient = []
    new.validate()
    assert S.recreate_keys(old, new) == ["annotations['io.kernelbox.etc.hosts']", "mounts", "process.env"]
    assert S.recreate_digest(old) != S.recreate_digest(new)


def test_capability_names_and_masks():
    assert caps.normalise_name("net_admin") == "CAP_NET_ADMIN"
    assert caps.normalise_name(" Cap_Sys_Admin ") == "CAP_SYS_ADMIN"
    assert caps.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert caps.mask_of(caps.DOCKER_DEFAULT) == 0x00000000A80425FB  # what Docker shows as CapBnd
    assert caps.names_of(0x5) == ["CAP_CHOWN", "CAP_DAC_READ_SEARCH"]
    with pytest.raises(ValidationError):
        caps.normalise_name("CAP_")
