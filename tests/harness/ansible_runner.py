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
import tempfile
import typing as t
from dataclasses import dataclass, field

HARNESS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HARNESS))


def venv_bin(name: str) -> str:
    """A tool from the project's virtualenv (the one make test created), else from PATH."""
    candidate = os.path.join(os.environ.get("KB_VENV", os.path.join(REPO, ".venv")), "bin", name)
    return candidate if os.path.exists(candidate) else name


def collections_path() -> str:
    """Where the collection is installed: the built tarball, unless KB_COLLECTIONS_PATH says otherwise."""
    path = os.environ.get("KB_COLLECTIONS_PATH", os.path.join(REPO, ".build", "collections"))
    marker = os.path.join(path, "ansible_collections", "kernelbox", "containers", "plugins")
    if not os.path.isdir(marker):
        raise RuntimeError("the collection is not installed at %s; run 'make install' (or set "
                           "KB_COLLECTIONS_PATH) first" % path)
    return path


def _text(output: t.Union[None, str, bytes]) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


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

    def __init__(self, python: str, extra_env: t.Optional[t.Dict[str, str]] = None,
                 wrapper: t.Sequence[str] = ()) -> None:
        """``wrapper``: a command that runs ansible as its arguments (a mount namespace set up first, say)."""
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.wrapper = list(wrapper)

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

    def _run(self, argv: t.List[str], timeout: float) -> t.Tuple[subprocess.CompletedProcess, t.List[TaskResult]]:
        with tempfile.NamedTemporaryFile(prefix="kb-record-", suffix=".jsonl", delete=False) as handle:
            record = handle.name
        try:
            try:
                proc = subprocess.run(self.wrapper + argv, env=self._env(record), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise AssertionError("%s did not finish within %gs; tasks finished so far:\n%s\nstdout:\n%s\n"
                                     "stderr:\n%s" % (shlex.join(argv[:1] + argv[-1:]), timeout, _read(record),
                                                       _text(exc.stdout)[-6000:], _text(exc.stderr)[-3000:]))
            with open(record, encoding="utf-8") as reader:
                tasks = [json.loads(line) for line in reader if line.strip()]
        finally:
            os.unlink(record)
        return proc, [TaskResult(task["task"], task["status"], task["result"]) for task in tasks]

    def module(self, name: str, args: t.Optional[t.Dict[str, t.Any]] = None, check: bool = False,
               diff: bool = False, timeout: float = 300) -> TaskResult:
        """Run one module ad hoc: ``ansible localhost -m kernelbox.containers.NAME -a JSON``."""
        fqcn = name if "." in name else "kernelbox.containers." + name
        argv = [venv_bin("ansible"), "localhost", "-i", "localhost,", "-c", "local",
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
                 diff: bool = False, timeout: float = 900, tags: t.Optional[str] = None,
                 inventory: t.Optional[str] = None) -> PlaybookRun:
        """Run a playbook given as a path or as YAML text, against localhost (or ``inventory``)."""
        cleanup = None
        if "\n" in playbook:
            with tempfile.NamedTemporaryFile("w", prefix="kb-play-", suffix=".yml", delete=False) as handle:
                handle.write(playbook)
                cleanup = playbook = handle.name
        argv = [venv_bin("ansible-playbook"), "-i", inventory or "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % self.python]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if tags:
            argv += ["--tags", tags]
        argv.append(playbook)
        try:
            proc, tasks = self._run(argv, timeout)
        finally:
            if cleanup:
                os.unlink(cleanup)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, tasks)

    def __repr__(self) -> str:
        return "Ansible(python=%s)" % shlex.quote(self.python)
