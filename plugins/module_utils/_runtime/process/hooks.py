# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: running OCI hooks (config.md "POSIX-platform Hooks").

A hook is a program: ``path`` (absolute) run with ``args`` (argv, argv[0]
included; just the path when empty) and exactly ``env``, the container's state
(runtime.md "State", JSON) on its stdin, stdout and stderr captured (the last
4 KiB go into the error), and a ``timeout`` in seconds after which it is
killed.  Hooks of one kind run in order and the first failure stops them.

The same runner serves the hooks the runtime's own process runs (prestart,
createRuntime, poststart, poststop: in the runtime namespace) and the ones the
container's init runs before pivot_root or before exec (createContainer,
startContainer: in the container's namespaces).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

OUTPUT_KEPT = 4096


@dataclass
class HookCall:
    path: str
    args: t.List[str] = field(default_factory=list)
    env: t.List[str] = field(default_factory=list)
    timeout: t.Optional[int] = None


class HookError(Exception):
    """Hook ``index`` of kind ``name`` failed; ``detail`` says how (exit code, signal, timeout, output)."""

    def __init__(self, name: str, index: int, path: str, detail: str) -> None:
        super().__init__("%s hook #%d (%s) %s" % (name, index, path, detail))
        self.name = name
        self.index = index
        self.detail = detail


def calls(hooks: t.Any, name: str) -> t.List[HookCall]:
    """The spec's hooks of kind ``name`` ('createRuntime', ...) as HookCalls; [] when there are none."""
    if hooks is None:
        return []
    return [HookCall(h.path, list(h.args), list(h.env), h.timeout) for h in hooks.of(name)]


def calls_in(config: t.Mapping[str, t.Any], name: str) -> t.List[HookCall]:
    """The hooks of kind ``name`` from a config.json already validated (as a runtime's record keeps it)."""
    entries = ((config.get("hooks") or {}).get(name)) or []
    return [HookCall(str(h["path"]), list(h.get("args") or []), list(h.get("env") or []), h.get("timeout"))
            for h in entries]


def state_json(oci_version: str, container_id: str, status: str, pid: t.Optional[int], bundle: str,
               annotations: t.Mapping[str, str]) -> bytes:
    """The state document hooks read on stdin (and the ``state`` command prints)."""
    data: t.Dict[str, t.Any] = {"ociVersion": oci_version, "id": container_id, "status": status}
    if pid is not None:
        data["pid"] = pid
    data["bundle"] = bundle
    if annotations:
        data["annotations"] = dict(annotations)
    return json.dumps(data).encode()


def run(name: str, hooks: t.Sequence[HookCall], state: bytes) -> None:
    """Run ``hooks`` in order, each with ``state`` on stdin; raise HookError at the first failure."""
    for index, hook in enumerate(hooks):
        detail = _run_one(hook, state)
        if detail is not None:
            raise HookError(name, index, hook.path, detail)


def _env(entries: t.Sequence[str]) -> t.Dict[bytes, bytes]:
    env = {}
    for entry in entries:
        key, _sep, value = entry.partition("=")
        env[os.fsencode(key)] = os.fsencode(value)
    return env


def _spawn(hook: HookCall, stdin_r: int, out_w: int) -> int:
    argv = [os.fsencode(a) for a in (hook.args or [hook.path])]
    env = _env(hook.env)
    path = os.fsencode(hook.path)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            libc.close_fds_above(3)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execve(path, argv, env)
        finally:
            os._exit(127)
    return pid


def _run_one(hook: HookCall, state: bytes) -> t.Optional[str]:
    """None when the hook exited 0; otherwise what went wrong."""
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _spawn(hook, stdin_r, out_w)
    except OSError as exc:
        for fd in (stdin_r, stdin_w, out_r, out_w):
            os.close(fd)
        return "could not be started: %s" % exc.strerror
    os.close(stdin_r)
    os.close(out_w)
    pidfd = libc.pidfd_open(pid)
    deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
    output = b""
    pending = memoryview(state)
    os.set_blocking(stdin_w, False)
    readers = [out_r, pidfd]
    writers = [stdin_w] if pending else []
    if not pending:
        os.close(stdin_w)
    timed_out = False
    exited = False
    try:
        while not exited:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0:
                timed_out = True
                break
            ready_r, ready_w, _x = select.select(readers, writers, [], wait)
            if stdin_w in ready_w:
                try:
                    pending = pending[os.write(stdin_w, pending[:65536]):]
                except (BrokenPipeError, BlockingIOError) as exc:
                    if isinstance(exc, BrokenPipeError):
                        pending = pending[:0]
                if not pending:
                    writers = []
                    os.close(stdin_w)
            if out_r in ready_r:
                chunk = os.read(out_r, 65536)
                if chunk:
                    output = (output + chunk)[-OUTPUT_KEPT:]
                else:
                    readers.remove(out_r)
            if pidfd in ready_r:
                exited = True
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        output = _drain(out_r, output) if out_r in readers else output
        _pid, status = os.waitpid(pid, 0)
    finally:
        for fd in (out_r, pidfd) + ((stdin_w,) if writers else ()):
            try:
                os.close(fd)
            except OSError:
                pass
    text = output.decode("utf-8", "replace").strip()
    suffix = (": %s" % text) if text else ""
    if timed_out:
        return "timed out after %d s%s" % (hook.timeout or 0, suffix)
    if os.WIFSIGNALED(status):
        return "was killed by signal %d%s" % (os.WTERMSIG(status), suffix)
    code = os.WEXITSTATUS(status)
    if code == 127 and not text:
        return "could not be executed (exit code 127: missing or not executable?)"
    return None if code == 0 else "exited with code %d%s" % (code, suffix)


def _drain(fd: int, output: bytes) -> bytes:
    """What the hook wrote before it exited, without waiting for a writer it left behind."""
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return output
        if not chunk:
            return output
        output = (output + chunk)[-OUTPUT_KEPT:]
