# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure logic of container_exec and container_info: parsers, the 'never more than the init' rule,
result formatting, state correction, features' missing list, and the status table."""

import datetime
import json
import os
import re

import pytest

from ansible_collections.kernelbox.containers.plugins.filter.status_table import status_table
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_exec as glue
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import features, info
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procscan
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")


def sample(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


# --- /proc parsers -------------------------------------------------------------------------

def test_credentials_from_a_recorded_status():
    creds = procscan.parse_credentials(sample("proc_status.txt"))
    assert (creds.uid, creds.gid, creds.groups) == (0, 0, [])
    assert creds.cap_bounding == 0x000001fffeffffff == creds.cap_effective == creds.cap_permitted
    assert creds.cap_inheritable == 0 and creds.cap_ambient == 0
    assert not creds.no_new_privs and creds.seccomp_mode == 0 and creds.nspid == [4604]


def test_credentials_inside_a_confined_container():
    text = ("Uid:\t100000\t100000\t100000\t100000\nGid:\t100000\t100000\t100000\t100000\nGroups:\t100005 100007 \n"
            "NSpid:\t4242\t1\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n"
            "CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n")
    creds = procscan.parse_credentials(text)
    assert creds.groups == [100005, 100007] and creds.nspid == [4242, 1]
    assert capabilities.names_of(creds.cap_bounding) == sorted(capabilities.DOCKER_DEFAULT,
                                                               key=capabilities.CAP_NUMBERS.get)
    assert creds.no_new_privs and creds.seccomp_mode == 2 and creds.seccomp_filters == 1


def test_id_maps_translate_both_ways_and_refuse_unmapped_ids():
    mapping = procscan.parse_id_map("         0     100000      65536\n     65536          0          1\n")
    assert mapping == [(0, 100000, 65536), (65536, 0, 1)]
    assert procscan.inside_id(100000, mapping) == 0 and procscan.inside_id(165535, mapping) == 65535
    assert procscan.inside_id(0, mapping) == 65536 and procscan.inside_id(165536, mapping) is None
    assert procscan.outside_id(1000, mapping) == 101000 and procscan.outside_id(70000, mapping) is None


def test_descendants_are_breadth_first_from_one_scan():
    entries = {pid: procscan.ProcEntry(pid, ppid, "x", "S", 1) for pid, ppid in
               ((1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (30, 99))}
    children = procscan.children_map(entries)
    assert procscan.descendants(10, children) == [10, 11, 12, 13]
    assert procscan.descendants(30, children) == [30]


# --- exec: never more than the init ---------------------------------------------------------

def _prepared(bounding, effective=None, ambient=(), nnp=False):
    caps = specs.Capabilities(bounding=list(bounding), effective=list(effective or bounding),
                              permitted=list(effective or bounding), inheritable=list(ambient), ambient=list(ambient))
    process = specs.Process(args=["true"], capabilities=caps, no_new_privileges=nnp)
    return confine.prepare(process, None)


def test_restrict_intersects_every_set_with_the_inits_bounding_set():
    prepared = _prepared(["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"], ambient=["CAP_NET_RAW"])
    init_bounding = capabilities.mask_of(["CAP_CHOWN", "CAP_KILL"])  # the init has lost CAP_NET_RAW since
    exec_request.restrict(prepared, init_bounding, no_new_privs=True)
    creds = prepared.credentials
    assert capabilities.names_of(creds.effective) == ["CAP_CHOWN", "CAP_KILL"] == capabilities.names_of(
        creds.permitted)
    assert creds.inheritable == 0 and creds.ambient == []
    assert capabilities.CAP_NUMBERS["CAP_NET_RAW"] in creds.drop_bounding
    assert capabilities.CAP_NUMBERS["CAP_KILL"] not in creds.drop_bounding
    assert prepared.no_new_privileges is True  # the init has it, so exec has it


def test_restrict_never_widens():
    prepared = _prepared(["CAP_CHOWN"], nnp=True)
    before = (prepared.credentials.effective, prepared.credentials.permitted, set(prepared.credentials.drop_bounding))
    exec_request.restrict(prepared, (1 << 41) - 1, no_new_privs=False)
    assert (prepared.credentials.effective, prepared.credentials.permitted,
            set(prepared.credentials.drop_bounding)) == before
    assert prepared.no_new_privileges is True


@pytest.mark.parametrize("text, expected", [
    (None, (None, None)), ("0", (0, 0)), ("1000", (1000, 1000)), ("1000:1001", (1000, 1001)), (" 7:0 ", (7, 0)),
])
def test_user_option(text, expected):
    assert glue.parse_user(text) == expected


@pytest.mark.parametrize("text", ["nobody", "1000:staff", "-1", "1:2:3", "4294967295", ""])
def test_user_option_refuses_names_and_out_of_range(text):
    with pytest.raises(ValidationError, match="user"):
        glue.parse_user(text)


def test_results_look_like_ansible_builtin_command():
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", glue.command_time(1767225600.123456))
    assert glue.output_text(b"a\nb\n\n", strip=True) == "a\nb"
    assert glue.output_text(b"a\n", strip=False) == "a\n"
    assert glue.output_text(b"\xff ok", strip=True) == "\ufffd ok"


def _resource(**params):
    base = dict(name="web", pid=None, command=["true"], env={}, cwd=None, user=None, groups=None, stdin=None,
                stdin_add_newline=True, strip_empty_ends=True, timeout=None, namespaces=["net"], output_limit="1M")
    base.update(params)
    return glue.ContainerExecResource(base)


@pytest.mark.parametrize("params, message", [
    (dict(command=[]), "command"), (dict(command=[""]), "command"), (dict(env={"A=B": "x"}), "env"),
    (dict(cwd="tmp"), "cwd"), (dict(timeout=0), "timeout"), (dict(name=None, pid=0), "pid"),
    (dict(name="../x"), "name"), (dict(namespaces=[]), "namespaces"), (dict(output_limit="1M junk"), "output_limit"),
])
def test_exec_validation_fails_early(params, message):
    with pytest.raises(ValidationError, match=message):
        _resource(**params).validate()


def test_exec_stdin_gets_a_newline_like_command():
    resource = _resource(stdin="hi")
    resource.validate()
    assert resource.options.stdin == b"hi\n" and resource.options.namespaces == ["net"]


# --- info ---------------------------------------------------------------------------------------

def _container(runtime=None, settings=True):
    paths = state.paths("web", state.Layout("/nonexistent/run", "/nonexistent/lib"))
    return state.Container("web", paths, {"x": 1} if settings else None,
                           state.Settings("web", "sha256:x") if settings else None, runtime)


def test_state_is_corrected_by_what_proc_says():
    assert info.state_of(state.Container("web", _container().paths, None, None, None)) == ("absent", None)
    assert info.state_of(_container()) == ("created", None)
    dead = state.Runtime("web", status=state.RUNNING, pid=999999, starttime=1, boot_id="x")
    status, note = info.state_of(_container(dead))
    assert status == "exited" and "is gone" in note
    exited = state.Runtime("web", status=state.EXITED, exit_code=3, exit_note=None)
    assert info.state_of(_container(exited)) == ("exited", None)
    assert info.state_of(_container(state.Runtime("web", status=state.RESTARTING)))[0] == "restarting"


def test_spec_summary_never_returns_environment_values():
    config = specs.default_spec("/srv/web/rootfs", ["/bin/sh", "-c", "sleep 1"]).to_oci()
    config["process"]["env"] = ["PATH=/bin", "DB_PASSWORD=hunter2"]
    summary = info.spec_summary(config)
    assert summary["env_names"] == ["DB_PASSWORD", "PATH"]
    assert "hunter2" not in json.dumps(summary)
    assert summary["command"] == ["/bin/sh", "-c", "sleep 1"] and summary["rootfs"] == "/srv/web/rootfs"
    assert summary["namespaces"]["network"] == "new" and summary["uid_map"] == [[0, 100000, 65536]]
    assert summary["seccomp"]["default_action"] == "SCMP_ACT_ERRNO" and summary["no_new_privileges"] is True
    assert info.spec_summary({"root": {}})["error"].startswith("the stored spec cannot be read")


def test_features_name_what_is_missing():
    facts = {
        "namespaces": {"cgroup": True, "time": False, "user": True},
        "cgroup": {"mode": "hybrid", "controllers": ["hugetlb", "cpu"], "kill": True, "freeze": True,
                   "pressure": False},
        "overlay": {"loadable": True}, "user_namespaces": {"available": True, "max_user_namespaces": 0},
        "seccomp": {"filter": True}, "pidfd": {"available": False},
        "syscalls": {"openat2": False, "close_range": True, "mount_api": None},
    }
    assert features.missing(facts) == ["namespace:time", "cgroup-controller:io", "cgroup-controller:memory",
                                       "cgroup-controller:pids", "cgroup:pressure", "user-namespaces", "pidfd",
                                       "syscall:openat2"]
    assert "cgroup:v2" in features.missing(dict(facts, cgroup={"mode": "none"}))
    assert features.kernel_release("6.1.0-56-amd64") == (6, 1) and features.kernel_release("5.10") == (5, 10)


# --- the status table ---------------------------------------------------------------------------

NOW = datetime.datetime(2026, 5, 7, 12, 0, 0, tzinfo=datetime.timezone.utc)


def test_status_table_reads_like_podman_ps_and_stats():
    containers = [
        {"name": "web", "state": "running", "running": True, "pid": 4242, "started_at": "2026-05-07T11:55:00+00:00",
         "network": [{"name": "lo", "addresses": ["127.0.0.1/8", "::1/128"]},
                     {"name": "eth0", "addresses": ["fe80::1/64", "10.0.0.2/24"]}],
         "namespaces_shared_with_host": ["time"],
         "cgroup": {"limits": {"memory.max": "536870912"},
                    "stats": {"memory": {"current": 12 << 20}, "pids": {"current": 3}, "cpu": {"usage_usec": 1},
                              "cpu_percent": 12.5}},
         "ports": [{"protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 8080, "host_port_end": 8080,
                    "container_port": 80, "container_port_end": 80},
                   {"protocol": "udp", "host_ip": "::", "host_port": 9000, "host_port_end": 9001,
                    "container_port": 9000, "container_port_end": 9001}]},
        {"name": "job", "state": "exited", "running": False, "pid": None, "exit_code": 3,
         "exited_at": "2026-05-07T10:00:00+00:00"},
        {"name": "hostnet", "state": "running", "running": True, "pid": 7, "started_at": "2026-05-05T12:00:00+00:00",
         "network": None, "namespaces_shared_with_host": ["net"], "processes": [{}, {}],
         "cgroup": {"limits": {}, "stats": {"memory": None, "pids": None, "cpu": {"usage_usec": 2500000}}}},
        {"name": "gone", "state": "absent", "running": False},
    ]
    lines = status_table(containers, now=NOW).splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "PID", "IP", "MEM", "USAGE", "/", "LIMIT", "CPU", "PIDS", "PORTS"]
    assert lines[1].split() == ["web", "Up", "5m", "4242", "10.0.0.2", "12.0MiB", "/", "512.0MiB", "12.50%", "3",
                                "0.0.0.0:8080->80/tcp,", "[::]:9000-9001->9000-9001/udp"]
    assert lines[2].split() == ["job", "Exited", "(3)", "2h", "ago", "-", "-", "-", "-", "-"]
    assert lines[3].split() == ["hostnet", "Up", "2d", "7", "host", "-", "2.50s", "2"]
    assert lines[4].split() == ["gone", "Absent", "-", "-", "-", "-", "-"]
    assert len({line.index("PID") if i == 0 else None for i, line in enumerate(lines)}) == 2  # aligned columns
    assert status_table([], now=NOW).splitlines()[1] == "(no containers)"


def test_status_table_refuses_other_input():
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError):
        status_table({"containers": []})


def test_capture_keeps_the_first_limit_bytes_and_counts_the_rest():
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import execution
    capture = execution.Capture(10)
    for chunk in (b"abcd", b"efghijkl", b"mnop", b""):
        capture.add(chunk)
    assert capture.data == b"abcdefghij" and capture.dropped == 6 and capture.kept == 10
    unbounded = execution.Capture(None)
    unbounded.add(b"x" * 100)
    assert unbounded.data == b"x" * 100 and unbounded.dropped == 0
    nothing = execution.Capture(0)
    nothing.add(b"abc")
    assert nothing.data == b"" and nothing.dropped == 3
