# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what the connection plugin and its helper say to each other.

The plugin (on the controller) runs the helper (``kernelbox-connection.py``
on the container's host, locally or over SSH) once per operation, writes one
request to its stdin and reads one reply from its stdout.  Both are a JSON
header line followed by raw bytes whose lengths the header gives, so output
of any content (a container's stdout is untrusted) can never be mistaken for
the header or for another field::

    request:  {"v": 1, "op": "exec", "container": "web", "argv": [...], ..., "payload": N}\\n  <N bytes>
    reply:    {"v": 1, "ok": true, "rc": 0, "lengths": [A, B, C], ...}\\n  <A stdout><B stderr><C data>

Pure functions: no I/O, no Ansible; unit-tested on their own.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass, field

VERSION = 1
OPERATIONS = ("exec", "put", "fetch", "stage", "discard")
ERRORS = ("no-container", "not-running", "refused", "failed")
MAX_HEADER = 1 << 20  # a header is small; anything longer is not one of ours


class ProtocolError(ValueError):
    """A request or reply that does not follow the protocol."""


@dataclass
class Request:
    op: str                                 # one of OPERATIONS
    container: str = ""
    argv: t.List[str] = field(default_factory=list)   # exec: the command
    user: t.Optional[str] = None            # exec, put, fetch: "UID" or "UID:GID" inside the container
    timeout: t.Optional[float] = None       # exec: seconds, then the command's processes are killed
    output_limit: int = 0                   # exec: bytes kept per stream (0: the helper's default)
    src: t.Optional[str] = None             # put: a host file (None: the payload); fetch: a container path
    dest: t.Optional[str] = None            # put: a container path; fetch: a host file (None: reply or stage)
    mode: int = 0o644                       # put: permission bits of a new file (before the umask)
    size_limit: int = 0                     # fetch: the largest file accepted (0: the helper's default)
    inline_limit: int = 0                   # fetch: up to this size the content comes in the reply
    payload: bytes = b""                    # exec: stdin; put: the content, when src is None


@dataclass
class Reply:
    ok: bool
    error: t.Optional[str] = None           # one of ERRORS when not ok
    msg: str = ""
    rc: t.Optional[int] = None              # exec, put, fetch: the exit code inside (-N: killed by signal N)
    stdout: bytes = b""
    stderr: bytes = b""
    data: bytes = b""                       # fetch: the content, when it came inline
    dropped: t.Dict[str, int] = field(default_factory=dict)   # exec: bytes over the limit, per stream
    staged: t.Optional[str] = None          # fetch: the host file holding the content; stage: a path to use
    size: int = 0                           # fetch: the file's size


def _header(raw: bytes) -> t.Tuple[t.Dict[str, t.Any], bytes]:
    end = raw.find(b"\n", 0, MAX_HEADER)
    if end < 0:
        raise ProtocolError("no header line in the first %d bytes" % min(len(raw), MAX_HEADER))
    try:
        header = json.loads(raw[:end].decode("utf-8"))
    except ValueError as exc:
        raise ProtocolError("the header is not JSON: %s" % exc)
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise ProtocolError("not a version %d header: %.200r" % (VERSION, raw[:end]))
    return header, raw[end + 1:]


def _split(body: bytes, lengths: t.Any, count: int) -> t.List[bytes]:
    if not isinstance(lengths, list) or len(lengths) != count or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths):
        raise ProtocolError("lengths must be %d non-negative integers, not %.200r" % (count, lengths))
    if sum(lengths) != len(body):
        raise ProtocolError("the header announces %d bytes, %d followed" % (sum(lengths), len(body)))
    parts, offset = [], 0
    for length in lengths:
        parts.append(body[offset:offset + length])
        offset += length
    return parts


def encode_request(request: Request) -> bytes:
    header = {"v": VERSION, "op": request.op, "container": request.container, "argv": list(request.argv),
              "user": request.user, "timeout": request.timeout, "output_limit": request.output_limit,
              "src": request.src, "dest": request.dest, "mode": request.mode, "size_limit": request.size_limit,
              "inline_limit": request.inline_limit, "lengths": [len(request.payload)]}
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + request.payload


def _typed(header: t.Dict[str, t.Any], key: str, kinds: t.Tuple[type, ...], default: t.Any) -> t.Any:
    value = header.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise ProtocolError("%s: %.100r is not of type %s" % (key, value, "/".join(k.__name__ for k in kinds)))
    return value


def decode_request(raw: bytes) -> Request:
    header, body = _header(raw)
    op = header.get("op")
    if op not in OPERATIONS:
        raise ProtocolError("op: %.100r is not one of %s" % (op, ", ".join(OPERATIONS)))
    argv = _typed(header, "argv", (list,), [])
    if not all(isinstance(arg, str) for arg in argv):
        raise ProtocolError("argv: every argument must be a string")
    payload, = _split(body, header.get("lengths"), 1)
    limits = {key: _typed(header, key, (int,), 0) for key in ("output_limit", "size_limit", "inline_limit")}
    if any(value < 0 for value in limits.values()):
        raise ProtocolError("limits must not be negative: %s" % limits)
    timeout = _typed(header, "timeout", (int, float), None)
    return Request(op=op, container=_typed(header, "container", (str,), ""), argv=argv,
                   user=_typed(header, "user", (str,), None), timeout=None if timeout is None else float(timeout),
                   src=_typed(header, "src", (str,), None), dest=_typed(header, "dest", (str,), None),
                   mode=_typed(header, "mode", (int,), 0o644) & 0o7777, payload=payload, **limits)


def encode_reply(reply: Reply) -> bytes:
    header = {"v": VERSION, "ok": reply.ok, "error": reply.error, "msg": reply.msg, "rc": reply.rc,
              "dropped": reply.dropped, "staged": reply.staged, "size": reply.size,
              "lengths": [len(reply.stdout), len(reply.stderr), len(reply.data)]}
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + reply.stdout + reply.stderr + reply.data


def decode_reply(raw: bytes) -> Reply:
    header, body = _header(raw)
    stdout, stderr, data = _split(body, header.get("lengths"), 3)
    ok = header.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("ok: %.100r is not a boolean" % (ok,))
    error = header.get("error")
    if not ok and error not in ERRORS:
        raise ProtocolError("error: %.100r is not one of %s" % (error, ", ".join(ERRORS)))
    rc = _typed(header, "rc", (int,), None)
    dropped = _typed(header, "dropped", (dict,), {})
    return Reply(ok=ok, error=None if ok else error, msg=str(header.get("msg") or ""), rc=rc, stdout=stdout,
                 stderr=stderr, data=data,
                 dropped={str(k): v for k, v in dropped.items() if isinstance(v, int) and not isinstance(v, bool)},
                 staged=_typed(header, "staged", (str,), None), size=_typed(header, "size", (int,), 0))
