# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: containers as systemd units, where PID 1 is systemd.

One unit per container, ``/etc/systemd/system/kernelbox-NAME.service``::

    Type=forking  PIDFile=/run/kernelbox/containers/NAME/init.pid
    ExecStart=PYTHON -I /var/lib/kernelbox/runtime/current/kernelbox-supervisor.py systemd-start NAME
    ExecStopPost=... systemd-stopped NAME       records the exit code and time in state.json
    KillMode=mixed KillSignal=<stop_signal> TimeoutStopSec=<stop_timeout>
    Restart=no|on-failure|always  RestartSec=100ms  (+ StartLimitBurst=N+1 for on-failure:N)
    Delegate=yes                                the unit's cgroup subtree is ours
    StandardOutput=journal StandardError=journal

``systemd-start`` is a short-lived launcher: it becomes a child subreaper,
moves itself into ``<unit cgroup>/supervisor``, makes ``<unit cgroup>/container``
with the limits, launches the container there, writes the PID file and
exits.  The init is then re-parented to systemd, which is its supervisor:
it collects the exit status, applies Restart=, stops the unit (stop signal to
the init, SIGKILL to the whole cgroup after TimeoutStopSec, exactly the
kernelbox supervisor's semantics), starts it at boot when enabled, and keeps
stdout and stderr in the journal.  No kernelbox process stays per container.

Differences from the kernelbox supervisor: logs are in the journal (the
journal's own size limits apply; ``log.max_size`` does not); systemd older
than 254 restarts after a fixed 100 ms instead of an exponential back-off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import restart
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

SYSTEMD_RUN_DIR = "/run/systemd/system"
UNIT_DIR = "/etc/systemd/system"


def available() -> bool:
    """sd_booted(): PID 1 is systemd."""
    return os.path.isdir(SYSTEMD_RUN_DIR)


def unit_name(name: str) -> str:
    return "kernelbox-%s.service" % name


def unit_path(name: str) -> str:
    return os.path.join(UNIT_DIR, unit_name(name))


def health_unit_names(name: str) -> t.Tuple[str, str]:
    """The health check's service and timer (see health.py), beside the container's unit."""
    return "kernelbox-%s-health.service" % name, "kernelbox-%s-health.timer" % name


def pid_file(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(state.paths(name, layout).run_dir, "init.pid")


def systemd_version() -> int:
    try:
        out = _systemctl(["--version"], check=False)
        return int(out.split()[1])
    except (IndexError, ValueError, KernelboxError):
        return 0


def _systemctl(args: t.List[str], check: bool = True) -> str:
    try:
        proc = subprocess.run(["systemctl"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              check=False, timeout=300)
    except FileNotFoundError:
        raise KernelboxError("systemctl is not installed, but PID 1 is systemd")
    if check and proc.returncode != 0:
        raise KernelboxError("systemctl %s failed: %s" % (" ".join(args), (proc.stderr or proc.stdout).strip()))
    return proc.stdout


def render_health_units(name: str, interval: float, python: str, code_root: str) -> t.Tuple[str, str]:
    """The health check's service and timer texts (pure): the timer runs the check every ``interval``
    while the container's unit is active (it is wanted by it, and part of it, so it stops with it)."""
    entry = os.path.join(code_root, "current", "kernelbox-supervisor.py")
    service = "\n".join(["# Written by kernelbox.containers; changes are overwritten.", "[Unit]",
                         "Description=health check of kernelbox container %s" % name,
                         "After=%s" % unit_name(name), "", "[Service]", "Type=oneshot",
                         "ExecStart=%s -I -S %s health %s" % (python, entry, name), ""])
    timer = "\n".join(["# Written by kernelbox.containers; changes are overwritten.", "[Unit]",
                       "Description=health checks of kernelbox container %s" % name, "PartOf=%s" % unit_name(name),
                       "", "[Timer]", "OnActiveSec=%gs" % interval, "OnUnitActiveSec=%gs" % interval,
                       "AccuracySec=100ms", ""])
    return service, timer


def render_unit(name: str, settings: state.Settings, python: str, code_root: str, version: int,
                health: bool = False) -> str:
    """The unit file text for a container (pure); ``health`` pulls in its health check timer."""
    policy = restart.parse(settings.restart_policy)
    entry = os.path.join(code_root, "current", "kernelbox-supervisor.py")
    unit = ["# Written by kernelbox.containers (container_process); changes are overwritten.",
            "[Unit]", "Description=kernelbox container %s" % name, "After=network.target"]
    if health:
        unit.append("Wants=%s" % health_unit_names(name)[1])
    restart_setting = "always" if policy.name == "unless-stopped" else policy.name
    if policy.name == "on-failure" and policy.max_retries is not None:
        # systemd counts the automatic restarts against the burst (NRestarts ends equal to it): N restarts.
        if policy.max_retries == 0:
            restart_setting = "no"
        unit += ["StartLimitIntervalSec=infinity", "StartLimitBurst=%d" % max(policy.max_retries, 1)]
    else:
        unit += ["StartLimitIntervalSec=0"]
    unit += ["", "[Service]", "Type=forking", "PIDFile=%s" % pid_file(name),
             "ExecStart=%s -I -S %s systemd-start %s" % (python, entry, name),
             "ExecStopPost=%s -I -S %s systemd-stopped %s" % (python, entry, name),
             "KillMode=mixed", "KillSignal=%s" % settings.stop_signal,
             "TimeoutStopSec=%gs" % max(settings.stop_timeout, 0.001),
             "Restart=%s" % restart_setting, "RestartSec=%gms" % (restart.BASE_DELAY * 1000)]
    if version >= 254:  # exponential back-off, as the kernelbox supervisor does
        unit += ["RestartSteps=9", "RestartMaxDelaySec=%gs" % restart.MAX_DELAY]
    unit += ["Delegate=yes", "StandardInput=null", "StandardOutput=journal", "StandardError=journal",
             "SyslogIdentifier=kernelbox-%s" % name, "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(unit)


class SystemdBackend:
    """Containers supervised by systemd, one unit each."""

    kind = "systemd"

    def __init__(self, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
        self.layout = layout

    def _require(self) -> None:
        if not available():
            raise KernelboxError("supervisor=systemd: PID 1 is not systemd on this host (%s is missing); use "
                                 "supervisor=kernelbox (or auto)" % SYSTEMD_RUN_DIR)

    def configure(self, name: str, settings: state.Settings) -> bool:
        """Write the unit (and the code copy it runs); enable or disable it.  True if the unit changed."""
        self._require()
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
        materialise.materialise(self.layout)
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import health
        check = health.definition(state.load(name, self.layout).config)
        code_root = os.path.join(self.layout.lib_root, "runtime")
        files = {unit_path(name): render_unit(name, settings, sys.executable, code_root, systemd_version(),
                                              health=check is not None)}
        for unit, text in zip(health_unit_names(name), render_health_units(name, float(check["interval"]),
                                                                           sys.executable, code_root)
                              if check else ("", "")):
            files[os.path.join(UNIT_DIR, unit)] = text  # an empty text: the file goes
        changed = False
        for path, text in files.items():
            changed = _write_unit(path, text) or changed
        if changed:
            _systemctl(["daemon-reload"])
        _systemctl(["enable" if settings.enabled else "disable", "--quiet", unit_name(name)])
        return changed

    def start(self, name: str) -> state.Runtime:
        self._require()
        before = launch_identity(state.load(name, self.layout).runtime)
        _systemctl(["reset-failed", unit_name(name)], check=False)
        try:
            _systemctl(["start", unit_name(name)])
        except KernelboxError as exc:
            runtime = state.load(name, self.layout).runtime
            error = (runtime.error if runtime else None) or {}
            from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import lifecycle
            if error:
                raise lifecycle.LaunchFailed(lifecycle.describe_error(name, error), step=error.get("step"),
                                             errno=error.get("errno"))
            if launch_identity(runtime) not in (None, before):
                # The launcher started the init, which ended before systemd read the PID file: systemd calls
                # that a failed start ("protocol"), but the container did start and its restart policy applies,
                # as with the kernelbox supervisor.
                return runtime
            raise lifecycle.LaunchFailed("container %s: %s" % (name, exc.msg), step="systemd", errno=None)
        return state.load(name, self.layout).runtime or state.Runtime(name)

    def stop(self, name: str, timeout: float) -> t.Optional[state.Runtime]:
        self._require()
        _systemctl(["stop", unit_name(name)])
        return state.load(name, self.layout).runtime

    def reload(self, name: str) -> None:
        settings = state.load(name, self.layout).settings
        if settings is not None:
            self.configure(name, settings)

    def adopt(self) -> None:
        """Nothing to adopt: systemd is PID 1 and parents every unit's processes."""

    def supervisor_alive(self, runtime: t.Optional[state.Runtime]) -> bool:
        return available()

    def shared_objects(self) -> t.List[str]:
        """What stays for all containers: the code copy the units run from."""
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
        runtime = materialise.runtime_root(self.layout)
        return ["the units' code copy in %s" % runtime] if os.path.isdir(runtime) else []

    def forget(self, name: str) -> None:
        """After a stop: disable and delete the unit (and its health check's)."""
        if not os.path.exists(unit_path(name)):
            return
        _systemctl(["disable", "--quiet", unit_name(name)], check=False)
        for unit in health_unit_names(name):
            _write_unit(os.path.join(UNIT_DIR, unit), "")
        os.unlink(unit_path(name))
        _systemctl(["daemon-reload"])
        _systemctl(["reset-failed", unit_name(name)], check=False)

    def show(self, name: str) -> t.Dict[str, str]:
        """systemd's view of the unit (ActiveState, SubState, NRestarts, ExecMainStatus, Result...)."""
        if not available():
            return {}
        out = _systemctl(["show", unit_name(name), "-p", "ActiveState,SubState,Result,NRestarts,MainPID,"
                                                         "ExecMainStatus,ExecMainCode"], check=False)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def log_tail(self, name: str, lines: int) -> t.List[str]:
        try:
            proc = subprocess.run(["journalctl", "-u", unit_name(name), "-n", str(lines), "-o", "cat", "--no-pager"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
                                  timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return []
        return proc.stdout.splitlines()[-lines:] if lines > 0 else []


def _write_unit(path: str, text: str) -> bool:
    """Write (or, for an empty text, remove) a unit file; True if that changed it."""
    try:
        with open(path, encoding="utf-8") as handle:
            current: t.Optional[str] = handle.read()
    except FileNotFoundError:
        current = None
    if not text:
        if current is None:
            return False
        os.unlink(path)
        return True
    if current == text:
        return False
    state.write_bytes_atomic(path, text.encode(), mode=0o644)
    return True


# --- the unit's own processes (run from the code copy by systemd) ------------------------

def _own_cgroup() -> str:
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    hierarchy = cgroup.find_hierarchy()
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs
        relative = procfs.cgroup2_path_of(handle.read()) or "/"
    return os.path.join(hierarchy.mount, relative.lstrip("/"))


def unit_start(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> int:
    """ExecStart: launch the container into <unit cgroup>/container, write the PID file, exit."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import engine
    current = state.load(name, layout)
    runtime = current.runtime or state.Runtime(name)
    if current.settings is None or not current.consistent:
        sys.stderr.write("kernelbox: the persistent state of %s is missing or incomplete\n" % name)
        return 1
    unit_dir = _own_cgroup()
    try:
        # cgroup v2 allows processes only in leaves once controllers are handed down: we step into
        # a leaf of our own, so the unit's group can pass controllers to the container's leaf.
        hierarchy = cgroup.find_hierarchy()
        unit_group = engine.group_of(unit_dir)
        own = cgroup.Cgroup(hierarchy, unit_group.parts + ("supervisor",))
        cgroup.make_group(own)
        cgroup.move_pid(own, 0)
        placement = {"path": os.path.join(unit_dir, "container"), "owned": True,
                     "parent": "/" + unit_group.relpath, "name": "container"}
        launched = engine.launch_here(current.config, placement, 1)
    except Exception as exc:
        error = engine.describe_error(exc, "launch")
        runtime.status, runtime.error = state.FAILED, error
        state.save_runtime(runtime, layout)
        sys.stderr.write("kernelbox: start failed at step %s: %s\n" % (error["step"], error["msg"]))
        return 1
    runtime.status, runtime.error = state.RUNNING, None
    try:
        state.note_created(name, launched.get("root", ""), launched.get("created") or [], layout)
    except OSError:
        pass  # only the clean-up at removal needs it
    runtime.pid, runtime.starttime, runtime.boot_id = launched["pid"], launched["starttime"], state.boot_id()
    runtime.namespaces = dict(launched["namespaces"])
    runtime.started_at, runtime.exited_at = state.now_iso(), None
    runtime.exit_code = runtime.exit_signal = runtime.exit_note = None
    runtime.stop_requested = False
    runtime.cgroup = placement["path"]
    runtime.digest = current.settings.digest
    runtime.supervisor = {"kind": "systemd", "unit": unit_name(name), "pid": 1}
    state.save_runtime(runtime, layout)
    state.write_bytes_atomic(pid_file(name, layout), b"%d\n" % launched["pid"], mode=0o644)
    # An init that ended already (a crash at start) is gone before systemd reads the PID file, and systemd then
    # knows no exit status for ExecStopPost: record it now, while the init is our (subreaper's) zombie.  Not
    # reaped (WNOWAIT): systemd reaps it once we exit.
    ended = _ended_child(launched["pid"])
    if ended is not None:
        runtime.record_exit(*ended)
        state.save_runtime(runtime, layout)
    return 0


def launch_identity(runtime: t.Optional[state.Runtime]) -> t.Optional[t.Tuple[int, int]]:
    """(pid, starttime) of the runtime's last launch, or None if it never launched."""
    if runtime is None or not runtime.pid:
        return None
    return int(runtime.pid), int(runtime.starttime or 0)


def _ended_child(pid: int) -> t.Optional[t.Tuple[t.Optional[int], t.Optional[int]]]:
    """How our child ``pid`` ended, if it has (exit code, signal), without reaping it; None if it runs."""
    try:
        ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None  # not (yet) our child: it runs, or its exit goes to systemd
    if ended is None or ended.si_pid == 0:
        return None
    if ended.si_code == os.CLD_EXITED:
        return ended.si_status, None
    return None, ended.si_status


def unit_stopped(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> int:
    """ExecStopPost: record how the init ended, from what systemd passes in the environment."""
    current = state.load(name, layout)
    runtime = current.runtime
    if runtime is not None and runtime.status in (state.RUNNING, state.STOPPING):  # EXITED: the launcher saw it
        how = os.environ.get("EXIT_CODE", "")       # exited | killed | dumped
        status = os.environ.get("EXIT_STATUS", "")  # a number, or a signal name such as TERM
        if how == "exited" and status.isdigit():
            runtime.record_exit(int(status), None)
        elif how in ("killed", "dumped") and status:
            runtime.record_exit(None, state.signal_number(status))
        else:
            runtime.record_exit(None, None, "systemd reported no exit status (%s)" % (how or "none"))
        state.save_runtime(runtime, layout)
    try:
        os.unlink(pid_file(name, layout))
    except FileNotFoundError:
        pass
    return 0
