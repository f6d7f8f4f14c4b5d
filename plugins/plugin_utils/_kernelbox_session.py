# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the controller side of the kernelbox connection plugin.

A ``Session`` sends one request per operation to the helper on the
container's host (``kernelbox-connection.py``, module_utils/_runtime/connect)
through a ``Hop``: ``LocalHop`` runs it on the controller (the container runs
here), ``SshHop`` runs it over an ``ansible.builtin.ssh`` connection to the
host.  The helper lives in the runtime code copy,
``/var/lib/kernelbox/runtime/<digest>/``, the same content-addressed copy the
supervisor runs from (supervise/materialise.py).  The first request to a host
without this code's copy gets "missing" back from a shell test; the session
then sends the copy as a zip and has the host run ``materialise`` from it,
which writes the very same directory, and asks again.

The digest names the code; computing it walks the code's imports (about half a
second), so it is cached on disk, keyed by the size and mtime of every file of
module_utils: each task (a fresh worker process) pays a few stats.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import tempfile
import typing as t
import zipfile

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.connect import protocol

RUNTIME_ROOT = "/var/lib/kernelbox/runtime"     # materialise.runtime_root() of the default layout
HELPER_SCRIPT = "kernelbox-connection.py"      # materialise.ENTRIES
MISSING = b"kernelbox-connection: missing\n"
MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
INSTALL = r"""
import os, sys, tempfile
data = sys.stdin.buffer.read()
fd, path = tempfile.mkstemp(prefix="kernelbox-code-", suffix=".zip")
try:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
    sys.path.insert(0, path)
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
    print(materialise.materialise(point_current=False))
finally:
    os.unlink(path)
"""
# fetch_file exit codes of the helper's transfer (connect/transfer.py)
_FETCH_MISSING = 2
_TOO_LARGE = 4


class Hop:
    """Where the helper runs: ``run`` a shell command there, and move files to and from it."""

    name = "localhost"
    local = True

    def run(self, command: str, stdin: bytes) -> t.Tuple[int, bytes, bytes]:
        raise NotImplementedError

    def put(self, local: str, remote: str) -> None:
        raise NotImplementedError

    def fetch(self, remote: str, local: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalHop(Hop):
    """The container runs on the controller: the helper is a child process (the controller must be root)."""

    def run(self, command: str, stdin: bytes) -> t.Tuple[int, bytes, bytes]:
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            stdout, stderr = process.communicate(stdin)
        except BaseException:
            # Interrupted (a task timeout, ^C): the helper kills what it started on SIGTERM.
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        return process.returncode, stdout, stderr


class SshHop(Hop):
    """The container runs on another host: ``ansible.builtin.ssh`` to it, as root."""

    local = False

    def __init__(self, ssh: t.Any, name: str) -> None:
        self.ssh = ssh
        self.name = name

    def run(self, command: str, stdin: bytes) -> t.Tuple[int, bytes, bytes]:
        return self.ssh.exec_command(command, in_data=stdin, sudoable=False)

    def put(self, local: str, remote: str) -> None:
        self.ssh.put_file(local, remote)

    def fetch(self, remote: str, local: str) -> None:
        self.ssh.fetch_file(remote, local)

    def close(self) -> None:
        self.ssh.close()


# --- the code copy's identity ------------------------------------------------------------

def _source_key(root: str = MODULE_UTILS) -> str:
    """A key that changes whenever a file of module_utils does (path, size, mtime)."""
    hasher = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                info = os.stat(os.path.join(directory, name))
                hasher.update(("%s %d %d\n" % (os.path.relpath(os.path.join(directory, name), root), info.st_size,
                                               info.st_mtime_ns)).encode())
    return hasher.hexdigest()[:24]


def _code_files() -> t.Dict[str, bytes]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
    return materialise.code_files()


def _digest_of(files: t.Mapping[str, bytes]) -> str:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
    return materialise.code_digest(files)


def code_digest(cache_dir: t.Optional[str]) -> str:
    """The digest of the code copy this controller's collection makes (materialise.code_digest)."""
    path = os.path.join(cache_dir, "kernelbox-code-%s" % _source_key()) if cache_dir else None
    if path is not None:
        try:
            with open(path, encoding="ascii") as handle:
                cached = handle.read().strip()
            if len(cached) == 16 and all(c in "0123456789abcdef" for c in cached):
                return cached
        except OSError:
            pass
    digest = _digest_of(_code_files())
    if path is not None:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=cache_dir, prefix=".kernelbox-code-")
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(digest + "\n")
            os.replace(temp, path)
        except OSError:
            pass  # no cache: slower, not wrong
    return digest


def code_zip() -> t.Tuple[str, bytes]:
    """The code copy as a zip (for INSTALL), and its digest."""
    files = _code_files()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), files[name])
    return _digest_of(files), buffer.getvalue()


# --- the session ---------------------------------------------------------------------------

class Session:
    """Requests to the helper for one container, over one hop."""

    def __init__(self, hop: Hop, container: str, python: str, digest: str) -> None:
        self.hop = hop
        self.container = container
        self.python = python
        self.digest = digest
        self.entry = "%s/%s/%s" % (RUNTIME_ROOT, digest, HELPER_SCRIPT)

    def _command(self) -> str:
        entry, python = shlex.quote(self.entry), shlex.quote(self.python)
        return "if [ -f %s ]; then exec %s -I -S %s; else printf '%%s\\n' %s; fi" % (
            entry, python, entry, shlex.quote(MISSING.decode().strip()))

    def call(self, request: protocol.Request) -> protocol.Reply:
        request.container = self.container
        raw = protocol.encode_request(request)
        rc, stdout, stderr = self.hop.run(self._command(), raw)
        if rc == 0 and stdout == MISSING:
            self.install()
            rc, stdout, stderr = self.hop.run(self._command(), raw)
        if rc != 0 or not stdout:
            raise AnsibleConnectionFailure(self._helper_failure(rc, stdout, stderr))
        try:
            reply = protocol.decode_reply(stdout)
        except protocol.ProtocolError as exc:
            raise AnsibleConnectionFailure("kernelbox: the helper on %s answered something else (%s): %s"
                                           % (self.hop.name, exc, _text(stdout + stderr)))
        if not reply.ok:
            raise AnsibleConnectionFailure("kernelbox: %s" % reply.msg if reply.error != "failed"
                                           else "kernelbox: on %s: %s" % (self.hop.name, reply.msg))
        return reply

    def _helper_failure(self, rc: int, stdout: bytes, stderr: bytes) -> str:
        text = _text(stderr or stdout)
        if rc == 127:
            return ("kernelbox: cannot run %s on %s (set kernelbox_host_python to the host's Python 3): %s"
                    % (self.python, self.hop.name, text))
        return "kernelbox: the helper failed on %s (rc %d): %s" % (self.hop.name, rc, text)

    def install(self) -> None:
        """Put the code copy on the host: the host's own materialise writes it from a zip of this code."""
        digest, payload = code_zip()
        command = "%s -I -S -c %s" % (shlex.quote(self.python), shlex.quote(INSTALL))
        rc, stdout, stderr = self.hop.run(command, payload)
        written = _text(stdout).strip()
        if rc != 0:
            raise AnsibleConnectionFailure("kernelbox: installing the helper on %s failed (rc %d): %s"
                                           % (self.hop.name, rc, _text(stderr or stdout)))
        if os.path.basename(written) != self.digest or digest != self.digest:
            raise AnsibleConnectionFailure("kernelbox: the helper installed on %s is %s, expected %s"
                                           % (self.hop.name, written, self.digest))

    # --- the operations ---

    def exec(self, argv: t.List[str], stdin: t.Optional[bytes], user: t.Optional[str], timeout: t.Optional[float],
             output_limit: int) -> protocol.Reply:
        return self.call(protocol.Request(op="exec", argv=argv, payload=stdin or b"", user=user, timeout=timeout,
                                          output_limit=output_limit))

    def put(self, local: str, remote: str, user: t.Optional[str], inline_limit: int) -> None:
        try:
            info = os.stat(local)
        except OSError as exc:
            raise AnsibleFileNotFound("kernelbox: file or module does not exist: %s (%s)" % (local, exc.strerror))
        mode = 0o755 if info.st_mode & 0o111 else 0o644
        request = protocol.Request(op="put", dest=remote, user=user, mode=mode)
        if self.hop.local:
            request.src = local
        elif info.st_size <= inline_limit:
            with open(local, "rb") as handle:
                request.payload = handle.read()
        else:
            request.src = self.call(protocol.Request(op="stage")).staged
            try:
                self.hop.put(local, t.cast(str, request.src))
            except BaseException:
                self._discard(request.src)
                raise
        reply = self.call(request)
        if reply.rc != 0:
            raise AnsibleError("kernelbox: failed to put %s into %s:%s: %s"
                               % (local, self.container, remote, _text(reply.stderr)))

    def fetch(self, remote: str, local: str, user: t.Optional[str], size_limit: int, inline_limit: int) -> None:
        request = protocol.Request(op="fetch", src=remote, user=user, size_limit=size_limit,
                                   inline_limit=inline_limit)
        if self.hop.local:
            request.dest = local
        reply = self.call(request)
        if reply.rc == _FETCH_MISSING:
            raise AnsibleFileNotFound("kernelbox: %s:%s: %s" % (self.container, remote, _text(reply.stderr)))
        if reply.rc != 0:
            raise AnsibleError("kernelbox: failed to fetch %s:%s%s: %s"
                               % (self.container, remote, " (kernelbox_fetch_limit)" if reply.rc == _TOO_LARGE else "",
                                  _text(reply.stderr)))
        if self.hop.local:
            return
        if reply.staged is None:
            with open(local, "wb") as handle:
                handle.write(reply.data)
            return
        try:
            self.hop.fetch(reply.staged, local)
        finally:
            self._discard(reply.staged)

    def _discard(self, staged: t.Optional[str]) -> None:
        try:
            self.call(protocol.Request(op="discard", src=staged))
        except AnsibleError:
            pass  # the helper removes staged files after a day anyway

    def close(self) -> None:
        self.hop.close()


def _text(data: bytes, limit: int = 4000) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "... (%d more characters)" % (len(text) - limit)
