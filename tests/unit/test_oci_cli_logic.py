# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernelbox-runtime's pure parts: argument parsing, update flags, IDs, state documents, logs, documents."""

import copy
import json

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import cli, documents, store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import hooks
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError


def test_version_needs_no_import_and_matches_the_spec_code():
    assert cli.SPEC_VERSION == S.OCI_VERSION_MAX


def test_global_flags_come_before_the_command_as_clients_pass_them():
    args = cli.parser().parse_args(["--root", "/run/x", "--log", "/l", "--log-format", "json", "create", "--bundle",
                                    "/b", "--pid-file", "/p", "--console-socket", "/s", "--preserve-fds", "2", "id1"])
    assert (args.root, args.log, args.log_format, args.command, args.bundle, args.pid_file, args.console_socket,
            args.preserve_fds, args.container_id) == ("/run/x", "/l", "json", "create", "/b", "/p", "/s", 2, "id1")
    exec_args = cli.parser().parse_args(["exec", "-d", "--pid-file", "/p", "-t", "id1", "sh", "-c", "x"])
    assert exec_args.detach and exec_args.tty and exec_args.command_args == ["sh", "-c", "x"]
    assert cli.parser().parse_args(["kill", "id1"]).signal == "SIGTERM"
    assert cli.parser().parse_args(["kill", "--all", "id1", "9"]).all


def test_update_flags_become_linux_resources():
    args = cli.parser().parse_args(["update", "--memory", "512M", "--memory-swap", "1G", "--cpu-quota", "50000",
                                    "--cpu-period", "100000", "--pids-limit", "-1", "--cpuset-cpus", "0-1", "id1"])
    assert cli.update_changes(args) == {"memory": {"limit": 512 << 20, "swap": 1 << 30},
                                        "cpu": {"quota": 50000, "period": 100000, "cpus": "0-1"},
                                        "pids": {"limit": -1}}
    with pytest.raises(KernelboxError, match="nothing to change"):
        cli.update_changes(cli.parser().parse_args(["update", "id1"]))
    with pytest.raises(KernelboxError, match="--kernel-memory: kernel memory has no cgroup v2 limit"):
        cli.update_changes(cli.parser().parse_args(["update", "--kernel-memory", "1M", "id1"]))
    with pytest.raises(KernelboxError, match="--memory"):
        cli.update_changes(cli.parser().parse_args(["update", "--memory", "lots", "id1"]))


@pytest.mark.parametrize("value, ok", [("abc", True), ("a.b_c+d-1", True), ("", False), ("..", False),
                                       ("a/b", False), ("a b", False), ("é", False)])
def test_container_ids(value, ok):
    if ok:
        assert store.check_id(value) == value
    else:
        with pytest.raises(KernelboxError, match="invalid container id"):
            store.check_id(value)


def test_state_document_of_a_stopped_container():
    record = store.Record(id="c1", bundle="/b", rootfs="/b/rootfs", created="2026-01-01T00:00:00+00:00",
                          config={"ociVersion": "1.0.2", "annotations": {"k": "v"}}, pid=0)
    assert store.state_document(record) == {"ociVersion": "1.0.2", "id": "c1", "status": "stopped", "pid": 0,
                                            "bundle": "/b", "rootfs": "/b/rootfs",
                                            "created": "2026-01-01T00:00:00+00:00", "owner": "",
                                            "annotations": {"k": "v"}}


def test_json_log_lines(tmp_path, capsys):
    log = cli.Log(str(tmp_path / "log"), "json", debug=False)
    log.error("container does not exist: x")
    log.warning("careful")
    lines = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert [(line["level"], line["msg"]) for line in lines] == [
        ("error", "container does not exist: x"), ("warning", "careful")]
    assert capsys.readouterr().err == "container does not exist: x\n"  # errors reach stderr too, plainly
    cli.Log(None, "text", debug=False).error('say "hi"')
    assert capsys.readouterr().err.endswith('level=error msg="say \\"hi\\""\n')


def test_features_and_example_spec():
    features = documents.features()
    assert set(features) == {"ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux", "annotations"}
    assert {"rbind", "rslave", "nosymfollow", "ro"} <= set(features["mountOptions"])
    assert features["linux"]["seccomp"]["operators"][0] == "SCMP_CMP_EQ"
    example = documents.example_spec()
    assert example["root"] == {"path": "rootfs", "readonly": False} and example["process"]["terminal"] is True
    spec = S.from_oci(copy.deepcopy(example), bundle="/srv/bundle")
    assert spec.root.path == "/srv/bundle/rootfs" and spec.linux.namespace("user") is not None


def test_hooks_from_a_stored_config():
    config = {"hooks": {"poststop": [{"path": "/bin/a", "args": ["a", "x"], "timeout": 3}, {"path": "/bin/b"}]}}
    assert hooks.calls_in(config, "poststop") == [hooks.HookCall("/bin/a", ["a", "x"], [], 3),
                                                  hooks.HookCall("/bin/b", [], [], None)]
    assert hooks.calls_in({}, "poststart") == []
    assert json.loads(hooks.state_json("1.0.2", "c1", "running", 42, "/b", {})) == {
        "ociVersion": "1.0.2", "id": "c1", "status": "running", "pid": 42, "bundle": "/b"}
