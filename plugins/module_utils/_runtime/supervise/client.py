# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: talking to the kernelbox supervisor, and starting it on demand.

Protocol: connect to /run/kernelbox/supervisor.sock, send one JSON object and
a newline, read one JSON object and a newline.  Requests (all idempotent, so
a client retries after a lost connection): ``hello``; ``start {name}`` (from
the persistent state on disk; replies once the init has exec'd, or with the
launch error); ``stop {name, timeout}`` (replies after the exit); ``reload
{name}`` (settings changed in place); ``upgrade {code}`` (re-execute from
another code copy).  A reply with ``"exiting": true`` means the supervisor
has nothing left to look after and exits right after it; the client then
waits for that exit, so a caller never races a departing supervisor.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import supervisor
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

# Bounds on waits for an event (the daemon listens, answers, upgrades, exits): each returns as soon as it happens,
# so they are sized for a slow machine under load (a supervisor took over 30 s to start in a TCG VM at a load of
# 19), never for a fast CPU.
SPAWN_TIMEOUT = 300.0
HELLO_TIMEOUT = 60.0
EXIT_WAIT = 60.0
ATTEMPTS = 5


class SupervisorUnavailable(KernelboxError):
    """No supervisor answered (none running, or it went away mid-request)."""


def call(request: t.Dict[str, t.Any], timeout: float = 60.0,
         layout: state.Layout = state.DEFAULT_LAYOUT,
         after_send: t.Optional[t.Callable[[], None]] = None) -> t.Dict[str, t.Any]:
    """One request, one reply; SupervisorUnavailable if nobody answers.

    ``after_send`` runs once the request is out (test fault injection: the
    module dies while the supervisor works on the request).
    """
    path = supervisor.socket_path(layout)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SupervisorUnavailable("no kernelbox supervisor is listening on %s (%s)" % (path, exc.strerror))
        try:
            conn.sendall((json.dumps(request) + "\n").encode())
            if after_send is not None:
                after_send()
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise KernelboxError("the kernelbox supervisor did not answer %r within %gs" % (request.get("op"), timeout))
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise SupervisorUnavailable("the kernelbox supervisor went away: %s" % exc)
    finally:
        conn.close()
    if not data:
        raise SupervisorUnavailable("the kernelbox supervisor closed the connection without an answer")
    return json.loads(data.decode("utf-8"))


class Client:
    """A supervisor session for one module run: starts or upgrades the daemon as needed."""

    def __init__(self, code_dir: str, python: t.Optional[str] = None,
                 layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
        self.code_dir = code_dir
        self.python = python or sys.executable
        self.layout = layout
        self.hello: t.Optional[t.Dict[str, t.Any]] = None

    def spawn(self) -> None:
        """Start a supervisor; returns once it listens (or another one already runs)."""
        entry = os.path.join(self.code_dir, supervisor.ENTRY_SCRIPT)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.run([self.python, "-I", "-S", entry, "serve", "--detach"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd="/",
                              timeout=SPAWN_TIMEOUT, check=False, close_fds=True)
        if proc.returncode != 0:
            raise KernelboxError("could not start the kernelbox supervisor (%s): %s"
                                 % (entry, proc.stdout.decode("utf-8", "replace").strip()))

    def ensure(self) -> t.Dict[str, t.Any]:
        """A live supervisor running our code: spawned or upgraded when needed."""
        for _attempt in range(ATTEMPTS):
            try:
                hello = call({"op": "hello"}, timeout=HELLO_TIMEOUT, layout=self.layout)
            except SupervisorUnavailable:
                self.spawn()
                continue
            if os.path.realpath(hello.get("code", "")) != os.path.realpath(self.code_dir):
                self._upgrade(hello)
                continue
            self.hello = hello
            return hello
        raise KernelboxError("the kernelbox supervisor did not come up after %d attempts; see %s"
                             % (ATTEMPTS, supervisor.diag_path(self.layout)))

    def _upgrade(self, hello: t.Dict[str, t.Any]) -> None:
        try:
            call({"op": "upgrade", "code": self.code_dir}, timeout=HELLO_TIMEOUT, layout=self.layout)
        except SupervisorUnavailable:
            return
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            try:
                now = call({"op": "hello"}, timeout=HELLO_TIMEOUT, layout=self.layout)
            except SupervisorUnavailable:
                return
            if os.path.realpath(now.get("code", "")) == os.path.realpath(self.code_dir):
                return
            time.sleep(0.05)
        raise KernelboxError("the kernelbox supervisor (PID %s) did not upgrade to %s" % (hello.get("pid"), self.code_dir))

    def request(self, op: str, timeout: float = 120.0, after_send: t.Optional[t.Callable[[], None]] = None,
                **args: t.Any) -> t.Dict[str, t.Any]:
        """Send ``op`` to a live supervisor, retrying over supervisor restarts and upgrades."""
        request = dict(args, op=op)
        last: t.Optional[Exception] = None
        for _attempt in range(ATTEMPTS):
            hello = self.ensure()
            try:
                reply = call(request, timeout=timeout, layout=self.layout, after_send=after_send)
            except SupervisorUnavailable as exc:
                last = exc
                continue
            finally:
                request.pop("fault", None)  # a test fault strikes once, not again in the retry
            if reply.get("retry"):
                last = KernelboxError(reply.get("error", {}).get("msg", "retry"))
                continue
            if reply.get("exiting"):
                self._wait_for_exit(hello)
            return reply
        raise KernelboxError("the kernelbox supervisor did not complete %r: %s" % (op, last))

    def _wait_for_exit(self, hello: t.Dict[str, t.Any]) -> None:
        identity = hello.get("identity") or {}
        if not identity.get("pid") or identity.get("starttime") is None:
            return
        proc = state.ProcessId(identity["pid"], identity["starttime"])
        deadline = time.monotonic() + EXIT_WAIT
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.01)


def running_supervisor(layout: state.Layout = state.DEFAULT_LAYOUT) -> t.Optional[t.Dict[str, t.Any]]:
    """The hello of the running supervisor, or None; never starts one (check mode, info)."""
    try:
        return call({"op": "hello"}, timeout=HELLO_TIMEOUT, layout=layout)
    except SupervisorUnavailable:
        return None


def boot(code_dir: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> int:
    """``kernelbox-supervisor.py boot``: start every container with enabled=true (non-systemd hosts)."""
    session = Client(code_dir, layout=layout)
    status = 0
    for name in state.list_names(layout):
        try:
            current = state.load(name, layout)
        except KernelboxError as exc:
            sys.stdout.write("%s: %s\n" % (name, exc))
            status = 1
            continue
        if current.settings is None or not current.settings.enabled or current.settings.supervisor != "kernelbox":
            continue
        reply = session.request("start", name=name)
        if reply.get("ok"):
            sys.stdout.write("%s: started, PID %s\n" % (name, (reply.get("runtime") or {}).get("pid")))
        else:
            sys.stdout.write("%s: %s\n" % (name, (reply.get("error") or {}).get("msg")))
            status = 1
    return status
