# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the device cgroup of cgroup v2, an eBPF program per group.

cgroup v2 has no devices.allow file: access to device nodes (open for read or
write, mknod) is decided by BPF_PROG_TYPE_CGROUP_DEVICE programs attached to the
group.  The kernel runs them for every process in the group and its
descendants, on pure and hybrid hosts alike (the check runs before the v1
device controller's).

Rules are the OCI ``linux.resources.devices`` entries (``allow``, ``type`` a/c/b,
``major``, ``minor``, ``access`` from "rwm"), plus ``DEFAULT_ALLOWED``: the
devices every container gets (runc appends the same list after the user's
rules).  **The last rule that matches decides; nothing matching is denied.**
An allow rule matches when it covers every access asked for; a deny rule when
it covers any of them.  ``decide()`` is that meaning in Python (the tests check
the compiled program against it); ``program()`` compiles the rules, last first,
into straight-line eBPF; ``attach()`` loads it and puts it on a group in place
of the programs there before.
"""

from __future__ import annotations

import errno
import os
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

ANY = -1
# include/uapi/linux/bpf.h: BPF_DEVCG_ACC_*, BPF_DEVCG_DEV_*
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
TYPE_CODES = {"b": 1, "c": 2}


@dataclass(frozen=True)
class DeviceRule:
    allow: bool
    kind: str = "a"  # a (all), c (char) or b (block)
    major: int = ANY
    minor: int = ANY
    access: str = "rwm"

    def describe(self) -> str:
        major = "*" if self.major == ANY else str(self.major)
        minor = "*" if self.minor == ANY else str(self.minor)
        return "%s %s %s:%s %s" % ("allow" if self.allow else "deny", self.kind, major, minor, self.access)


def _char(major: int, minor: int) -> DeviceRule:
    return DeviceRule(True, "c", major, minor, "rwm")


# /dev/null, zero, full, random, urandom, tty, console, ptmx and the pty slaves (devpts, major 136).
DEFAULT_ALLOWED = (_char(1, 3), _char(1, 5), _char(1, 7), _char(1, 8), _char(1, 9), _char(5, 0), _char(5, 1),
                   _char(5, 2), _char(136, ANY))


def rule(allow: t.Any, kind: t.Any = None, major: t.Any = None, minor: t.Any = None, access: t.Any = None,
         where: str = "devices") -> DeviceRule:
    """One validated rule; None means 'any' for kind, major and minor, and 'rwm' for access."""
    if not isinstance(allow, bool):
        raise ValidationError("%s.allow: must be true or false, got %r" % (where, allow))
    kind = "a" if kind in (None, "") else kind
    if kind not in ("a", "c", "b"):
        raise ValidationError("%s.type: %r is not a, c or b" % (where, kind))
    numbers = []
    for name, value in (("major", major), ("minor", minor)):
        if value is None or value == ANY:
            numbers.append(ANY)
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 31):
            raise ValidationError("%s.%s: %r is not a device number" % (where, name, value))
        else:
            numbers.append(value)
    access = "rwm" if access in (None, "") else access
    if not isinstance(access, str) or not set(access) <= set("rwm"):
        raise ValidationError("%s.access: %r is not made of r, w and m" % (where, access))
    normal = "".join(c for c in "rwm" if c in access)
    if kind == "a" and numbers != [ANY, ANY]:
        raise ValidationError("%s: type 'a' (all devices) cannot name a major or minor number" % where)
    return DeviceRule(allow, kind, numbers[0], numbers[1], normal)


def _mask(access: str) -> int:
    return sum(ACCESS_BITS[c] for c in access)


def _matches(item: DeviceRule, kind: str, major: int, minor: int, access: str) -> bool:
    if item.kind != "a" and item.kind != kind:
        return False
    if item.major not in (ANY, major) or item.minor not in (ANY, minor):
        return False
    asked, covered = _mask(access), _mask(item.access)
    return (asked & ~covered) == 0 if item.allow else (asked & covered) != 0


def decide(rules: t.Sequence[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    """Whether ``access`` ('r', 'w', 'm' or a mix) to device ``kind`` major:minor is allowed."""
    for item in reversed(rules):
        if _matches(item, kind, major, minor, access):
            return item.allow
    return False


# Registers: r1 ctx (struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}),
# r3 type, r4 access, r5 major, r6 minor, r7 scratch, r0 verdict.
def _prologue() -> t.List[bytes]:
    return [
        bpf.insn(bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W, dst=2, src=1, off=0),
        bpf.insn(bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_X, dst=3, src=2),
        bpf.insn(bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K, dst=3, imm=0xFFFF),
        bpf.insn(bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_X, dst=4, src=2),
        bpf.insn(bpf.BPF_ALU | bpf.BPF_RSH | bpf.BPF_K, dst=4, imm=16),
        bpf.insn(bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W, dst=5, src=1, off=4),
        bpf.insn(bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W, dst=6, src=1, off=8),
    ]


def _unconditional(item: DeviceRule) -> bool:
    """A rule that matches every request (the verifier refuses the code after it as unreachable)."""
    return item.kind == "a" and item.major == ANY and item.minor == ANY and item.access == "rwm"


def _block(item: DeviceRule) -> t.List[bytes]:
    """The checks of one rule; each failing check jumps past the block (to the next rule)."""
    checks: t.List[t.Tuple[int, int, int, int]] = []  # (code, dst, imm, scratch-and-mask or -1)
    if item.kind != "a":
        checks.append((bpf.BPF_JNE, 3, TYPE_CODES[item.kind], -1))
    covered = _mask(item.access)
    if item.allow and covered != 7:
        checks.append((bpf.BPF_JNE, 7, 0, ~covered & 7))  # asks for something not covered: no match
    if not item.allow and covered != 7:
        checks.append((bpf.BPF_JEQ, 7, 0, covered))  # asks for nothing covered: no match
    if item.major != ANY:
        checks.append((bpf.BPF_JNE, 5, item.major, -1))
    if item.minor != ANY:
        checks.append((bpf.BPF_JNE, 6, item.minor, -1))
    body: t.List[t.Tuple[str, t.Any]] = []
    for code, dst, imm, mask in checks:
        if mask >= 0:
            body.append(("insn", bpf.insn(bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_X, dst=7, src=4)))
            body.append(("insn", bpf.insn(bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K, dst=7, imm=mask)))
        body.append(("jump", (code, dst, imm)))
    body.append(("insn", bpf.insn(bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_K, dst=0, imm=1 if item.allow else 0)))
    body.append(("insn", bpf.insn(bpf.BPF_JMP | bpf.BPF_EXIT)))
    out = []
    for index, (kind, value) in enumerate(body):
        if kind == "jump":
            code, dst, imm = value
            out.append(bpf.insn(bpf.BPF_JMP | code | bpf.BPF_K, dst=dst, off=len(body) - index - 1, imm=imm))
        else:
            out.append(value)
    return out


def program(rules: t.Sequence[DeviceRule]) -> bytes:
    """The eBPF program for ``rules`` (last rule first; default deny)."""
    code = _prologue()
    for item in reversed(list(rules)):
        code += _block(item)
        if _unconditional(item):
            return b"".join(code)  # earlier rules can never decide
    code += [bpf.insn(bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_K, dst=0, imm=0), bpf.insn(bpf.BPF_JMP | bpf.BPF_EXIT)]
    return b"".join(code)


def attach(group_path: str, rules: t.Sequence[DeviceRule]) -> int:
    """Put the program for ``rules`` on the cgroup v2 directory ``group_path``; returns its program id.

    Programs already attached there (a previous run's) are detached after the
    new one is in, so the group is never without a filter in between.
    """
    code = program(rules)
    dir_fd = os.open(group_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        before = bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE)
        prog_fd = bpf.prog_load(code, bpf.BPF_PROG_TYPE_CGROUP_DEVICE, bpf.BPF_CGROUP_DEVICE, name="kb_devices")
        try:
            bpf.prog_attach(dir_fd, prog_fd, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
            for prog_id in before:
                _detach_id(dir_fd, prog_id)
            after = [i for i in bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE) if i not in before]
        finally:
            os.close(prog_fd)
    finally:
        os.close(dir_fd)
    if len(after) != 1:
        raise OSError(errno.EIO, "device program on %s: expected one new program, found %r" % (group_path, after))
    return after[0]


def attached(group_path: str) -> t.List[int]:
    """Ids of the device programs attached directly to ``group_path``."""
    dir_fd = os.open(group_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE)
    finally:
        os.close(dir_fd)


def _detach_id(dir_fd: int, prog_id: int) -> None:
    try:
        fd = bpf.prog_fd_by_id(prog_id)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return  # gone meanwhile
        raise
    try:
        bpf.prog_detach(dir_fd, fd, bpf.BPF_CGROUP_DEVICE)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    finally:
        os.close(fd)
