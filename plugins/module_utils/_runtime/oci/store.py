# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: kernelbox-runtime's state directory (``--root``).

Layout, one directory per container ID (0700, root only)::

    <root>/<id>/state.json    the record: bundle, the spec as created, init's PID + start time + boot id,
                              started, the cgroup and whether this runtime made it, created time
    <root>/<id>/start.sock    the start gate, while the container is created and not started

Every operation on one ID holds ``flock`` on its directory, so a ``delete`` and a
``start`` never interleave; ``create`` claims the ID with ``mkdir``, which the
kernel makes atomic (a second create fails, as the runtime spec requires).
The record is written atomically; status is never stored, it is read from
the kernel each time (``status()``): the init's identity (PID, start time,
boot id), whether it has exec'd yet (its comm is still the launcher's name
until then) and the cgroup freezer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import typing as t
from dataclasses import asdict, dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

DEFAULT_ROOT = "/run/kernelbox-runtime"
RECORD = "state.json"
GATE = "start.sock"
INIT_NAME = "kernelbox-init"  # launch_init.INIT_NAME: the comm of an init that has not exec'd yet
ID_PATTERN = re.compile(r"^[\w+.-]+$", re.ASCII)  # runc's rule
FORMAT = 1

CREATED, RUNNING, PAUSED, STOPPED = "created", "running", "paused", "stopped"


class NoSuchContainer(KernelboxError):
    """Clients match the text: 'container does not exist' is what runc says."""

    def __init__(self, container_id: str) -> None:
        super().__init__("container does not exist: %s" % container_id)


@dataclass
class Record:
    id: str
    bundle: str
    rootfs: str
    config: t.Dict[str, t.Any]
    created: str
    pid: int = 0
    starttime: int = 0
    boot: str = ""
    started: bool = False
    cgroup: str = ""             # absolute path of the container's cgroup v2 directory
    cgroup_made: bool = False    # made by this runtime, so removed by delete
    systemd_cgroup: bool = False
    format: int = FORMAT
    extra: t.Dict[str, t.Any] = field(default_factory=dict)

    @property
    def annotations(self) -> t.Dict[str, str]:
        return dict(self.config.get("annotations") or {})

    @property
    def oci_version(self) -> str:
        return str(self.config.get("ociVersion") or "")

    def process(self) -> t.Optional[kbstate.ProcessId]:
        return kbstate.ProcessId(self.pid, self.starttime, self.boot) if self.pid else None


def check_id(container_id: str) -> str:
    if not container_id or container_id in (".", "..") or not ID_PATTERN.match(container_id) \
            or len(container_id) > 1024:
        raise KernelboxError("invalid container id %r: use letters, digits, '_', '+', '-' and '.'" % container_id)
    return container_id


class Store:
    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def path(self, container_id: str, name: str = "") -> str:
        return os.path.join(self.root, check_id(container_id), name) if name else \
            os.path.join(self.root, check_id(container_id))

    def claim(self, container_id: str) -> None:
        """Make the container's directory; the ID must be new."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.path(container_id), 0o700)
        except FileExistsError:
            raise KernelboxError("container with id exists: %s" % container_id)

    def exists(self, container_id: str) -> bool:
        return os.path.isdir(self.path(container_id))

    def lock(self, container_id: str) -> "Lock":
        return Lock(self.path(container_id), container_id)

    def load(self, container_id: str) -> Record:
        data = kbstate.read_json(self.path(container_id, RECORD)) if self.exists(container_id) else None
        if data is None:
            raise NoSuchContainer(container_id)
        known = set(Record.__dataclass_fields__)  # pylint: disable=no-member
        return Record(**{key: value for key, value in data.items() if key in known})

    def save(self, record: Record) -> None:
        kbstate.write_json_atomic(self.path(record.id, RECORD), asdict(record))

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.path(container_id), ignore_errors=True)

    def ids(self) -> t.List[str]:
        try:
            return sorted(entry for entry in os.listdir(self.root) if ID_PATTERN.match(entry)
                          and os.path.isfile(os.path.join(self.root, entry, RECORD)))
        except FileNotFoundError:
            return []


class Lock:
    """flock(2) on the container's directory, exclusive; a missing directory means no such container."""

    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.container_id = container_id
        self.fd = -1

    def __enter__(self) -> "Lock":
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchContainer(self.container_id)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: t.Any) -> None:
        os.close(self.fd)
        self.fd = -1


def read_comm(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def status(record: Record) -> str:
    """created, running, paused or stopped, from the kernel (see the module docstring)."""
    process = record.process()
    if process is None or not process.alive():
        return STOPPED
    if not record.started and read_comm(record.pid) == INIT_NAME:
        return CREATED
    if record.cgroup and _frozen(record.cgroup):
        return PAUSED
    return RUNNING


def _frozen(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.freeze"), encoding="ascii") as handle:
            return handle.read().strip() == "1"
    except OSError:
        return False


def state_document(record: Record) -> t.Dict[str, t.Any]:
    """The runtime spec's state, as ``state`` prints it (plus runc's rootfs, created and owner)."""
    current = status(record)
    data: t.Dict[str, t.Any] = {"ociVersion": record.oci_version, "id": record.id, "status": current,
                                "pid": record.pid if current != STOPPED else 0, "bundle": record.bundle,
                                "rootfs": record.rootfs, "created": record.created, "owner": ""}
    if record.annotations:
        data["annotations"] = record.annotations
    return data


def unix_path(dir_path: str, name: str) -> t.Tuple[int, str]:
    """(dir fd, a short path reaching ``name`` in it): AF_UNIX paths are limited to 107 bytes, a --root is not."""
    dir_fd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return dir_fd, "/proc/self/fd/%d/%s" % (dir_fd, name)


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
