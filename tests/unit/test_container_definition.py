# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container module's definition: normalising, merging (partial updates) and what the process becomes."""

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_definition as defn
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import users
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


@pytest.mark.parametrize("raw, argv", [
    ("sleep 600", ["sleep", "600"]),
    ("sh -c 'echo hi; exit 3'", ["sh", "-c", "echo hi; exit 3"]),
    (["sleep", 600], ["sleep", "600"]),
    ("a\\ b 'c d' \"$HOME\"", ["a b", "c d", "$HOME"]),  # split like a shell, never expanded
])
def test_a_command_string_is_split_like_a_shell_would(raw, argv):
    assert defn.normalise({"command": raw})["command"] == argv


def test_an_unsplittable_command_is_refused():
    with pytest.raises(ValidationError, match="cannot be split"):
        defn.normalise({"command": "echo 'open"})


@pytest.mark.parametrize("raw, seconds", [(30, 30.0), ("30", 30.0), ("30s", 30.0), ("1m30s", 90.0),
                                          ("500ms", 0.5), ("1h", 3600.0), (2.5, 2.5)])
def test_durations(raw, seconds):
    assert defn.duration(raw, "x") == seconds


@pytest.mark.parametrize("raw", ["soon", "", "-1", "1x"])
def test_bad_durations(raw):
    with pytest.raises(ValidationError):
        defn.duration(raw, "x")


def test_volumes_bind_and_named_with_options():
    assert defn.normalise({"volumes": ["/srv/www:/www:ro", "cache:/var/cache:U", "/data//x/:/data:rw"]})[
        "volumes"] == [
        {"source": "/srv/www", "destination": "/www", "kind": "bind", "readonly": True, "chown": False},
        {"source": "cache", "destination": "/var/cache", "kind": "volume", "readonly": False, "chown": True},
        {"source": "/data/x", "destination": "/data", "kind": "bind", "readonly": False, "chown": False},
    ]


@pytest.mark.parametrize("raw, text", [
    ("/a", "not 'SOURCE:DESTINATION"), ("/a:b", "the destination"), ("a b:/x", "neither an absolute path"),
    ("/a:/b:ro,rw", "use ro or rw"), ("/a:/b:exec", "use ro or rw"), ("/x/../y:/z", "contains '..'"),
])
def test_bad_volumes(raw, text):
    with pytest.raises(ValidationError, match="volumes\\[0\\]") as info:
        defn.normalise({"volumes": [raw]})
    assert text in str(info.value)


def test_two_volumes_on_one_destination_are_refused():
    with pytest.raises(ValidationError, match="already the destination of volumes\\[0\\]"):
        defn.normalise({"volumes": ["/a:/d", "b:/d"]})


def test_env_file_format():
    text = "# comment\n\nA=1\nB= spaced value \nEMPTY=\n  C=x=y\n"
    assert defn.env_file(text, "/f") == {"A": "1", "B": " spaced value ", "EMPTY": "", "C": "x=y"}
    with pytest.raises(ValidationError, match="/f line 1 is not NAME=value"):
        defn.env_file("not a pair\n", "/f")


def test_healthcheck_forms_and_defaults():
    assert defn.healthcheck({"test": "wget -q localhost"}) == {
        "test": ["/bin/sh", "-c", "wget -q localhost"], "interval": 30.0, "timeout": 30.0, "retries": 3,
        "start_period": 0.0}
    assert defn.healthcheck({"test": ["CMD", "true"], "interval": "5s"})["test"] == ["true"]
    assert defn.healthcheck({"test": ["CMD-SHELL", "exit 0"]})["test"] == ["/bin/sh", "-c", "exit 0"]
    assert defn.healthcheck({"test": ["NONE"]}) is None
    with pytest.raises(ValidationError, match="interval and timeout must be positive"):
        defn.healthcheck({"test": "true", "interval": 0})


@pytest.mark.parametrize("raw", ["no", "always", "unless-stopped", "on-failure", "on-failure:3"])
def test_restart_policies(raw):
    assert defn.restart_policy(raw) == raw


@pytest.mark.parametrize("raw", ["bad\nhost", "-x", "a_b", "x" * 64, "", "a..b"])
def test_host_names_are_rfc_1123(raw):
    with pytest.raises(ValidationError, match="hostname"):
        defn.hostname(raw)


def test_limits_given_twice_are_refused():
    with pytest.raises(ValidationError, match="memory and cgroup.memory_max"):
        defn.normalise({"memory": "64M", "cgroup": {"memory_max": "64M"}})


def test_labels_cannot_take_kernelbox_keys():
    with pytest.raises(ValidationError, match="io.kernelbox"):
        defn.normalise({"labels": {"io.kernelbox.image": "x"}})


def test_merge_keeps_what_a_task_left_out():
    stored = defn.normalise({"image": "/i.tar", "command": "sleep 1", "env": {"A": "1"}, "network": "kb0",
                             "ip": "10.0.0.5"})
    merged = defn.merge(stored, defn.normalise({"env": {"A": "2"}}))
    assert merged["command"] == ["sleep", "1"] and merged["env"] == {"A": "2"} and merged["ip"] == "10.0.0.5"
    assert defn.changed_options(stored, merged) == ["env"]


def test_merge_replaces_image_with_rootfs_and_drops_the_address_without_a_network():
    stored = defn.normalise({"image": "/i.tar", "network": "kb0", "ip": "10.0.0.5"})
    merged = defn.merge(stored, defn.normalise({"rootfs": "/r", "network": "none"}))
    assert "image" not in merged and "ip" not in merged and merged["network"] == "none"


def test_a_default_given_explicitly_is_no_change():
    stored = defn.normalise({"image": "/i.tar"})
    assert defn.changed_options(stored, defn.merge(stored, defn.normalise({"userns": "auto", "detach": True,
                                                                           "network": "none"}))) == []


def test_long_unchanged_lists_are_summarised_in_the_diff():
    long = ["V%d=x" % i for i in range(40)]
    before, after = defn.summarise({"env": long, "cmd": ["a"]}, {"env": long, "cmd": ["b"]})
    assert before["env"] == after["env"] and before["env"].startswith("40 items, sha256:")
    assert (before["cmd"], after["cmd"]) == (["a"], ["b"])
    changed = long[:-1] + ["V39=y"]
    assert defn.summarise({"env": long}, {"env": changed}) == ({"env": long}, {"env": changed})


def test_the_process_from_image_and_definition():
    image = {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/app",
             "User": "app"}
    assert defn.process_args({}, image) == ["/entry", "serve"]
    assert defn.process_args({"command": ["run"]}, image) == ["/entry", "run"]
    assert defn.process_args({"entrypoint": ["/other"]}, image) == ["/other"]  # as Docker: no Cmd with it
    env = defn.process_env({"env": {"B": "task"}}, image, {"A": "file"})
    assert env == {"PATH": "/bin", "A": "file", "B": "task"}
    assert defn.process_cwd({}, image) == "/app" and defn.process_user({}, image) == "app"
    with pytest.raises(ValidationError, match="no Entrypoint or Cmd"):
        defn.process_args({}, {})


def test_cgroup_options_from_the_docker_names():
    definition = defn.normalise({"memory": "64M", "cpus": 0.5, "pids_limit": 0, "cgroup": {"cpu_weight": 50},
                                 "cgroup_parent": "/kbtest/1/"})
    assert defn.cgroup_options(definition) == {"memory_max": 64 << 20, "cpu_max": {"cpus": 0.5}, "pids_max": "max",
                                               "cpu_weight": 50, "parent": "kbtest/1"}


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n# comment\nbroken\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwww:x:33:\n"


@pytest.mark.parametrize("user, ids", [
    ("app", (1000, 1000, (50,))), ("1000", (1000, 1000, (50,))), ("app:www", (1000, 33, (50,))),
    ("2000", (2000, 0, ())), ("2000:7", (2000, 7, ())), ("root", (0, 0, ())),
])
def test_users_resolve_like_docker(user, ids):
    found = users.resolve(user, PASSWD, GROUP)
    assert (found.uid, found.gid, found.additional_gids) == ids


def test_unknown_users_and_groups_are_named():
    with pytest.raises(ValidationError, match="no user 'nobody' in the container's /etc/passwd"):
        users.resolve("nobody", PASSWD, GROUP)
    with pytest.raises(ValidationError, match="no group 'wheel'"):
        users.resolve("app:wheel", PASSWD, GROUP)
    with pytest.raises(ValidationError, match="it has none"):
        users.resolve("app", None, None)
