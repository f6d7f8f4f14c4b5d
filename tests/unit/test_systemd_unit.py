# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The systemd unit a container gets (pure rendering), and launch error messages."""
import os
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import lifecycle, systemd
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state


def unit(policy="no", version=252, **extra):
    settings = state.Settings(name="web", digest="sha256:x", restart_policy=policy, **extra)
    text = systemd.render_unit("web", settings, "/usr/bin/python3", "/var/lib/kernelbox/runtime", version)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_unit_shape():
    keys = unit(stop_signal="SIGINT", stop_timeout=2.5)
    assert keys["Type"] == "forking" and keys["PIDFile"] == "/run/kernelbox/containers/web/init.pid"
    assert keys["ExecStart"] == ("/usr/bin/python3 -I -S /var/lib/kernelbox/runtime/current/kernelbox-supervisor.py "
                                 "systemd-start web")
    assert keys["ExecStopPost"].endswith("systemd-stopped web")
    assert (keys["KillMode"], keys["KillSignal"], keys["TimeoutStopSec"]) == ("mixed", "SIGINT", "2.5s")
    assert keys["Delegate"] == "yes" and keys["StandardOutput"] == "journal"
    assert keys["WantedBy"] == "multi-user.target" and keys["Restart"] == "no"
    assert keys["StartLimitIntervalSec"] == "0" and "RestartSteps" not in keys


@pytest.mark.parametrize("policy, restart, burst", [
    ("always", "always", None), ("on-failure", "on-failure", None), ("on-failure:3", "on-failure", "3"),
    ("on-failure:0", "no", "1"),
])
def test_restart_policies(policy, restart, burst):
    keys = unit(policy)
    assert keys["Restart"] == restart
    assert keys.get("StartLimitBurst") == burst


def test_newer_systemd_gets_exponential_backoff():
    keys = unit("always", version=254)
    assert keys["RestartSteps"] == "9" and keys["RestartMaxDelaySec"] == "30s"


def test_launch_error_message_names_step_and_errno():
    text = lifecycle.describe_error("web", {"step": "exec", "errno": 2, "msg": "exec: /x: No such file [errno 2]"})
    assert text == "container web: start failed at step 'exec': exec: /x: No such file [errno 2 ENOENT]"
    assert lifecycle.describe_error("web", {"step": "cgroup", "errno": 13, "msg": "denied"}).endswith(
        "denied [errno 13 EACCES]")


def test_unless_stopped_restarts_like_always():
    assert unit("unless-stopped")["Restart"] == "always"


def test_a_health_check_is_a_timer_bound_to_the_container_unit():
    settings = state.Settings(name="web", digest="sha256:x", restart_policy="no")
    text = systemd.render_unit("web", settings, "/usr/bin/python3", "/var/lib/kernelbox/runtime", 252, health=True)
    assert "Wants=kernelbox-web-health.timer" in text.splitlines()
    service, timer = systemd.render_health_units("web", 5.0, "/usr/bin/python3", "/var/lib/kernelbox/runtime")
    assert "ExecStart=/usr/bin/python3 -I -S /var/lib/kernelbox/runtime/current/kernelbox-supervisor.py health web" \
        in service.splitlines() and "Type=oneshot" in service.splitlines()
    lines = timer.splitlines()
    assert "PartOf=kernelbox-web.service" in lines and "OnUnitActiveSec=5s" in lines and "OnActiveSec=5s" in lines


def test_record_exit_keeps_the_code_or_the_signal_or_a_note():
    runtime = state.Runtime("c")
    runtime.exit_note = "old"
    runtime.record_exit(4, None)
    assert (runtime.status, runtime.exit_code, runtime.exit_signal, runtime.exit_note) == (state.EXITED, 4, None, None)
    assert runtime.exited_at
    runtime.record_exit(None, 9)
    assert (runtime.exit_code, runtime.exit_signal) == (137, "SIGKILL")
    runtime.record_exit(None, None, "systemd reported no exit status (none)")
    assert runtime.exit_code is None and runtime.exit_signal is None
    assert runtime.exit_note == "systemd reported no exit status (none)"


def test_launch_identity_tells_a_new_launch_from_the_last_one():
    runtime = state.Runtime("c")
    assert systemd.launch_identity(None) is None and systemd.launch_identity(runtime) is None
    runtime.pid, runtime.starttime = 42, 1000
    assert systemd.launch_identity(runtime) == (42, 1000)


def test_an_ended_child_is_seen_without_being_reaped():
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    try:
        deadline = time.monotonic() + 60
        while systemd._ended_child(pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert systemd._ended_child(pid) == (4, None)  # still there: WNOWAIT left it to its reaper
    finally:
        assert os.waitpid(pid, 0)[1] >> 8 == 4
    assert systemd._ended_child(pid) is None  # reaped: not our child any more
