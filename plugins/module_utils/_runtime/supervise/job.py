# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a job, a container the task itself runs to completion (``detach: false``).

No supervisor parents a job: the module process becomes a child subreaper,
launches the container through the same code the supervisor's launcher uses
(``engine.launch_here``: its leaf, its limits, ``launch.start``), reads its
stdout and stderr from two pipes, and waits for it:

* output is kept up to ``OUTPUT_LIMIT`` bytes per stream; the rest is read and
  dropped (and counted), so a container that writes without end costs the
  host neither memory nor a blocked pipe;
* at the deadline everything in the container's leaf is killed (cgroup.kill),
  so the wait is bounded whatever the container does;
* the exit is recorded in state.json like the supervisor records one, and the
  output in ``job.json`` beside it (the task that finds the job done reports
  it), and appended to the container's log.

``settings.supervisor`` is ``job``, so a kernelbox supervisor never adopts it,
and while it runs ``state.json`` names this module process as its supervisor:
a run that finds it ``running`` under a process that is gone kills what is
left in its leaf (``stop``) before running it again.
"""

from __future__ import annotations

import os
import select
import signal
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import engine, logs

OUTPUT_LIMIT = 1 << 20      # bytes kept per stream
KIND = "job"


def output_path(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(state.paths(name, layout).lib_dir, "job.json")


def load_output(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> t.Optional[t.Dict[str, t.Any]]:
    return state.read_json(output_path(name, layout))


class _Stream:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = bytearray()
        self.dropped = 0
        self.open = True

    def read(self) -> None:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.open = False
            os.close(self.fd)
            return
        room = OUTPUT_LIMIT - len(self.kept)
        self.kept += chunk[:max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        return bytes(self.kept).decode("utf-8", "replace")


def _collect(streams: t.List[_Stream], pid: int, deadline: float, leaf: t.Optional[str]) -> t.Tuple[int, bool]:
    """Read both pipes until they close and the init exits; kill the leaf at the deadline. (status, timed_out)."""
    timed_out = False
    status: t.Optional[int] = None
    while status is None or any(s.open for s in streams):
        left = deadline - time.monotonic()
        if left <= 0 and not timed_out:
            timed_out = True
            _kill(leaf, pid)
            deadline = time.monotonic() + engine.KILL_WAIT + 5.0  # the pipes close once the processes are gone
        elif left <= 0:
            break  # a process outside the leaf holds a pipe open: give up on it
        readable = [s for s in streams if s.open]
        if readable:
            ready, _w, _x = select.select([s.fd for s in readable], [], [], min(max(left, 0.0), 0.5))
            for stream in readable:
                if stream.fd in ready:
                    stream.read()
        if status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
                _kill(leaf, None)  # the init is gone: nothing in its leaf may outlive it
            elif not readable:
                time.sleep(min(max(left, 0.0), 0.05))
    for stream in streams:
        if stream.open:
            os.close(stream.fd)
            stream.open = False
    if status is None:
        _pid, status = os.waitpid(pid, 0)
    return status, timed_out


def _kill(leaf: t.Optional[str], pid: t.Optional[int]) -> None:
    if leaf and os.path.isdir(leaf):
        engine.cgroup_kill(leaf)
    elif pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class JobBackend:
    """Containers the task runs to completion (the same methods as the supervisor backends)."""

    kind = KIND

    def __init__(self, layout: state.Layout = state.DEFAULT_LAYOUT, timeout: float = 300.0) -> None:
        self.layout = layout
        self.timeout = timeout
        self.output: t.Optional[t.Dict[str, t.Any]] = None

    def start(self, name: str) -> state.Runtime:
        """Run the job to completion; raises LaunchFailed when it does not start (like the other backends)."""
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import lifecycle
        current = state.load(name, self.layout)
        settings = current.settings
        if settings is None or not current.consistent:
            raise lifecycle.LaunchFailed("container %s: its persistent state is missing or incomplete" % name)
        rt = current.runtime or state.Runtime(name)
        me = state.ProcessId.of(os.getpid())
        rt.status, rt.pid, rt.starttime, rt.boot_id = state.STARTING, None, None, state.boot_id()
        rt.exit_code = rt.exit_signal = rt.exit_note = rt.exited_at = rt.error = None
        rt.digest, rt.cgroup = settings.digest, settings.cgroup.get("path")
        rt.supervisor = {"kind": KIND, "pid": os.getpid(), "starttime": me.starttime if me else None}
        rt.restart_count, rt.stop_requested = 0, False
        state.save_runtime(rt, self.layout)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            placement = dict(settings.cgroup) if settings.cgroup.get("path") else None
            launched = engine.launch_here(current.config, placement, (out_w, err_w))
        except Exception as exc:  # recorded as the supervisor records a failed launch
            for fd in (out_r, err_r):
                os.close(fd)
            rt.status, rt.error = state.FAILED, engine.describe_error(exc, "launch")
            state.save_runtime(rt, self.layout)
            raise lifecycle.LaunchFailed(lifecycle.describe_error(name, rt.error), step=rt.error.get("step"),
                                         errno=rt.error.get("errno"))
        finally:
            os.close(out_w)
            os.close(err_w)
        rt.status, rt.pid, rt.starttime = state.RUNNING, launched["pid"], launched["starttime"]
        rt.namespaces, rt.started_at = dict(launched["namespaces"]), state.now_iso()
        state.save_runtime(rt, self.layout)
        streams = [_Stream(out_r), _Stream(err_r)]
        status, timed_out = _collect(streams, launched["pid"], time.monotonic() + self.timeout, rt.cgroup)
        self._record(rt, status, timed_out, streams)
        return rt

    def _record(self, rt: state.Runtime, status: int, timed_out: bool, streams: t.List["_Stream"]) -> None:
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rt.record_exit(os.WEXITSTATUS(status) if signum is None else None, signum,
                       "killed after the %gs timeout (wait_timeout)" % self.timeout if timed_out else None)
        rt.pid, rt.starttime = None, None
        out, err = streams
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)  # as command reports it
        self.output = {"rc": rc, "stdout": out.text(), "stderr": err.text(),
                       "stdout_dropped": out.dropped, "stderr_dropped": err.dropped, "timed_out": timed_out,
                       "start": rt.started_at, "end": rt.exited_at, "digest": rt.digest}
        state.write_json_atomic(output_path(rt.name, self.layout), self.output)
        state.save_runtime(rt, self.layout)
        log = state.paths(rt.name, self.layout).log_file
        logs.append_output(log, bytes(out.kept) + bytes(err.kept))
        logs.append_line(log, "job exited: %s" % ("timed out" if timed_out else "exit code %s" % rt.exit_code))

    def stop(self, name: str, timeout: float) -> t.Optional[state.Runtime]:
        """A job left running by a module that died: kill what is left in its leaf and record it."""
        current = state.load(name, self.layout)
        rt = current.runtime
        if rt is None or rt.status not in state.ACTIVE:
            return rt
        _kill(rt.cgroup, None)
        proc = rt.process()
        if proc is not None:
            proc.signal(signal.SIGKILL)
        rt.status, rt.exited_at, rt.exit_code = state.EXITED, state.now_iso(), None
        rt.exit_note = "the task that ran it ended before it did; killed"
        state.save_runtime(rt, self.layout)
        return rt

    def configure(self, name: str, settings: state.Settings) -> bool:
        return False

    def forget(self, name: str) -> None:
        """Nothing outside the state directories."""

    def log_tail(self, name: str, lines: int) -> t.List[str]:
        return logs.tail(state.paths(name, self.layout).log_file, lines)

    def show(self, name: str) -> t.Dict[str, str]:
        return {}

    def adopt(self) -> None:
        """Nothing adopts a job: a running one belongs to the task that runs it."""

    def supervisor_alive(self, runtime: t.Optional[state.Runtime]) -> bool:
        info = (runtime.supervisor if runtime else None) or {}
        if not info.get("pid") or info.get("starttime") is None:
            return False
        return state.ProcessId(info["pid"], info["starttime"], runtime.boot_id if runtime else "").alive()
