# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive the collection through Ansible itself: ad-hoc module calls and playbooks.

Results come back through the kb_record callback (one JSON line per task),
so tests assert on exactly what Ansible returned, never on our Python objects.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass, field

HARNESS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HARNESS))


def venv_bin(name: str, venv: t.Optional[str] = None) -> str:
    """A tool from ``venv``, by default the project's virtualenv (the one make test created), else from PATH."""
    candidate = os.path.join(venv or os.environ.get("KB_VENV", os.path.join(REPO, ".venv")), "bin", name)
    return candidate if os.path.exists(candidate) else name


def collections_path() -> str:
    """Where the collection is installed: the built tarball, unless KB_COLLECTIONS_PATH says otherwise."""
    path = os.environ.get("KB_COLLECTIONS_PATH", os.path.join(REPO, ".build", "collections"))
    marker = os.path.join(path, "ansible_collections", "kernelbox", "containers", "plugins")
    if not os.path.isdir(marker):
        raise RuntimeError("the collection is not installed at %s; run 'make install' (or set "
                           "KB_COLLECTIONS_PATH) first" % path)
    return path


def _tail(handle: t.IO[bytes], limit: t.Optional[int] = None) -> str:
    """The text written to ``handle`` (a temporary file), or its last ``limit`` characters."""
    handle.seek(0)
    text = handle.read().decode(errors="replace")
    return text[-limit:] if limit else text


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-6000:]
    except OSError:
        return ""


@dataclass
class TaskResult:
    task: str
    status: str  # ok | failed | skipped | ignored | unreachable
    result: t.Dict[str, t.Any]
    host: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "ignored", "unreachable")

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))

    @property
    def actions(self) -> t.List[str]:
        return list(self.result.get("actions", []))

    @property
    def diff(self) -> t.Any:
        return self.result.get("diff")

    def __getitem__(self, key: str) -> t.Any:
        return self.result[key]

    def get(self, key: str, default: t.Any = None) -> t.Any:
        return self.result.get(key, default)


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    tasks: t.List[TaskResult] = field(default_factory=list)

    def named(self, name: str) -> TaskResult:
        matches = [task for task in self.tasks if task.task == name]
        if len(matches) != 1:
            raise KeyError("expected one task named %r, found %d: %s"
                           % (name, len(matches), [task.task for task in self.tasks]))
        return matches[0]

    @property
    def changed_tasks(self) -> t.List[str]:
        return [task.task for task in self.tasks if task.changed]

    @property
    def failed_tasks(self) -> t.List[str]:
        return [task.task for task in self.tasks if task.status == "failed"]


class Ansible:
    """Runs ansible / ansible-playbook against localhost with a chosen target interpreter."""

    def __init__(self, python: t.Optional[str], extra_env: t.Optional[t.Dict[str, str]] = None,
                 wrapper: t.Sequence[str] = (), venv: t.Optional[str] = None) -> None:
        """``wrapper``: a command that runs ansible as its arguments (a mount namespace set up first, say);
        ``venv``: the virtualenv whose ansible runs (default: the project's)."""
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.wrapper = list(wrapper)
        self.venv = venv

    def _env(self, record: str) -> t.Dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": collections_path(),
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HARNESS, "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "kb_record",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "KB_RECORD_FILE": record,
        })
        env.update(self.extra_env)
        return env

    def _run(self, argv: t.List[str], timeout: t.Optional[float]
             ) -> t.Tuple[subprocess.CompletedProcess, t.List[TaskResult]]:
        """Run ansible; its output goes to files, so whatever ends the wait (``timeout``, the test's own timeout,
        ^C) still leaves the evidence: the tasks finished so far and the last output, written to stderr (pytest
        shows it with the failure) before the exception goes on."""
        with tempfile.NamedTemporaryFile(prefix="kb-record-", suffix=".jsonl", delete=False) as handle:
            record = handle.name
        try:
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(self.wrapper + argv, env=self._env(record), stdout=out, stderr=err)
                try:
                    returncode = proc.wait(timeout)
                except BaseException as exc:
                    proc.kill()
                    proc.wait()
                    why = "after %gs" % timeout if isinstance(exc, subprocess.TimeoutExpired) else type(exc).__name__
                    shown = (shlex.join(argv[:1] + argv[-1:]), why, _read(record), _tail(out, 6000), _tail(err, 3000))
                    evidence = "%s was stopped (%s) before it finished; tasks finished so far:\n%s\nstdout:\n%s\n" \
                               "stderr:\n%s\n" % shown
                    if isinstance(exc, subprocess.TimeoutExpired):
                        raise AssertionError(evidence)
                    sys.stderr.write(evidence)
                    raise
                completed = subprocess.CompletedProcess(argv, returncode, _tail(out), _tail(err))
            with open(record, encoding="utf-8") as reader:
                tasks = [json.loads(line) for line in reader if line.strip()]
        finally:
            os.unlink(record)
        return completed, [TaskResult(task["task"], task["status"], task["result"], task.get("host", ""))
                           for task in tasks]

    def module(self, name: str, args: t.Optional[t.Dict[str, t.Any]] = None, check: bool = False,
               diff: bool = False, timeout: t.Optional[float] = None) -> TaskResult:
        """Run one module ad hoc: ``ansible localhost -m kernelbox.containers.NAME -a JSON``."""
        fqcn = name if "." in name else "kernelbox.containers." + name
        argv = [venv_bin("ansible", self.venv), "localhost", "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % self.python,
                "-m", fqcn, "-a", json.dumps(args or {})]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        proc, tasks = self._run(argv, timeout)
        if len(tasks) != 1:
            raise AssertionError("ansible %s returned %d results (rc %d)\nstdout:\n%s\nstderr:\n%s"
                                 % (fqcn, len(tasks), proc.returncode, proc.stdout, proc.stderr))
        return tasks[0]

    def playbook(self, playbook: str, extra_vars: t.Optional[t.Dict[str, t.Any]] = None, check: bool = False,
                 diff: bool = False, timeout: t.Optional[float] = None, tags: t.Optional[str] = None,
                 inventory: t.Optional[str] = None, start_at_task: t.Optional[str] = None) -> PlaybookRun:
        """Run a playbook given as a path or as YAML text, against localhost (or ``inventory``).  With ``python``
        None, each host's interpreter is the inventory's (as make demo runs it)."""
        cleanup = None
        if "\n" in playbook:
            with tempfile.NamedTemporaryFile("w", prefix="kb-play-", suffix=".yml", delete=False) as handle:
                handle.write(playbook)
                cleanup = playbook = handle.name
        argv = [venv_bin("ansible-playbook", self.venv), "-i", inventory or "localhost,", "-c", "local"]
        if self.python is not None:  # None: each host's interpreter from the inventory (as make demo runs)
            argv += ["-e", "ansible_python_interpreter=%s" % self.python]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if tags:
            argv += ["--tags", tags]
        if start_at_task:
            argv += ["--start-at-task", start_at_task]
        argv.append(playbook)
        try:
            proc, tasks = self._run(argv, timeout)
        finally:
            if cleanup:
                os.unlink(cleanup)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, tasks)

    def __repr__(self) -> str:
        return "Ansible(python=%s)" % shlex.quote(str(self.python))
