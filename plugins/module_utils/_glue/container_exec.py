# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the container_exec module and _runtime.process.execution.

read (the container's state and its pinned init) -> plan one step "run ARGV in NAME"
-> act unless check mode -> report like ansible.builtin.command.
"""

from __future__ import annotations

import datetime
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request, execution
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str"),
    pid=dict(type="int"),
    command=dict(type="list", elements="str", required=True),
    env=dict(type="dict", default={}),
    cwd=dict(type="str"),
    user=dict(type="str"),
    groups=dict(type="list", elements="int"),
    stdin=dict(type="str"),
    stdin_add_newline=dict(type="bool", default=True),
    strip_empty_ends=dict(type="bool", default=True),
    timeout=dict(type="float"),
    output_limit=dict(type="str", default="1M"),
    namespaces=dict(type="list", elements="str", choices=list(execution.NAMESPACES),
                    default=list(execution.NAMESPACES)),
)
MODULE_KWARGS: t.Dict[str, t.Any] = dict(
    mutually_exclusive=[("name", "pid")],
    required_one_of=[("name", "pid")],
    supports_check_mode=True,
)


def parse_user(value: t.Optional[str]) -> t.Tuple[t.Optional[int], t.Optional[int]]:
    """'UID' or 'UID:GID' (numbers, as inside the container) -> (uid, gid); the gid defaults to the uid."""
    if value is None:
        return None, None
    text = str(value).strip()
    uid_text, sep, gid_text = text.partition(":")
    try:
        uid = int(uid_text, 10)
        gid = int(gid_text, 10) if sep else uid
    except ValueError:
        raise ValidationError("user: %r must be UID or UID:GID, in numbers (names are not resolved)" % value)
    for number in (uid, gid):
        if not 0 <= number <= (1 << 32) - 2:
            raise ValidationError("user: %r is out of range" % value)
    return uid, gid


def command_time(stamp: float) -> str:
    """The start/end format of ansible.builtin.command: '2024-01-31 12:34:56.123456' (local time)."""
    return str(datetime.datetime.fromtimestamp(stamp))


def output_text(data: bytes, strip: bool) -> str:
    text = data.decode("utf-8", "replace")
    return text.rstrip("\r\n") if strip else text


def dropped_warning(stream: str, dropped: int, kept: int) -> str:
    return ("%s: the command wrote %d bytes; the first %d were kept (output_limit) and %d dropped"
            % (stream, kept + dropped, kept, dropped))


class ContainerExecResource(Resource):
    """One command, run inside a running container (or any process)."""

    layout = state.DEFAULT_LAYOUT

    def validate(self) -> None:
        p = self.params
        self.name = validate.container_name(p["name"]) if p.get("name") is not None else None
        self.pid = p.get("pid")
        if self.pid is not None and self.pid <= 0:
            raise ValidationError("pid: %r is not a process id" % self.pid)
        argv = list(p["command"] or [])
        if not argv or argv[0] == "":
            raise ValidationError("command: must be a non-empty argv list, such as [cat, /etc/hostname]")
        if any("\0" in arg for arg in argv):
            raise ValidationError("command: arguments must not contain NUL bytes")
        env = {}
        for key, value in (p.get("env") or {}).items():
            key = str(key)
            if not key or "=" in key or "\0" in key:
                raise ValidationError("env: %r is not a valid variable name" % key)
            text = "" if value is None else str(value)
            if "\0" in text:
                raise ValidationError("env: the value of %s contains a NUL byte" % key)
            env[key] = text
        cwd = p.get("cwd")
        if cwd is not None and not cwd.startswith("/"):
            raise ValidationError("cwd: %r must be an absolute path" % cwd)
        timeout = p.get("timeout")
        if timeout is not None and timeout <= 0:
            raise ValidationError("timeout: must be a positive number of seconds (leave it out for none)")
        limit = validate.size_bytes(p["output_limit"], "output_limit")
        uid, gid = parse_user(p.get("user"))
        stdin = p.get("stdin")
        if stdin is not None and p["stdin_add_newline"]:
            stdin += "\n"
        self.options = exec_request.Options(
            argv=argv, env=env, cwd=cwd, uid=uid, gid=gid, groups=p.get("groups"),
            namespaces=list(dict.fromkeys(p["namespaces"])),
            stdin=None if stdin is None else stdin.encode("utf-8"), timeout=timeout,
            output_limit=int(limit) or None)
        if not self.options.namespaces:
            raise ValidationError("namespaces: name at least one namespace to join (all by default)")
        self.target: t.Optional[execution.Target] = None
        self.outcome: t.Optional[execution.Result] = None

    @property
    def where(self) -> str:
        return self.name if self.name is not None else "process %d" % self.pid

    def read(self) -> t.Dict[str, t.Any]:
        if self.name is not None:
            self.container, self.target = exec_request.open_container(self.name, self.layout)
            self.request = exec_request.for_container(self.container, self.target, self.options)
        else:
            try:
                self.target = execution.Target.open(self.pid)
            except execution.TargetGone as exc:
                raise exec_request.NotRunning(exc.msg)
            self.request = exec_request.for_process(self.target, self.options)
        return {"target": self.where, "pid": self.target.pid, "state": "running"}

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return current

    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        return [Step("run %s in %s" % (self.options.argv, self.where), self._run)]

    def _run(self) -> None:
        try:
            self.outcome = execution.run(self.target, self.request)
        finally:
            self.target.close()

    def diff_view(self, state: t.Any) -> t.Dict[str, t.Any]:
        return {}

    def refresh(self, current: t.Any, acted: bool) -> t.Any:
        return current

    def result(self, state: t.Any) -> t.Dict[str, t.Any]:
        base: t.Dict[str, t.Any] = {"cmd": list(self.options.argv), "pid": state["pid"] if state else None}
        if self.name is not None:
            base["name"] = self.name
        outcome = self.outcome
        if outcome is None:  # check mode
            if self.target is not None:
                self.target.close()
            base["msg"] = "check mode: the command was not run"
            return base
        strip = self.params["strip_empty_ends"]
        stdout = output_text(outcome.stdout, strip)
        stderr = output_text(outcome.stderr, strip)
        base.update(
            rc=outcome.rc, stdout=stdout, stderr=stderr, stdout_lines=stdout.splitlines(),
            stderr_lines=stderr.splitlines(), start=command_time(outcome.started), end=command_time(outcome.ended),
            delta=str(datetime.timedelta(seconds=outcome.ended - outcome.started)),
            timed_out=outcome.timed_out, namespaces_joined=outcome.joined, left_running=outcome.moved,
            stdout_dropped=outcome.stdout_dropped, stderr_dropped=outcome.stderr_dropped)
        for stream, dropped in (("stdout", outcome.stdout_dropped), ("stderr", outcome.stderr_dropped)):
            if dropped:
                self.warnings.append(dropped_warning(stream, dropped, self.options.output_limit or 0))
        return base

    def failure(self, state: t.Any) -> t.Optional[str]:
        outcome = self.outcome
        if outcome is None:
            return None
        if outcome.timed_out:
            return ("timed out after %gs: killed the command's %d process%s; %s keeps running"
                    % (self.options.timeout, outcome.killed, "" if outcome.killed == 1 else "es", self.where))
        if outcome.rc != 0:
            return "non-zero return code"
        return None
