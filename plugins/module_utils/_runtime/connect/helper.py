# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the connection plugin's helper on the container's host.

``kernelbox-connection.py`` (in the runtime code copy, see
supervise/materialise.py) runs as root on the host, once per operation of
the ``kernelbox.containers.kernelbox`` connection plugin: it reads one
request from stdin and writes one reply to stdout (connect/protocol.py).

* ``exec``: the command, through exactly the path ``container_exec`` takes
  (exec_request.for_container + execution.run): the container's namespaces,
  user, capabilities, seccomp filter, no_new_privs and cgroup, never more.
  At most ``output_limit`` bytes of each stream are kept; the rest is
  counted, not stored.
* ``put`` / ``fetch``: the same join, but instead of executing a program the
  joined process copies the file (connect/transfer.py), so the file is
  resolved inside the container's root and written or read as the
  container's user.  The host side is a host file: the controller's own file
  when the plugin runs on the container's host, otherwise a file under the
  root-only staging directory that the SSH connection moves (or the reply
  itself, for small files).
* ``stage`` / ``discard``: a path in the staging directory for an upload,
  and removing a staged file once the controller has fetched it.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.connect import protocol, transfer
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import exec_request, execution
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

DEFAULT_OUTPUT_LIMIT = 64 << 20   # per stream of one exec; see docs/connection.md for why
DEFAULT_SIZE_LIMIT = 1 << 30      # the largest file fetch_file accepts
MAX_REQUEST = 512 << 20           # a request carries at most a module payload or a small file
STAGED_PREFIX = "staged-"
STALE_AFTER = 24 * 3600.0


def staging_dir(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.lib_root, "connection")


def main(argv: t.Optional[t.List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        sys.stderr.write("usage: kernelbox-connection.py < request > reply (see connect/protocol.py)\n")
        return 2
    raw = _read_all(sys.stdin.buffer.fileno(), MAX_REQUEST)
    try:
        reply = serve(protocol.decode_request(raw))
    except protocol.ProtocolError as exc:
        reply = protocol.Reply(ok=False, error="refused", msg="bad request: %s" % exc)
    out = sys.stdout.buffer
    out.write(protocol.encode_reply(reply))
    out.flush()
    return 0


def _read_all(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise SystemExit("kernelbox-connection.py: the request is larger than %d bytes" % limit)
        chunks.append(chunk)


def serve(request: protocol.Request, layout: state.Layout = state.DEFAULT_LAYOUT) -> protocol.Reply:
    try:
        if request.op == "stage":
            return protocol.Reply(ok=True, staged=_new_staged_path(layout))
        if request.op == "discard":
            _unlink_staged(request.src, layout)
            return protocol.Reply(ok=True)
    except (OSError, ValueError) as exc:
        return protocol.Reply(ok=False, error="failed", msg="%s: %s" % (request.op, exc))
    try:
        name = validate.container_name(request.container, "container")
        container, target = exec_request.open_container(name, layout)
    except exec_request.NoSuchContainer as exc:
        return protocol.Reply(ok=False, error="no-container", msg=exc.msg)
    except exec_request.NotRunning as exc:
        return protocol.Reply(ok=False, error="not-running", msg=exc.msg)
    except (KernelboxError, OSError, ValueError) as exc:
        return protocol.Reply(ok=False, error="failed", msg="container %s: %s" % (request.container, exc))
    try:
        if request.op == "exec":
            return _exec(container, target, request)
        if request.op == "put":
            return _put(container, target, request, layout)
        return _fetch(container, target, request, layout)
    except execution.ExecError as exc:
        err = exc.result.get("errno")
        # As a shell reports a command it cannot run: 127 when it is missing, 126 otherwise.
        return protocol.Reply(ok=True, rc=127 if err == errno.ENOENT else 126,
                              stderr=("kernelbox: %s\n" % exc.msg).encode())
    except (KernelboxError, OSError, ValueError) as exc:
        return protocol.Reply(ok=False, error="failed", msg="container %s: %s" % (request.container, exc))
    finally:
        target.close()


def _options(request: protocol.Request, argv: t.List[str], **extra: t.Any) -> exec_request.Options:
    uid, gid = _user(request.user)
    return exec_request.Options(argv=argv, uid=uid, gid=gid, **extra)


def _user(value: t.Optional[str]) -> t.Tuple[t.Optional[int], t.Optional[int]]:
    if not value:
        return None, None
    uid_text, sep, gid_text = value.partition(":")
    try:
        uid = int(uid_text, 10)
        gid = int(gid_text, 10) if sep else uid
    except ValueError:
        raise ValueError("remote_user %r must be UID or UID:GID, in numbers (names are not resolved)" % value)
    return uid, gid


def _exec(container: state.Container, target: execution.Target, request: protocol.Request) -> protocol.Reply:
    if not request.argv:
        raise ValueError("exec: no command")
    options = _options(request, request.argv, stdin=request.payload, timeout=request.timeout)
    options.env = _home(container, target, options.uid)
    joined = exec_request.for_container(container, target, options)
    joined.output_limit = request.output_limit or DEFAULT_OUTPUT_LIMIT
    result = execution.run(target, joined)
    dropped = {name: count for name, count in (("stdout", result.stdout_dropped), ("stderr", result.stderr_dropped))
               if count}
    stderr = result.stderr
    if result.timed_out:
        stderr += ("\nkernelbox: killed after %gs (kernelbox_timeout): %d process(es); the container keeps running\n"
                   % (request.timeout, result.killed)).encode()
    return protocol.Reply(ok=True, rc=result.rc, stdout=result.stdout, stderr=stderr, dropped=dropped)


def _home(container: state.Container, target: execution.Target, uid: t.Optional[int]) -> t.Dict[str, str]:
    """HOME for the command, as runc sets it: unless the container's environment has one, the user's home in the
    container's /etc/passwd, else '/'.  Ansible needs it: its temporary directory is ~/.ansible/tmp."""
    process = exec_request.container_spec(container).process
    if any(entry.startswith("HOME=") for entry in process.env):
        return {}
    uid = process.user.uid if uid is None else uid
    root = target.root_fd()
    try:
        passwd = transfer.read_in_root(root, "/etc/passwd")
    finally:
        os.close(root)
    home = transfer.home_of(passwd.decode("utf-8", "replace"), uid) if passwd is not None else None
    return {"HOME": home or "/"}


def _run_inside(container: state.Container, target: execution.Target, request: protocol.Request,
                inside: t.Callable[[int, int, int], int], **fds: t.Any) -> execution.Result:
    """A join that runs ``inside`` (connect/transfer.py) instead of a program; '/' as the cwd."""
    what = "%s %s" % (request.op, request.dest if request.op == "put" else request.src)
    options = _options(request, [what], cwd="/", stdin=fds.pop("stdin", None))
    joined = exec_request.for_container(container, target, options)
    joined.inside = inside
    joined.stdin_fd = fds.pop("stdin_fd", None)
    joined.stdout_fd = fds.pop("stdout_fd", None)
    return execution.run(target, joined)


def _put(container: state.Container, target: execution.Target, request: protocol.Request,
         layout: state.Layout) -> protocol.Reply:
    if not request.dest:
        raise ValueError("put: no destination")
    inside = functools.partial(transfer.receive, _in_root(request.dest), request.mode)
    if request.src is None:
        result = _run_inside(container, target, request, inside, stdin=request.payload)
        return protocol.Reply(ok=True, rc=result.rc, stderr=result.stderr)
    source = os.open(request.src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        result = _run_inside(container, target, request, inside, stdin_fd=source)
    finally:
        os.close(source)
        if _is_staged(request.src, layout):
            _unlink_staged(request.src, layout)
    return protocol.Reply(ok=True, rc=result.rc, stderr=result.stderr)


def _fetch(container: state.Container, target: execution.Target, request: protocol.Request,
           layout: state.Layout) -> protocol.Reply:
    if not request.src:
        raise ValueError("fetch: no source")
    inside = functools.partial(transfer.send, _in_root(request.src), request.size_limit or DEFAULT_SIZE_LIMIT)
    import tempfile  # here: its imports (random, shutil) cost every exec a few ms
    if request.dest is not None:  # the controller's own file (the container runs on it): renamed into place
        sink, path = tempfile.mkstemp(prefix=".kernelbox-fetch-", dir=os.path.dirname(request.dest) or ".")
    else:
        sink, path = _staged_file(layout)
    keep = False
    try:
        result = _run_inside(container, target, request, inside, stdout_fd=sink)
        reply = protocol.Reply(ok=True, rc=result.rc, stderr=result.stderr, size=os.fstat(sink).st_size)
        if result.rc != 0:
            return reply
        if request.dest is not None:
            os.rename(path, request.dest)
            keep = True
        elif reply.size <= request.inline_limit:
            os.lseek(sink, 0, os.SEEK_SET)
            reply.data = _read_all(sink, request.inline_limit)
        else:
            reply.staged, keep = path, True
        return reply
    finally:
        os.close(sink)
        if not keep:
            os.unlink(path)


def _in_root(path: str) -> str:
    """A container path as Ansible gives it; a relative one is taken from '/' (as community.docker does)."""
    if "\0" in path:
        raise ValueError("the path contains a NUL byte")
    return path if path.startswith("/") else "/" + path


# --- the staging directory: root only, for files the SSH connection moves ---------------

def _ensure_staging(layout: state.Layout) -> str:
    directory = staging_dir(layout)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if info.st_uid != 0 or info.st_mode & 0o077 or not os.path.isdir(directory) or os.path.islink(directory):
        raise OSError(errno.EPERM, "the staging directory must be a root-only (0700) directory", directory)
    _remove_stale(directory)
    return directory


def _remove_stale(directory: str) -> None:
    """Staged files a killed controller left behind, after a day."""
    now = time.time()
    for entry in os.listdir(directory):
        if entry.startswith(STAGED_PREFIX):
            try:
                if now - os.lstat(os.path.join(directory, entry)).st_mtime > STALE_AFTER:
                    os.unlink(os.path.join(directory, entry))
            except OSError:
                continue


def _staged_file(layout: state.Layout) -> t.Tuple[int, str]:
    import tempfile
    fd, path = tempfile.mkstemp(prefix=STAGED_PREFIX, dir=_ensure_staging(layout))
    return fd, path


def _new_staged_path(layout: state.Layout) -> str:
    fd, path = _staged_file(layout)
    os.close(fd)
    return path


def _is_staged(path: t.Optional[str], layout: state.Layout) -> bool:
    if not path:
        return False
    directory, name = os.path.split(path)
    return directory == staging_dir(layout) and name.startswith(STAGED_PREFIX) and "/" not in name


def _unlink_staged(path: t.Optional[str], layout: state.Layout) -> None:
    """Remove a staged file, and nothing else: the path must name one directly in the staging directory."""
    if not _is_staged(path, layout):
        raise ValueError("%r is not a staged file" % (path,))
    try:
        os.unlink(t.cast(str, path))
    except FileNotFoundError:
        pass
