# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the kernelbox supervisor, one small daemon per host.

It is the child subreaper that parents every container's init, so it alone
collects their exit status; it applies the restart policy, stops containers
(stop signal, then SIGKILL through the cgroup at the deadline), caps the log
files, and records everything in each container's state.json.  Modules talk
to it over a unix socket (one JSON request, one JSON reply), and start it on
demand; it exits as soon as it supervises nothing.

It runs from a copy of the runtime code under /var/lib/kernelbox/runtime
(see materialise.py), never from the module's AnsiballZ payload, which is
deleted when the module exits.  Each container's stdout and stderr are a
FIFO the supervisor drains into its log file (logs.py): one chunk per
container per turn of the loop, so a flood starves no one.  Failure modes
(README "Lifecycle and supervision"): if it dies, the containers keep
running (their FIFO holds what they write, then blocks them; it never
breaks) and are re-parented to init; the next module run starts a new
supervisor, which adopts them by PID and start time, watches them through
pidfds and opens their FIFOs again, but an exit in between, or of an
adopted container, has no exit code (``exit_note`` says why).  An upgrade
re-executes the daemon in place: same PID, still the parent and subreaper,
so nothing is lost.
"""

from __future__ import annotations

import heapq
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs, restart
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import engine
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

PROTOCOL = 1
ENTRY_SCRIPT = "kernelbox-supervisor.py"
STARTUP_GRACE = 10.0      # an unused new daemon waits this long for its first request
ROTATE_EVERY = 1.0        # log size check interval
KILL_RETRY = 5.0          # SIGKILL again if the init has not exited this long after the first
READ_TIMEOUT = 5.0        # a client must send its request within this time


def _health_definition(config: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
    """The annotation health.py reads, parsed here without importing it (nor the exec code behind it)."""
    raw = ((config or {}).get("annotations") or {}).get("io.kernelbox.healthcheck")
    try:
        check = json.loads(raw) if raw else None
    except ValueError:
        return None
    return check if isinstance(check, dict) and check.get("interval") else None


def socket_path(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.run_root, "supervisor.sock")


def lock_path(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.run_root, "supervisor.lock")


def diag_path(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.run_root, "supervisor.log")


def _fault(point: str, requested: t.Optional[str]) -> None:
    """Test-only fault injection: SIGKILL ourselves at a named point (see README, Testing)."""
    if requested and requested == point:
        os.kill(os.getpid(), signal.SIGKILL)


class _Entry:
    """One container this supervisor looks after."""

    def __init__(self, settings: state.Settings, runtime: state.Runtime) -> None:
        self.name = runtime.name
        self.runtime = runtime
        self.settings = settings
        self.policy = restart.parse(settings.restart_policy)
        self.pidfd: t.Optional[int] = None           # adopted inits we are not the parent of
        self.streak = 0                               # consecutive short runs (back-off)
        self.started_mono: t.Optional[float] = None
        self.timer: t.Optional[t.Tuple[str, float, int]] = None
        self.waiters: t.List[socket.socket] = []      # stop requests waiting for the exit
        self.start_after_exit: t.List[t.Tuple[socket.socket, t.Optional[str]]] = []
        self.sink: t.Optional[logs.Sink] = None        # the container's output pipe, drained into its log
        self.health_interval: t.Optional[float] = None  # seconds between health checks, if it has one
        self.health_pid: t.Optional[int] = None         # the running health check process

    def set_settings(self, settings: state.Settings) -> None:
        self.settings = settings
        self.policy = restart.parse(settings.restart_policy)
        if self.sink is not None:
            self.sink.set_max_size(settings.log_max_size)


class Supervisor:
    def __init__(self, layout: state.Layout, code_dir: str, listener: socket.socket,
                 lock: state.NameLock) -> None:
        self.layout = layout
        self.code_dir = code_dir
        self.listener = listener
        self.lock = lock
        self.entries: t.Dict[str, _Entry] = {}
        self.selector = selectors.DefaultSelector()
        self.timers: t.List[t.Tuple[float, int, str, str]] = []
        self._seq = 0
        me = state.ProcessId.of(os.getpid())
        self.identity = {"kind": "kernelbox", "pid": os.getpid(), "starttime": me.starttime if me else None,
                         "code": code_dir}
        self.born = time.monotonic()
        self.served = False
        self.terminate = False
        self.upgrade_to: t.Optional[str] = None
        self.next_rotate = 0.0

    # --- plumbing ----------------------------------------------------------------

    def save(self, entry: _Entry) -> None:
        state.save_runtime(entry.runtime, self.layout)

    def note(self, entry: _Entry, text: str) -> None:
        try:
            if entry.sink is not None:
                entry.sink.note(text)
            else:
                logs.append_line(state.paths(entry.name, self.layout).log_file, text)
        except OSError:
            pass

    # --- logs --------------------------------------------------------------------

    def open_sink(self, entry: _Entry, fresh: bool) -> t.Optional[str]:
        """Attach to the container's FIFO (a new one when ``fresh``); its path, or None if there is none."""
        self.close_sink(entry)
        where = state.paths(entry.name, self.layout)
        fifo = logs.fifo_path(where.run_dir)
        try:
            if fresh:
                logs.make_fifo(fifo)
            entry.sink = logs.Sink(where.log_file, fifo, entry.settings.log_max_size)
        except OSError:
            return None  # adopted from an older supervisor: the container holds its log file itself
        self.selector.register(entry.sink, selectors.EVENT_READ, ("log", entry))
        return fifo

    def close_sink(self, entry: _Entry, drain: bool = False) -> None:
        sink, entry.sink = entry.sink, None
        if sink is None:
            return
        self.selector.unregister(sink)
        try:
            if drain:
                sink.drain()
        except OSError:
            pass
        sink.close()

    def _pump(self, entry: _Entry) -> None:
        sink = entry.sink
        if sink is None:
            return
        try:
            sink.pump()
        except OSError:  # the disk is full, say: drop this chunk, keep serving
            pass
        if sink.ended:  # no writer left: select would report it readable forever
            self.close_sink(entry)

    def schedule(self, entry: _Entry, kind: str, when: float) -> None:
        self._seq += 1
        entry.timer = (kind, when, self._seq)
        heapq.heappush(self.timers, (when, self._seq, kind, entry.name))

    def idle(self) -> bool:
        return not self.entries

    def should_exit(self) -> bool:
        if self.terminate or not self.idle():
            return self.terminate
        return self.served or time.monotonic() - self.born > STARTUP_GRACE

    def _timeout(self) -> float:
        now = time.monotonic()
        candidates = [STARTUP_GRACE]
        if self.timers:
            candidates.append(self.timers[0][0] - now)
        if self.entries:
            candidates.append(self.next_rotate - now)
        return max(0.0, min(candidates))

    # --- the loop ----------------------------------------------------------------

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.selector.register(wake_r, selectors.EVENT_READ, ("wake", None))
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.adopt_all()
        while not self.should_exit():
            for key, _mask in self.selector.select(self._timeout()):
                kind, entry = key.data
                if kind == "wake":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "accept":
                    self._accept()
                elif kind == "log":
                    self._pump(entry)
                elif kind == "pidfd":
                    self._adopted_exit(entry)
            self.reap()
            self._run_timers()
            if self.upgrade_to:
                self._exec_upgrade()

    def _on_signal(self, signum: int, _frame: t.Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            # Leave the containers running: the next supervisor adopts them.
            self.terminate = True

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _when, seq, kind, name = heapq.heappop(self.timers)
            entry = self.entries.get(name)
            if entry is None or entry.timer is None or entry.timer[2] != seq:
                continue  # cancelled or superseded
            entry.timer = None
            if kind == "restart":
                self._restart(entry)
            elif kind == "kill":
                self._kill(entry)
            elif kind == "health":
                self._health(entry)
        if self.entries and now >= self.next_rotate:
            self.next_rotate = now + ROTATE_EVERY
            for entry in list(self.entries.values()):
                if entry.sink is not None:
                    continue  # ours: capped as it is written
                try:
                    logs.rotate_legacy(state.paths(entry.name, self.layout).log_file, entry.settings.log_max_size)
                except OSError:
                    pass

    # --- processes ----------------------------------------------------------------

    def reap(self) -> None:
        """Collect every exited child: container inits, and orphans re-parented to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self._health_done(pid):
                continue
            for entry in list(self.entries.values()):
                rt = entry.runtime
                if rt.pid == pid and rt.status in (state.RUNNING, state.STOPPING) and entry.pidfd is None:
                    if os.WIFSIGNALED(status):
                        self.on_exit(entry, None, os.WTERMSIG(status))
                    else:
                        self.on_exit(entry, os.WEXITSTATUS(status), None)
                    break

    def _adopted_exit(self, entry: _Entry) -> None:
        self.on_exit(entry, None, None, note="the exit status went to init: the supervisor that started this "
                                             "container had died, and its successor is not the parent")

    def on_exit(self, entry: _Entry, code: t.Optional[int], sig: t.Optional[int],
                note: t.Optional[str] = None, launch_error: t.Optional[t.Dict[str, t.Any]] = None) -> None:
        rt = entry.runtime
        if entry.pidfd is not None:
            self.selector.unregister(entry.pidfd)
            os.close(entry.pidfd)
            entry.pidfd = None
        entry.timer = None
        ran_for = time.monotonic() - entry.started_mono if entry.started_mono is not None else None
        entry.started_mono = None
        self.close_sink(entry, drain=True)
        if launch_error is None:
            rt.record_exit(code, sig, note)
            self._kill_leftovers(entry)
            how = ("killed by %s" % rt.exit_signal if sig is not None
                   else "exit code %s" % code if code is not None else "unknown exit status (%s)" % note)
            self.note(entry, "container exited: %s" % how)
        else:
            rt.status = state.FAILED
            rt.error = launch_error
            self.note(entry, "launch failed at step %s: %s" % (launch_error.get("step"), launch_error.get("msg")))
        rt.stop_deadline = None
        if restart.should_restart(entry.policy, rt.exit_code if launch_error is None else None,
                                  rt.exit_signal is not None, rt.restart_count, rt.stop_requested):
            entry.streak = restart.next_streak(entry.streak, ran_for)
            delay = restart.backoff(entry.streak - 1)
            rt.status = state.RESTARTING
            rt.next_restart_at = time.monotonic() + delay
            self.schedule(entry, "restart", rt.next_restart_at)
            self.note(entry, "restart %d (policy %s) in %.1fs" % (rt.restart_count + 1, entry.policy, delay))
        self.save(entry)
        if rt.status not in state.ACTIVE:
            self.entries.pop(entry.name, None)
        waiters, entry.waiters = entry.waiters, []
        pending, entry.start_after_exit = entry.start_after_exit, []
        for conn, fault in pending:
            self._start(conn, entry.name, fault)
        self._answer(waiters, {"ok": True, "runtime": rt.to_json()})

    def _kill_leftovers(self, entry: _Entry) -> None:
        """The init is gone: the container is over, so nothing may stay in its own leaf."""
        path = entry.runtime.cgroup
        if path and entry.settings.cgroup.get("owned") and os.path.isdir(path):
            try:
                engine.cgroup_kill(path)
            except OSError:
                pass

    def _kill(self, entry: _Entry) -> None:
        rt = entry.runtime
        if rt.status != state.STOPPING:
            return
        path = rt.cgroup
        self.note(entry, "still running %gs after %s: sending SIGKILL"
                  % (entry.settings.stop_timeout, entry.settings.stop_signal))
        if path and entry.settings.cgroup.get("owned") and os.path.isdir(path):
            engine.cgroup_kill(path)
        else:
            proc = rt.process()
            if proc is not None:
                proc.signal(signal.SIGKILL)
        self.schedule(entry, "kill", time.monotonic() + KILL_RETRY)

    def launch(self, entry: _Entry, fault: t.Optional[str] = None) -> t.Optional[t.Dict[str, t.Any]]:
        """Start the container from its state on disk; the error as a dict, or None."""
        rt = entry.runtime
        current = state.load(entry.name, self.layout)
        if current.settings is None or not current.consistent:
            return {"step": "state", "errno": None,
                    "msg": "the persistent state of %s is missing or incomplete" % entry.name}
        if current.settings.supervisor != "kernelbox":
            return {"step": "state", "errno": None,
                    "msg": "%s is supervised by %s, not by kernelbox" % (entry.name, current.settings.supervisor)}
        entry.set_settings(current.settings)
        settings = entry.settings
        rt.status = state.STARTING
        rt.pid = rt.starttime = None
        rt.exit_code = rt.exit_signal = rt.exit_note = rt.exited_at = rt.error = None
        rt.stop_deadline = rt.next_restart_at = None
        rt.digest = settings.digest
        rt.cgroup = settings.cgroup.get("path")
        rt.supervisor = dict(self.identity)
        rt.boot_id = state.boot_id()
        self.entries[entry.name] = entry
        self.save(entry)
        _fault("supervisor-starting", fault)
        placement = dict(settings.cgroup) if settings.cgroup.get("path") else None
        fifo = self.open_sink(entry, fresh=True)
        if fifo is None:
            return {"step": "log", "errno": None, "msg": "cannot make the log pipe in %s"
                    % state.paths(entry.name, self.layout).run_dir}
        launched, error = engine.start(current.config, placement, fifo, fault=fault)
        if error is not None:
            self.close_sink(entry)
            return error
        _fault("supervisor-launched", fault)
        try:
            state.note_created(entry.name, launched.get("root", ""), launched.get("created") or [], self.layout)
        except OSError:
            pass  # only the clean-up at removal needs it
        rt.pid = launched["pid"]
        rt.starttime = launched["starttime"]
        rt.namespaces = dict(launched.get("namespaces") or {})
        rt.started_at = state.now_iso()
        rt.status = state.RUNNING
        entry.started_mono = time.monotonic()
        self.save(entry)
        self._schedule_health(entry, current.config)
        return None

    def _restart(self, entry: _Entry) -> None:
        rt = entry.runtime
        if rt.status != state.RESTARTING or rt.stop_requested:
            return
        rt.restart_count += 1
        error = self.launch(entry)
        if error is not None:
            self.on_exit(entry, None, None, launch_error=error)

    # --- health checks (see health.py) -------------------------------------------------

    def _schedule_health(self, entry: _Entry, config: t.Optional[t.Mapping[str, t.Any]]) -> None:
        check = _health_definition(config)
        entry.health_interval = float(check["interval"]) if check else None
        if entry.health_interval and entry.timer is None:
            self.schedule(entry, "health", time.monotonic() + entry.health_interval)

    def _health(self, entry: _Entry) -> None:
        """Start one check in a child of its own (the supervisor never maps the exec code); one at a time."""
        if entry.runtime.status != state.RUNNING or not entry.health_interval:
            return
        if entry.health_pid is None:
            argv = [sys.executable, "-I", "-S", os.path.join(self.code_dir, ENTRY_SCRIPT), "health", entry.name]
            try:
                entry.health_pid = os.posix_spawn(sys.executable, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                                  file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                                                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                                                                (os.POSIX_SPAWN_DUP2, 1, 2)])
            except OSError as exc:
                self.note(entry, "health check could not start: %s" % exc)
        self.schedule(entry, "health", time.monotonic() + entry.health_interval)

    def _health_done(self, pid: int) -> bool:
        for entry in self.entries.values():
            if entry.health_pid == pid:
                entry.health_pid = None
                return True
        return False

    # --- adoption --------------------------------------------------------------------

    def adopt_all(self) -> None:
        """Take over the containers a previous supervisor (or our own earlier self) looked after."""
        me = os.getpid()
        for name in state.list_names(self.layout):
            try:
                current = state.load(name, self.layout)
            except (KernelboxError, OSError):
                continue
            rt, settings = current.runtime, current.settings
            if rt is None or settings is None or rt.status not in state.ACTIVE or settings.supervisor != "kernelbox":
                continue
            entry = _Entry(settings, rt)
            self.entries[name] = entry
            if rt.status == state.RESTARTING:
                self.schedule(entry, "restart", rt.next_restart_at or time.monotonic())
                continue
            if rt.status in (state.RUNNING, state.STOPPING):
                self.open_sink(entry, fresh=False)  # what it wrote meanwhile waits in the pipe
            stat = state.read_stat(rt.pid) if rt.pid else None
            if stat is not None and stat.starttime == rt.starttime and stat.ppid == me:
                pass  # our child (we re-executed for an upgrade): waitpid() will tell us its exit
            elif rt.status == state.STARTING:
                self._kill_leftovers(entry)
                self.on_exit(entry, None, None, note="the supervisor died while launching it")
                continue
            else:
                proc = rt.process()
                fd = proc.pidfd() if proc is not None else None
                if fd is None:
                    self.on_exit(entry, None, None, note="it exited while no supervisor was running, so its "
                                                         "exit status went to init")
                    continue
                entry.pidfd = fd
                self.selector.register(fd, selectors.EVENT_READ, ("pidfd", entry))
            rt.supervisor = dict(self.identity)
            self.save(entry)
            if rt.status == state.STOPPING:
                self.schedule(entry, "kill", rt.stop_deadline or time.monotonic())
            elif rt.status == state.RUNNING:
                self._schedule_health(entry, current.config)
        self.reap()

    # --- requests --------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(True)
            conn.settimeout(READ_TIMEOUT)
            try:
                self._serve(conn)
            except (OSError, ValueError) as exc:
                self._answer([conn], {"ok": False, "error": {"step": "request", "errno": None, "msg": str(exc)}})

    def _serve(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (0, os.geteuid()):
            raise ValueError("permission denied for uid %d" % uid)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        request = json.loads(data.decode("utf-8"))
        op = request.get("op")
        if self.terminate and op not in ("hello",):
            # Asked to exit (SIGTERM): take no new work; the client retries with the next supervisor.
            self._answer([conn], {"ok": False, "retry": True,
                                  "error": {"step": "supervisor", "errno": None, "msg": "supervisor exiting"}})
            return
        name = request.get("name")
        if name is not None:
            validate.container_name(name)  # a bad name fails here, before anything
        if op == "hello":
            self._answer([conn], self._hello())
        elif op == "start":
            self.served = True  # from now on, idle means done: exit
            self._start(conn, name, request.get("fault"))
        elif op == "stop":
            self.served = True
            self._stop(conn, name, request.get("stop_timeout"))
        elif op == "reload":
            entry = self.entries.get(name)
            if entry is not None:
                settings = state.load(name, self.layout).settings
                if settings is not None:
                    entry.set_settings(settings)
            self._answer([conn], {"ok": True})
        elif op == "upgrade":
            code = request.get("code", "")
            if not os.path.isfile(os.path.join(code, ENTRY_SCRIPT)):
                raise ValueError("upgrade: %s has no %s" % (code, ENTRY_SCRIPT))
            self.upgrade_to = code
            self._answer([conn], {"ok": True})
        else:
            raise ValueError("unknown request %r" % op)

    def _hello(self) -> t.Dict[str, t.Any]:
        return {"ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "identity": self.identity,
                "code": self.code_dir, "containers": {n: e.runtime.status for n, e in self.entries.items()}}

    def _answer(self, conns: t.Iterable[socket.socket], reply: t.Dict[str, t.Any]) -> None:
        reply = dict(reply)
        reply["exiting"] = self.idle() and self.served and not self.upgrade_to
        data = (json.dumps(reply) + "\n").encode()
        for conn in conns:
            try:
                conn.sendall(data)
            except OSError:
                pass  # the client went away (a killed module): the state files tell the next one
            finally:
                conn.close()

    def _start(self, conn: socket.socket, name: str, fault: t.Optional[str]) -> None:
        self.reap()  # an init that just exited is collected before we decide
        entry = self.entries.get(name)
        if entry is not None and entry.pidfd is not None and entry.runtime.process() is None:
            self._adopted_exit(entry)
            entry = self.entries.get(name)
        if entry is not None:
            rt = entry.runtime
            if rt.status == state.STOPPING:
                entry.start_after_exit.append((conn, fault))  # start again right after the exit
                return
            if rt.status in (state.RUNNING, state.STARTING):
                self._answer([conn], {"ok": True, "runtime": rt.to_json()})
                return
        else:
            current = state.load(name, self.layout)
            if current.settings is None:
                error = {"step": "state", "errno": None, "msg": "no container named %s" % name}
                self._answer([conn], {"ok": False, "error": error})
                return
            entry = _Entry(current.settings, current.runtime or state.Runtime(name))
        rt = entry.runtime
        rt.restart_count = 0
        rt.stop_requested = False
        entry.streak = 0
        entry.timer = None
        error = self.launch(entry, fault)
        if error is not None:
            rt.status = state.FAILED
            rt.error = error
            self.save(entry)
            self.entries.pop(name, None)
            self.note(entry, "launch failed at step %s: %s" % (error.get("step"), error.get("msg")))
            self._answer([conn], {"ok": False, "error": error, "runtime": rt.to_json()})
            return
        self._answer([conn], {"ok": True, "runtime": rt.to_json()})

    def _stop(self, conn: socket.socket, name: str, timeout: t.Optional[float]) -> None:
        entry = self.entries.get(name)
        if entry is None:
            current = state.load(name, self.layout)
            self._answer([conn], {"ok": True, "runtime": current.runtime.to_json() if current.runtime else None})
            return
        rt = entry.runtime
        rt.stop_requested = True
        if rt.status == state.RESTARTING:
            entry.timer = None
            rt.status = state.EXITED
            rt.next_restart_at = None
            self.save(entry)
            self.entries.pop(name, None)
            self._answer([conn], {"ok": True, "runtime": rt.to_json()})
            return
        if rt.status == state.RUNNING:
            wait = entry.settings.stop_timeout if timeout is None else float(timeout)
            proc = rt.process()
            if proc is not None:
                proc.signal(state.signal_number(entry.settings.stop_signal))
            rt.status = state.STOPPING
            rt.stop_deadline = time.monotonic() + wait
            self.schedule(entry, "kill", rt.stop_deadline)
            self.save(entry)
        entry.waiters.append(conn)

    # --- upgrade ----------------------------------------------------------------------

    def _exec_upgrade(self) -> None:
        """Re-execute from new code: same PID, so we stay the parent and the subreaper of every init."""
        code, self.upgrade_to = self.upgrade_to, None
        for entry in self.entries.values():
            self._answer(entry.waiters, {"ok": False, "retry": True,
                                         "error": {"step": "upgrade", "errno": None, "msg": "supervisor upgraded"}})
            entry.waiters = []
            self.save(entry)
        os.set_inheritable(self.listener.fileno(), True)
        os.set_inheritable(self.lock.fd, True)
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [sys.executable, "-I", "-S", os.path.join(code, ENTRY_SCRIPT), "serve",
                "--listen-fd", str(self.listener.fileno()), "--lock-fd", str(self.lock.fd)]
        os.execv(sys.executable, argv)

    def close(self, clean: bool = True) -> None:
        """Exit: nothing left to supervise, SIGTERM, or a crash: remove the socket, then the lock.

        The diagnostics file (stderr) goes only on a clean exit: after a crash it keeps the traceback.
        """
        try:
            os.unlink(socket_path(self.layout))
        except FileNotFoundError:
            pass
        self.listener.close()
        for entry in self.entries.values():
            self._answer(entry.waiters, {"ok": False, "retry": True,
                                         "error": {"step": "supervisor", "errno": None, "msg": "supervisor exiting"}})
        if clean:
            try:
                os.unlink(diag_path(self.layout))
            except FileNotFoundError:
                pass
        self.lock.release(remove=True)


# --- process entry ----------------------------------------------------------------------

def _listen(layout: state.Layout) -> socket.socket:
    path = socket_path(layout)
    try:
        os.unlink(path)  # we hold the supervisor lock: any socket file here is stale
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(128)
    return listener


def serve(argv: t.List[str], layout: state.Layout = state.DEFAULT_LAYOUT) -> int:
    code_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    options = dict(zip(argv[::2], argv[1::2])) if "--detach" not in argv else {}
    ready_fd = None
    if "--detach" in argv:
        read_end, write_end = os.pipe()
        if os.fork():
            os.close(write_end)
            with os.fdopen(read_end, "rb") as reader:
                message = reader.read().decode().strip()
            sys.stdout.write((message or "error: the supervisor died during start-up (see %s)"
                              % diag_path(layout)) + "\n")
            return 0 if message.startswith(("ready", "busy")) else 1
        os.close(read_end)
        os.setsid()
        ready_fd = write_end
    os.makedirs(layout.run_root, mode=0o755, exist_ok=True)
    os.chdir("/")
    if ready_fd is not None:
        _redirect_stdio(diag_path(layout))
    if "--lock-fd" in options:
        lock = state.NameLock(lock_path(layout))
        lock.fd = int(options["--lock-fd"])
        os.set_inheritable(lock.fd, False)
        listener = socket.socket(fileno=int(options["--listen-fd"]))
        os.set_inheritable(listener.fileno(), False)
    else:
        try:
            lock = state.NameLock(lock_path(layout)).acquire(timeout=3.0)
        except KernelboxError:
            _report(ready_fd, "busy: another supervisor is running")
            return 0
        listener = _listen(layout)
    libc.set_child_subreaper()
    libc.set_process_name("kb-supervisor")
    supervisor = Supervisor(layout, code_dir, listener, lock)
    _report(ready_fd, "ready %d" % os.getpid())
    try:
        supervisor.run()
    except BaseException:
        import traceback
        traceback.print_exc()  # to the diagnostics file
        supervisor.close(clean=False)
        raise
    supervisor.close()
    return 0


def _report(fd: t.Optional[int], message: str) -> None:
    if fd is not None:
        os.write(fd, message.encode() + b"\n")
        os.close(fd)


def _redirect_stdio(diag: str) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    out = os.open(diag, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def main(argv: t.Optional[t.List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        return serve(args[1:])
    if len(args) == 2 and args[0] in ("systemd-start", "systemd-stopped"):
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import systemd
        if args[0] == "systemd-stopped":
            return systemd.unit_stopped(args[1])
        code = systemd.unit_start(args[1])
        # systemd reads the PID file once we exit: no interpreter shutdown, so that the window in which a
        # short-lived init ends unseen by both of us (its exit status then unknown) stays as small as it can.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if len(args) == 2 and args[0] == "health":
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import health
        return health.check(args[1])
    if args and args[0] == "boot":
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import client
        return client.boot(os.path.dirname(os.path.abspath(sys.argv[0])))
    sys.stderr.write("usage: %s serve [--detach] | boot | systemd-start NAME | systemd-stopped NAME | health NAME\n"
                     % ENTRY_SCRIPT)
    return 2
