# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: run a function in a forked child.

Work that must change namespace (unshare, setns into a mount namespace) runs
in a child so the module process never leaves its own namespaces.  The result
or the error comes back over a pipe as JSON data, never as a pickle.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import time
import typing as t


class ChildError(Exception):
    """The child failed with something other than OSError."""


def call_in_child(func: t.Callable[[], t.Any], timeout: t.Optional[float] = None) -> t.Any:
    """Run ``func()`` in a forked child and return its JSON-able result.

    An ``OSError`` in the child is raised again here with its errno, message
    and filename; any other exception becomes ``ChildError`` with its text.
    With ``timeout`` a child that has not answered in time is killed and
    OSError(ETIMEDOUT) is raised: work on a filesystem someone else controls
    must not hold the caller without bound.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_end)
            try:
                payload = {"ok": func()}
            except OSError as exc:
                payload = {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
                status = 1
            except BaseException as exc:  # the child must never unwind into the caller's code
                payload = {"error": "%s: %s" % (type(exc).__name__, exc)}
                status = 1
            data = json.dumps(payload).encode()
            view = memoryview(data)
            while view:
                written = os.write(write_end, view)
                view = view[written:]
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    deadline = None if timeout is None else time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as reader:
        while True:
            if deadline is not None and not select.select([reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise OSError(errno.ETIMEDOUT, "the child process did not answer within %gs" % timeout)
            chunk = reader.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    _pid, wait_status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if not raw:
        raise ChildError("child process died without a result (wait status %d)" % wait_status)
    payload = json.loads(raw.decode())
    if "ok" in payload:
        return payload["ok"]
    if "errno" in payload:
        raise OSError(payload["errno"], payload["strerror"], payload["filename"])
    raise ChildError(payload["error"])
