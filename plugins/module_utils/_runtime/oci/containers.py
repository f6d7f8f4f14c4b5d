# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the OCI operations on an existing container (runtime.md).

``start`` opens the start gate the created init waits at; ``kill`` signals
through a pidfd checked against the init's identity (or every process of its
cgroup); ``delete`` kills what is left, removes what ``create`` made and runs
the poststop hooks; ``state``, ``pause``, ``resume``, ``ps``.  ``create`` and
``update``, which need the spec and launch code, are in create.py: the calls a
client makes most often (state, kill, delete) import neither.

Every error is a ``KernelboxError`` whose text says what and why, in the words
runc uses where clients match them ("container does not exist", "container
not running", "cannot delete container ... that is not stopped").
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import store as oci_store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci.store import Record, Store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import hooks
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

START_TIMEOUT = 300.0  # startContainer hooks run inside it, each with its own timeout
KILL_WAIT = 10.0


def start(store: Store, container_id: str) -> Record:
    with store.lock(container_id):
        record = store.load(container_id)
        current = oci_store.status(record)
        if current == oci_store.STOPPED:
            raise KernelboxError("cannot start a container that has stopped")
        if current != oci_store.CREATED:
            raise KernelboxError("cannot start an already running container")
        reply = _open_gate(store, container_id)
        if reply.startswith("E"):
            step, err, detail = (reply[1:].split("\x1f", 2) + ["", ""])[:3]
            suffix = " [errno %s]" % err if err not in ("", "0") else ""
            raise KernelboxError("start failed at step %s: %s%s" % (step, detail, suffix))
        if not reply.startswith("X"):
            raise KernelboxError("the container's init exited before its process started")
        record.started = True
        store.save(record)
        try:
            os.unlink(store.path(container_id, oci_store.GATE))
        except FileNotFoundError:
            pass
        poststart(record)
        return record


def group_of(record: Record) -> t.Any:
    """The cgroup library's handle of the container's group (None when it has none below the cgroup2 mount)."""
    if not record.cgroup:
        return None
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    hierarchy = cgroup.find_hierarchy()
    relative = os.path.relpath(record.cgroup, hierarchy.mount)
    if relative.startswith("..") or relative == ".":
        return None
    return cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy)


def poststart(record: Record) -> None:
    calls = hooks.calls_in(record.config, "poststart")
    if not calls:
        return
    state = hooks.state_json(record.oci_version, record.id, "running", record.pid, record.bundle, record.annotations)
    try:
        hooks.run("poststart", calls, state)
    except hooks.HookError as exc:
        process = record.process()
        if process is not None:
            process.signal(signal.SIGKILL)
        raise KernelboxError("poststart failed, the container was killed: %s" % exc)


def _open_gate(store: Store, container_id: str) -> str:
    dir_fd, path = oci_store.unix_path(store.path(container_id), oci_store.GATE)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as client:
            client.settimeout(START_TIMEOUT)
            try:
                client.connect(path)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    return ""  # nobody waits there any more
                raise
            client.sendall(b"S")
            data = b""
            while len(data) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(dir_fd)
    return data.decode("utf-8", "replace").strip()


# --- kill, delete, state, pause, resume, ps ---------------------------------------------

def signal_number(value: str) -> int:
    try:
        number = kbstate.signal_number(value)
    except ValueError:
        raise KernelboxError("invalid signal %r" % value)
    if not 0 < number < 65:
        raise KernelboxError("invalid signal %r" % value)
    return number


def kill(store: Store, container_id: str, signum: int, everyone: bool = False) -> None:
    record = store.load(container_id)
    if oci_store.status(record) == oci_store.STOPPED:
        raise KernelboxError("container not running")
    group = group_of(record)
    if everyone and group is not None and group.exists():
        if signum == signal.SIGKILL and group.has_file("cgroup.kill"):
            group.write("cgroup.kill", "1")
            return
        for pid in _all_pids(group):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return
    process = record.process()
    if process is None or not process.signal(signum):
        raise KernelboxError("container not running")


def _all_pids(group: t.Any) -> t.List[int]:
    pids = []
    for dirpath, _dirs, _files in os.walk(group.path):
        try:
            with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as handle:
                pids += [int(line) for line in handle if line.strip()]
        except OSError:
            continue
    return sorted(set(pids))


def _wait_gone(process: kbstate.ProcessId, timeout: float) -> bool:
    fd = process.pidfd()
    if fd is None:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def delete(store: Store, container_id: str, force: bool = False,
           warn: t.Callable[[str], None] = lambda text: None) -> None:
    if force and not store.exists(container_id):
        return  # runc: deleting a missing container with --force succeeds
    with store.lock(container_id):
        try:
            record = store.load(container_id)
        except oci_store.NoSuchContainer:
            if not force:
                raise
            store.remove(container_id)  # a create killed before it wrote its record: nothing else is known
            return
        current = oci_store.status(record)
        if current in (oci_store.RUNNING, oci_store.PAUSED) and not force:
            raise KernelboxError("cannot delete container %s that is not stopped: %s" % (container_id, current))
        group = group_of(record)
        process = record.process()
        if current != oci_store.STOPPED and process is not None:
            if group is not None and group.exists() and group.has_file("cgroup.kill"):
                group.write("cgroup.kill", "1")
            process.signal(signal.SIGKILL)
            if not _wait_gone(process, KILL_WAIT):
                raise KernelboxError("container %s: its init (PID %d) did not die within %.0f s of SIGKILL"
                                     % (container_id, record.pid, KILL_WAIT))
        if record.cgroup_made and group is not None and group.exists():
            from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
            cgroup.kill_and_remove(group, timeout=KILL_WAIT)
        calls = hooks.calls_in(record.config, "poststop")
        if calls:
            state = hooks.state_json(record.oci_version, record.id, "stopped", None, record.bundle, record.annotations)
            try:
                hooks.run("poststop", calls, state)
            except hooks.HookError as exc:  # the runtime spec: a warning, and the delete goes on
                warn("poststop: %s" % exc)
        store.remove(container_id)


def state_of(store: Store, container_id: str) -> t.Dict[str, t.Any]:
    return oci_store.state_document(store.load(container_id))


def pause(store: Store, container_id: str, frozen: bool) -> None:
    with store.lock(container_id):
        record = store.load(container_id)
        current = oci_store.status(record)
        wanted_from = oci_store.RUNNING if frozen else oci_store.PAUSED
        if current != wanted_from:
            raise KernelboxError("container not %s" % ("running" if frozen else "paused"))
        group = group_of(record)
        if group is None or not group.exists():
            raise KernelboxError("container %s has no cgroup of its own to freeze" % container_id)
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
        cgroup.freeze(group, frozen)


def processes(store: Store, container_id: str) -> t.List[int]:
    record = store.load(container_id)
    group = group_of(record)
    if group is None or not group.exists():
        process = record.process()
        return [record.pid] if process is not None and process.alive() else []
    return _all_pids(group)


def wait(record: Record) -> int:
    """Wait for the init (our child: ``run``), forwarding signals; returns its exit status as a shell shows it."""
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                 signal.SIGWINCH)
    process = record.process()

    def forward(signum: int, _frame: t.Any) -> None:
        if process is not None:
            process.signal(signum)

    for signum in forwarded:
        signal.signal(signum, forward)
    while True:
        try:
            _pid, status = os.waitpid(record.pid, 0)
            break
        except InterruptedError:
            continue
    for signum in forwarded:
        signal.signal(signum, signal.SIG_DFL)
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
