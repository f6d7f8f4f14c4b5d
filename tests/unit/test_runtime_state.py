# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runtime state files, locks, identity, restart policy and log capping (temporary directories only)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs, restart
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError


@pytest.fixture
def layout(tmp_path):
    return state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))


def test_paths_layout(layout):
    where = state.paths("web", layout)
    assert where.state_file == os.path.join(layout.run_root, "containers", "web", "state.json")
    assert where.config_file == os.path.join(layout.lib_root, "containers", "web", "config.json")
    assert where.settings_file.endswith("/containers/web/container.json")
    assert where.log_file.endswith("/containers/web/container.log")
    assert where.lock_file == os.path.join(layout.run_root, "containers", "web.lock")


def test_save_and_load_roundtrip(layout):
    config = {"process": {"args": ["/bin/true"]}, "root": {"path": "/r"}}
    settings = state.Settings(name="web", digest=state.digest(config), restart_policy="always")
    state.save_persistent("web", config, settings, layout)
    state.save_runtime(state.Runtime("web", status=state.RUNNING, pid=1, starttime=2), layout)
    loaded = state.load("web", layout)
    assert loaded.exists and loaded.consistent
    assert loaded.config == config and loaded.settings == settings
    assert loaded.runtime.status == state.RUNNING and loaded.runtime.pid == 1
    assert state.list_names(layout) == ["web"]
    for path in (loaded.paths.config_file, loaded.paths.settings_file, loaded.paths.state_file):
        assert os.stat(path).st_mode & 0o777 == 0o600  # config holds env: root only
    state.remove_all("web", layout)
    assert not state.load("web", layout).exists and state.list_names(layout) == []


def test_torn_persistent_state_is_detected(layout):
    """A SIGKILL between writing config.json and container.json leaves a digest mismatch, never a mix."""
    old = {"process": {"args": ["a"]}}
    state.save_persistent("web", old, state.Settings(name="web", digest=state.digest(old)), layout)
    state.write_json_atomic(state.paths("web", layout).config_file, {"process": {"args": ["b"]}})
    assert not state.load("web", layout).consistent


def test_unknown_format_is_refused(layout):
    state.write_json_atomic(state.paths("web", layout).state_file, {"name": "web", "format": 99})
    with pytest.raises(state.StateError, match="format 99"):
        state.load("web", layout)


def test_newer_fields_are_ignored(layout):
    data = state.Runtime("web").to_json()
    data["added_by_a_newer_version"] = 1
    state.write_json_atomic(state.paths("web", layout).state_file, data)
    assert state.load("web", layout).runtime.name == "web"


def test_digest_ignores_key_order():
    assert state.digest({"a": 1, "b": [1, 2]}) == state.digest({"b": [1, 2], "a": 1})
    assert state.digest({"a": 1}) != state.digest({"a": 2})


_WRITER = r'''
import sys
sys.path[:0] = %(path)r
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
big = "x" * 200000
i = 0
while True:
    i += 1
    state.write_json_atomic(%(file)r, {"i": i, "pad": big})
'''


def test_sigkill_mid_write_leaves_a_parseable_file(tmp_path):
    """Kill a writer at random moments: the file always parses, and stale temp files are cleaned up."""
    target = str(tmp_path / "d" / "state.json")
    state.write_json_atomic(target, {"i": 0, "pad": ""})
    script = _WRITER % {"path": sys.path, "file": target}
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(target) as handle:
            assert "i" in json.load(handle)
    state.write_json_atomic(target, {"i": -1})
    assert os.listdir(os.path.dirname(target)) == ["state.json"]


def test_name_lock_serialises_and_survives_removal(layout):
    first = state.lock("web", layout).acquire()
    got = []

    def contender():
        lock = state.lock("web", layout).acquire(timeout=10)
        got.append((os.fstat(lock.fd).st_ino, os.stat(lock.path).st_ino))
        lock.release(remove=True)

    thread = threading.Thread(target=contender)
    thread.start()
    time.sleep(0.2)
    assert got == []  # still waiting
    first.release(remove=True)  # absent removes the lock file while holding it
    thread.join(10)
    held, at_path = got[0]
    assert held == at_path  # the waiter holds the file the path names, not the unlinked one
    assert not os.path.exists(state.paths("web", layout).lock_file)


def test_name_lock_times_out_naming_the_holder(layout):
    first = state.lock("web", layout).acquire()
    with pytest.raises(KernelboxError, match="PID %d" % os.getpid()):
        state.lock("web", layout).acquire(timeout=0.2)
    first.release()


def test_process_identity_rejects_a_recycled_pid():
    me = state.ProcessId.of(os.getpid())
    assert me.alive()
    impostor = state.ProcessId(me.pid, me.starttime + 1, me.boot)
    assert not impostor.alive() and impostor.pidfd() is None
    assert not impostor.signal(signal.SIGTERM)  # never signalled
    other_boot = state.ProcessId(me.pid, me.starttime, "not-this-boot")
    assert not other_boot.alive()


def test_zombie_is_not_alive():
    proc = subprocess.Popen(["true"])
    ident = state.ProcessId.of(proc.pid)
    deadline = time.time() + 5
    while state.read_stat(proc.pid).state != "Z" and time.time() < deadline:
        time.sleep(0.01)
    assert ident is None or not ident.alive()
    proc.wait()


@pytest.mark.parametrize("text, name, retries", [
    ("no", "no", None), ("always", "always", None), ("on-failure", "on-failure", None),
    ("on-failure:3", "on-failure", 3), (" ON-FAILURE:0 ", "on-failure", 0), (None, "no", None),
    ("unless-stopped", "unless-stopped", None),
])
def test_restart_policy_parse(text, name, retries):
    policy = restart.parse(text)
    assert (policy.name, policy.max_retries) == (name, retries)


@pytest.mark.parametrize("text", ["sometimes", "always:3", "on-failure:-1", "on-failure:x", "unless-stopped:2"])
def test_restart_policy_refused(text):
    with pytest.raises(ValueError):
        restart.parse(text)


@pytest.mark.parametrize("policy, code, signalled, count, stop, expected", [
    ("no", 1, False, 0, False, False),
    ("always", 0, False, 5, False, True),
    ("always", 1, False, 0, True, False),          # a stop request is never undone
    ("unless-stopped", 0, False, 3, False, True),  # restarts like always (boot start is the difference)
    ("unless-stopped", 1, False, 0, True, False),
    ("on-failure", 0, False, 0, False, False),
    ("on-failure", 1, False, 99, False, True),
    ("on-failure", None, False, 0, False, True),    # launch failure / unknown exit counts as failure
    ("on-failure", 137, True, 0, False, True),
    ("on-failure:2", 1, False, 1, False, True),
    ("on-failure:2", 1, False, 2, False, False),
    ("on-failure:0", 1, False, 0, False, False),
])
def test_should_restart(policy, code, signalled, count, stop, expected):
    assert restart.should_restart(restart.parse(policy), code, signalled, count, stop) is expected


def test_backoff_doubles_and_caps():
    assert [restart.backoff(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert restart.backoff(100) == restart.MAX_DELAY
    assert restart.next_streak(3, 1.0) == 4 and restart.next_streak(3, 60.0) == 0
    assert restart.next_streak(0, None) == 1


def test_legacy_log_rotation_keeps_one_old_file(tmp_path):
    """A container started by an older supervisor holds its log file itself (O_APPEND)."""
    path = str(tmp_path / "c.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"".join(b"line %d\n" % i for i in range(100)))
    assert logs.rotate_legacy(path, 100)
    assert os.path.getsize(path) == 0 and os.path.getsize(path + ".1") == 100  # the last 100 bytes only
    os.write(fd, b"after\n")  # the container's O_APPEND fd continues at the new end
    os.close(fd)
    assert open(path).read() == "after\n"
    assert logs.tail(path, 3) == ["line 98", "line 99", "after"]
    assert not logs.rotate_legacy(path, 100) and not logs.rotate_legacy(path, 0)
    logs.remove(path)
    assert os.listdir(str(tmp_path)) == []


def test_log_tail_drops_partial_first_line(tmp_path):
    path = str(tmp_path / "c.log")
    with open(path, "w") as handle:
        handle.write("a" * 100 + "\nend\n")
    assert logs.tail(path, 5, max_bytes=10) == ["end"]
    assert logs.tail(str(tmp_path / "missing.log")) == []


def test_listening_ports_parser():
    text = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000\n"
            "   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000\n"
            "   2: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 0\n")
    assert procfs.listening_tcp_ports(text) == {8080, 443}
