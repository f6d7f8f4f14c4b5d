# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: per-container state on disk, locking and process identity.

Layout (``FORMAT = 1``)::

    /var/lib/kernelbox/containers/NAME/    persistent, survives a reboot
        config.json         the OCI runtime spec the container runs (root only: it holds env)
        container.json      lifecycle settings: digest of config.json, enabled, restart policy,
                            stop signal and timeout, log cap, cgroup (path, owned, limits), supervisor
        definition.json     the container module's options as its tasks gave them (merged), and the
                            facts its no-change path checks (absent for container_process containers)
        container.log       stdout and stderr (kernelbox supervisor), capped; container.log.1 is the old one
        etc/                generated hosts, hostname and resolv.conf, bind-mounted read-only
    /run/kernelbox/containers/NAME/        runtime, gone at reboot
        state.json          status, pid + starttime + boot id, timestamps, exit code/signal,
                            restart count, stop request, supervisor
    /run/kernelbox/containers/NAME.lock    flock(2): one lifecycle operation per name at a time

Every file is written atomically (temp file, fsync, rename, fsync of the
directory), so a SIGKILL at any instant leaves the old or the new content,
always parseable.  Each file has one writer: the module writes the persistent
files under the name lock; the supervisor alone writes state.json.

A running container is identified by PID *and* start time (field 22 of
/proc/PID/stat) within one boot; signals go through a pidfd opened and then
checked against that identity, so a recycled PID is never signalled.

This file is the API that container_exec and container_info read:
``load()``, ``list_names()``, ``Container.process()`` / ``Container.is_running()``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import signal
import time
import typing as t
from dataclasses import asdict, dataclass, field, fields

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

FORMAT = 1

# Runtime statuses (state.json "status").
CREATED = "created"        # persistent state exists; never started, or started and removed from supervision
STARTING = "starting"      # the supervisor is launching it (a crash here leaves this, and recovery kills the leaf)
RUNNING = "running"
STOPPING = "stopping"      # stop signal sent, waiting for exit or the SIGKILL deadline
RESTARTING = "restarting"  # exited, waiting out the restart back-off
EXITED = "exited"          # exited (by itself or on request) and will not be restarted
FAILED = "failed"          # the launch failed before exec; ``error`` says where
ACTIVE = (STARTING, RUNNING, STOPPING, RESTARTING)  # what a supervisor must look after


class StateError(KernelboxError):
    """State on disk that cannot be used (unknown format, not ours)."""


@dataclass(frozen=True)
class Layout:
    """Where state lives; tests point it at a temporary directory."""

    run_root: str = "/run/kernelbox"
    lib_root: str = "/var/lib/kernelbox"

    @property
    def run_containers(self) -> str:
        return os.path.join(self.run_root, "containers")

    @property
    def lib_containers(self) -> str:
        return os.path.join(self.lib_root, "containers")


DEFAULT_LAYOUT = Layout()


@dataclass(frozen=True)
class Paths:
    """Every path of one container."""

    name: str
    run_dir: str
    lib_dir: str
    lock_file: str

    @property
    def state_file(self) -> str:
        return os.path.join(self.run_dir, "state.json")

    @property
    def config_file(self) -> str:
        return os.path.join(self.lib_dir, "config.json")

    @property
    def settings_file(self) -> str:
        return os.path.join(self.lib_dir, "container.json")

    @property
    def definition_file(self) -> str:
        return os.path.join(self.lib_dir, "definition.json")

    @property
    def log_file(self) -> str:
        return os.path.join(self.lib_dir, "container.log")

    @property
    def created_file(self) -> str:
        """What launches made in the rootfs (mount targets), to remove with the container."""
        return os.path.join(self.lib_dir, "rootfs-created.json")

    @property
    def etc_dir(self) -> str:
        return os.path.join(self.lib_dir, "etc")


def paths(name: str, layout: Layout = DEFAULT_LAYOUT) -> Paths:
    return Paths(name, os.path.join(layout.run_containers, name), os.path.join(layout.lib_containers, name),
                 os.path.join(layout.run_containers, name + ".lock"))


# --- atomic JSON files ---------------------------------------------------------

def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(directory: str, base: str) -> None:
    """Temp files of writers that died mid-write (their PID is gone): they are never renamed."""
    prefix = "." + base + "."
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            pid = entry[len(prefix):-4]
            if pid.isdigit() and int(pid) != os.getpid() and os.path.exists("/proc/" + pid):
                continue  # a live writer (cannot happen under our single-writer rule, but never race it)
            try:
                os.unlink(os.path.join(directory, entry))
            except FileNotFoundError:
                pass


def write_bytes_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: readers and a SIGKILL see the old or the new file, never a mix."""
    directory, base = os.path.split(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _remove_stale_temps(directory, base)
    temp = os.path.join(directory, ".%s.%d.tmp" % (base, os.getpid()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def write_json_atomic(path: str, data: t.Any, mode: int = 0o600) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: str) -> t.Optional[t.Any]:
    """The parsed file, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # only a file we did not write can be torn
        raise StateError("%s is not valid JSON (%s); it was not written by kernelbox" % (path, exc))


def canonical_json(data: t.Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def digest(config: t.Any) -> str:
    """Content digest of an OCI config: what decides whether a running container is current."""
    return "sha256:" + hashlib.sha256(canonical_json(config)).hexdigest()


# --- locking -------------------------------------------------------------------

class NameLock:
    """An exclusive flock on NAME.lock, safe against the file being removed while waiting.

    ``absent`` unlinks the lock file while holding it.  A waiter that then
    gets the lock holds a file nobody else can find, so after each flock the
    holder checks that the path still names the inode it locked, and retries.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: t.Optional[int] = None

    def acquire(self, timeout: float = 300.0, poll: float = 0.05) -> "NameLock":
        deadline = time.monotonic() + timeout
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise KernelboxError("timed out after %gs waiting for %s, held by %s"
                                                 % (timeout, self.path, _lock_holder(fd)))
                        time.sleep(poll)
                mine = os.fstat(fd)
                try:
                    there = os.stat(self.path)
                except FileNotFoundError:
                    there = None
                if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
                    self.fd, fd = fd, -1
                    return self
            finally:
                if fd >= 0:
                    os.close(fd)

    def release(self, remove: bool = False) -> None:
        """Release; with ``remove`` the file is unlinked first, while still held."""
        if self.fd is None:
            return
        try:
            if remove:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "NameLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: t.Any) -> None:
        self.release()


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        text = ""
    return "PID %s" % text if text.isdigit() else "another process"


def lock(name: str, layout: Layout = DEFAULT_LAYOUT) -> NameLock:
    return NameLock(paths(name, layout).lock_file)


# --- process identity ------------------------------------------------------------

def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        return handle.read().strip()


def read_stat(pid: int) -> t.Optional[procfs.ProcStat]:
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as handle:
            return procfs.parse_proc_stat(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclass(frozen=True)
class ProcessId:
    """A process as PID + start time (clock ticks after boot) + boot id: survives PID reuse."""

    pid: int
    starttime: int
    boot: str = ""

    @classmethod
    def of(cls, pid: int) -> t.Optional["ProcessId"]:
        stat = read_stat(pid)
        return cls(pid, stat.starttime, boot_id()) if stat else None

    def alive(self) -> bool:
        """True while this very process exists and has not exited (a zombie has exited)."""
        if self.boot and self.boot != boot_id():
            return False
        stat = read_stat(self.pid)
        return bool(stat and stat.starttime == self.starttime and stat.state not in ("Z", "X"))

    def pidfd(self) -> t.Optional[int]:
        """A pidfd checked to be this process, or None if it is gone.

        The pidfd is opened *first* and the start time checked *after*: if the
        check passes, the fd refers to our process even if the PID is reused
        a moment later.
        """
        if self.boot and self.boot != boot_id():
            return None
        try:
            fd = libc.pidfd_open(self.pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise
        if self.alive():
            return fd
        os.close(fd)
        return None

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to this process only; False when it no longer exists."""
        fd = self.pidfd()
        if fd is None:
            return False
        try:
            libc.pidfd_send_signal(fd, signum)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return False
            raise
        finally:
            os.close(fd)
        return True


def signal_number(name: t.Union[str, int]) -> int:
    """'SIGTERM', 'TERM', '15' or 15 -> 15."""
    if isinstance(name, int):
        return name
    text = str(name).strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(getattr(signal.Signals, text))
    except AttributeError:
        raise ValueError("%r is not a signal name" % name)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def now_iso() -> str:
    """Wall-clock time, UTC, ISO 8601 with microseconds: what the module returns."""
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).isoformat()


# --- the records -------------------------------------------------------------------

def _from_dict(cls: t.Any, data: t.Mapping[str, t.Any]) -> t.Any:
    """Build a dataclass from JSON, ignoring keys a newer writer added."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def _check_format(data: t.Mapping[str, t.Any], path: str) -> None:
    if data.get("format") != FORMAT:
        raise StateError("%s has state format %r; this kernelbox understands format %d"
                         % (path, data.get("format"), FORMAT))


@dataclass
class Settings:
    """container.json: how the container is run, besides its OCI spec."""

    name: str
    digest: str                                   # sha256 of config.json's canonical JSON
    created_at: str = ""
    enabled: bool = False                         # start at boot
    restart_policy: str = "no"                    # no | on-failure[:N] | always
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    log_max_size: int = 10 << 20                  # bytes; 0 = no cap
    cgroup: t.Dict[str, t.Any] = field(default_factory=dict)  # {"path", "owned", "limits"}
    supervisor: str = "kernelbox"                 # kernelbox | systemd
    format: int = FORMAT

    def to_json(self) -> t.Dict[str, t.Any]:
        return asdict(self)


@dataclass
class Runtime:
    """state.json: what the supervisor knows about the container's process."""

    name: str
    status: str = CREATED
    pid: t.Optional[int] = None                   # host PID of the container's init while it runs
    starttime: t.Optional[int] = None             # its start time in clock ticks after boot
    boot_id: str = ""
    digest: str = ""                              # the config.json digest it was started from
    started_at: t.Optional[str] = None
    exited_at: t.Optional[str] = None
    exit_code: t.Optional[int] = None             # 0-255 when it exited; None if killed by a signal/unknown
    exit_signal: t.Optional[str] = None           # e.g. "SIGKILL" when a signal ended it
    exit_note: t.Optional[str] = None             # why exit_code is unknown, when it is
    restart_count: int = 0
    stop_requested: bool = False                  # a stop was asked for: never undone by a restart
    stop_deadline: t.Optional[float] = None       # CLOCK_MONOTONIC time of the SIGKILL
    next_restart_at: t.Optional[float] = None     # CLOCK_MONOTONIC time of the next restart
    cgroup: t.Optional[str] = None                # absolute cgroup directory of the container
    namespaces: t.Dict[str, int] = field(default_factory=dict)  # type -> inode, as lsns shows them
    supervisor: t.Dict[str, t.Any] = field(default_factory=dict)  # {"kind", "pid", "starttime"}
    error: t.Optional[t.Dict[str, t.Any]] = None  # the last launch failure: {"step", "errno", "msg"}
    format: int = FORMAT

    def record_exit(self, code: t.Optional[int], signum: t.Optional[int], note: t.Optional[str] = None) -> None:
        """The init ended: with exit ``code``, or by signal ``signum`` (exit code 128+N), or unknown (``note``)."""
        self.status = EXITED
        self.exited_at = now_iso()
        self.exit_code = 128 + signum if signum is not None else code
        self.exit_signal = signal_name(signum) if signum is not None else None
        self.exit_note = note

    def process(self) -> t.Optional[ProcessId]:
        if self.pid is None or self.starttime is None:
            return None
        return ProcessId(self.pid, self.starttime, self.boot_id)

    def to_json(self) -> t.Dict[str, t.Any]:
        return asdict(self)


@dataclass
class Container:
    """Everything on disk about one container, as read at one moment."""

    name: str
    paths: Paths
    config: t.Optional[t.Dict[str, t.Any]]
    settings: t.Optional[Settings]
    runtime: t.Optional[Runtime]

    @property
    def exists(self) -> bool:
        return self.settings is not None or self.runtime is not None or self.config is not None

    @property
    def consistent(self) -> bool:
        """config.json matches the digest in container.json (false after a SIGKILL between the two writes)."""
        return bool(self.config is not None and self.settings and digest(self.config) == self.settings.digest)

    def process(self) -> t.Optional[ProcessId]:
        """The init's identity if the runtime state says it runs *and* that very process is alive."""
        if self.runtime is None or self.runtime.status not in (RUNNING, STOPPING, STARTING):
            return None
        proc = self.runtime.process()
        return proc if proc is not None and proc.alive() else None

    def is_running(self) -> bool:
        return self.process() is not None


def load(name: str, layout: Layout = DEFAULT_LAYOUT) -> Container:
    where = paths(name, layout)
    config = read_json(where.config_file)
    raw_settings = read_json(where.settings_file)
    raw_runtime = read_json(where.state_file)
    settings = runtime = None
    if raw_settings is not None:
        _check_format(raw_settings, where.settings_file)
        settings = _from_dict(Settings, raw_settings)
    if raw_runtime is not None:
        _check_format(raw_runtime, where.state_file)
        runtime = _from_dict(Runtime, raw_runtime)
    return Container(name, where, config, settings, runtime)


def list_names(layout: Layout = DEFAULT_LAYOUT) -> t.List[str]:
    """Every container with persistent or runtime state, sorted."""
    names = set()
    for top in (layout.lib_containers, layout.run_containers):
        try:
            for entry in os.listdir(top):
                if not entry.startswith(".") and os.path.isdir(os.path.join(top, entry)):
                    names.add(entry)
        except FileNotFoundError:
            continue
    return sorted(names)


def save_persistent(name: str, config: t.Dict[str, t.Any], settings: Settings,
                    layout: Layout = DEFAULT_LAYOUT) -> None:
    """config.json first, then container.json with its digest: a crash in between is detectable."""
    where = paths(name, layout)
    write_json_atomic(where.config_file, config)
    write_json_atomic(where.settings_file, settings.to_json())


def load_definition(name: str, layout: Layout = DEFAULT_LAYOUT) -> t.Optional[t.Dict[str, t.Any]]:
    """definition.json: the container as the ``container`` module's tasks described it (None: never written)."""
    path = paths(name, layout).definition_file
    data = read_json(path)
    if data is not None:
        _check_format(data, path)
    return data


def save_definition(name: str, record: t.Mapping[str, t.Any], layout: Layout = DEFAULT_LAYOUT) -> None:
    write_json_atomic(paths(name, layout).definition_file, dict(record, format=FORMAT))


def save_settings(name: str, settings: Settings, layout: Layout = DEFAULT_LAYOUT) -> None:
    write_json_atomic(paths(name, layout).settings_file, settings.to_json())


def save_runtime(runtime: Runtime, layout: Layout = DEFAULT_LAYOUT) -> None:
    write_json_atomic(paths(runtime.name, layout).state_file, runtime.to_json())


def note_created(name: str, root: str, created: t.Sequence[str], layout: Layout = DEFAULT_LAYOUT) -> None:
    """Add mount targets a launch made in ``root`` to the container's record (kept across restarts)."""
    if not created:
        return
    record = load_created(name, layout)
    known = list(record["created"]) if record and record.get("root") == root else []
    known += [path for path in created if path not in known]
    write_json_atomic(paths(name, layout).created_file, {"root": root, "created": known})


def load_created(name: str, layout: Layout = DEFAULT_LAYOUT) -> t.Optional[t.Dict[str, t.Any]]:
    record = read_json(paths(name, layout).created_file)
    if not isinstance(record, dict) or not isinstance(record.get("root"), str) \
            or not isinstance(record.get("created"), list):
        return None
    return {"root": record["root"], "created": [p for p in record["created"] if isinstance(p, str)]}


def remove_runtime(name: str, layout: Layout = DEFAULT_LAYOUT) -> None:
    remove_tree(paths(name, layout).run_dir)


def remove_all(name: str, layout: Layout = DEFAULT_LAYOUT) -> None:
    """Remove both state directories (not the lock file: its holder removes it on release)."""
    where = paths(name, layout)
    remove_tree(where.run_dir)
    remove_tree(where.lib_dir)


def remove_tree(path: str) -> None:
    """rm -r without following symlinks and never across a mount; a missing tree is fine.

    A user may have mounted something inside a container's directory (an
    overlay root, a bind mount of host data): removing through it would delete
    what is mounted, so any mount at or below ``path`` stops the removal (a
    mount hidden under another one is not there: its path names another directory).
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts  # only to remove
    top = os.path.normpath(path)
    inside = [m.mount_point for m in mounts.visible_mounts()
              if m.mount_point == top or m.mount_point.startswith(top + "/")]
    if inside:
        raise KernelboxError("refusing to remove %s: %s is mounted inside it; unmount it first (for an overlay "
                             "root: kernelbox.containers.overlay_rootfs state=unmounted)" % (top, inside[0]))
    mounts.remove_tree(top)  # fd-based, never follows a symlink nor crosses a mount
