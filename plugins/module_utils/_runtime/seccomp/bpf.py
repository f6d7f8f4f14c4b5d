# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a classic-BPF code generator for seccomp filters.

Pure mechanism: it knows nothing about profiles, names or capabilities.  The
caller (seccomp.py) resolves a profile to a ``plan`` per syscall number and
hands it to ``build_program``, which returns ``struct sock_filter[]`` bytes.

Program shape::

    ld  seccomp_data.arch
    jeq AUDIT_ARCH_<native>, +1, +0
    ret <bad arch action>                 ; i386 via int 0x80, arm32 compat, anything foreign
    ld  seccomp_data.nr
    <balanced binary search over number ranges, by jge>
        leaf: ret <action>                ; most syscalls: one fixed outcome
        leaf: ja  <argument block>        ; syscalls whose outcome depends on arguments
    <argument blocks>                     ; rules in order; first full match returns; else default

Number ranges cover all 2**32 values.  On x86_64 every number with bit 30 set
(the x32 ABI) returns the bad-arch action, as libseccomp does when x32 is not
in the filter, so x32 can never bypass rules written for x86_64 numbers.

64-bit argument comparisons are done on both 32-bit halves (cBPF loads 32 bits);
every op below is exact for unsigned 64-bit values.  Conditional jumps reach at
most 255 instructions ahead, so the assembler inserts ``ja`` trampolines where
a target is further away, repeating until every jump fits.
"""

from __future__ import annotations

import struct
import typing as t

# include/uapi/linux/filter.h, include/uapi/linux/bpf_common.h
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20      # BPF_LD | BPF_W | BPF_ABS
BPF_ALU_AND_K = 0x04 | 0x50 | 0x00     # BPF_ALU | BPF_AND | BPF_K
BPF_JMP_JA = 0x05 | 0x00               # BPF_JMP | BPF_JA
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00     # BPF_JMP | BPF_JEQ | BPF_K
BPF_JMP_JGT_K = 0x05 | 0x20 | 0x00
BPF_JMP_JGE_K = 0x05 | 0x30 | 0x00
BPF_RET_K = 0x06 | 0x00
BPF_MAXINSNS = 4096                    # include/uapi/linux/bpf_common.h
_MAX_COND_OFFSET = 255                 # jt/jf are u8

# include/uapi/linux/seccomp.h
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF

# struct seccomp_data (include/uapi/linux/seccomp.h): nr, arch, instruction_pointer, args[6]
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16

# include/uapi/linux/audit.h
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028

X32_SYSCALL_BIT = 0x40000000           # arch/x86/include/uapi/asm/unistd.h __X32_SYSCALL_BIT
NO_SYSCALL = 0xFFFFFFFF                # -1: "skip this syscall", set by a tracer (see below)
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
       "SCMP_CMP_MASKED_EQ")


class Check(t.NamedTuple):
    """One comparison of a 64-bit syscall argument.  MASKED_EQ: (arg & value) == value_two."""

    index: int
    op: str
    value: int
    value_two: int = 0


class Branch(t.NamedTuple):
    """All checks hold -> return ``ret`` (a SECCOMP_RET_* value with its data)."""

    checks: t.Tuple[Check, ...]
    ret: int


# A plan for one syscall number: a fixed return value, or branches tried in order.
Plan = t.Union[int, t.Tuple[Branch, ...]]


class Label:
    """A position in the program, resolved by the assembler."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "Label(%s)" % self.name


Target = t.Optional[Label]   # None: the next instruction


class Assembler:
    """Collects instructions with symbolic forward jumps; ``assemble`` lays them out."""

    def __init__(self) -> None:
        self.items: t.List[t.Union[Label, t.List[t.Any]]] = []

    def place(self, label: Label) -> None:
        self.items.append(label)

    def emit(self, code: int, k: int = 0, jt: Target = None, jf: Target = None) -> None:
        self.items.append([code, jt, jf, k & _U32 if isinstance(k, int) else k])

    def load(self, offset: int) -> None:
        self.emit(BPF_LD_W_ABS, offset)

    def ret(self, value: int) -> None:
        self.emit(BPF_RET_K, value)

    def jump(self, target: Label) -> None:
        self.emit(BPF_JMP_JA, target)   # k holds the label until layout

    def assemble(self) -> bytes:
        """Resolve labels, inserting ``ja`` trampolines for conditional jumps beyond 255."""
        while True:
            positions = self._layout()
            far: t.Dict[int, t.Tuple[int, ...]] = {}
            index = 0
            for item in self.items:
                if isinstance(item, Label):
                    continue
                if item[0] & 0x07 == 0x05 and item[0] != BPF_JMP_JA:
                    slots = tuple(slot for slot in (1, 2) if item[slot] is not None
                                  and positions[id(item[slot])] - index - 1 > _MAX_COND_OFFSET)
                    if slots:
                        far[id(item)] = slots
                index += 1
            if not far:
                return self._encode(positions)
            self._add_trampolines(far)

    def _layout(self) -> t.Dict[int, int]:
        positions: t.Dict[int, int] = {}
        index = 0
        for item in self.items:
            if isinstance(item, Label):
                positions[id(item)] = index
            else:
                index += 1
        return positions

    def _add_trampolines(self, far: t.Dict[int, t.Tuple[int, ...]]) -> None:
        """Point each far target of a conditional jump at an adjacent ``ja`` (32-bit reach)."""
        rebuilt: t.List[t.Union[Label, t.List[t.Any]]] = []
        for item in self.items:
            rebuilt.append(item)
            if isinstance(item, Label) or id(item) not in far:
                continue
            after = Label("after")
            for slot in (1, 2):
                if slot in far[id(item)]:
                    hop = Label("hop")
                    rebuilt.extend([hop, [BPF_JMP_JA, None, None, item[slot]]])
                    item[slot] = hop
                elif item[slot] is None:      # "next instruction" is now a hop: name the old next
                    item[slot] = after
            rebuilt.append(after)
        self.items = rebuilt

    def _encode(self, positions: t.Dict[int, int]) -> bytes:
        out = []
        index = 0
        for item in self.items:
            if isinstance(item, Label):
                continue
            code, jt, jf, k = item
            if code == BPF_JMP_JA:
                k = positions[id(k)] - index - 1 if isinstance(k, Label) else k
                jt = jf = 0
            else:
                jt = 0 if jt is None else positions[id(jt)] - index - 1
                jf = 0 if jf is None else positions[id(jf)] - index - 1
            if min(jt, jf, k) < 0 or max(jt, jf) > _MAX_COND_OFFSET:
                raise AssertionError("unencodable jump at instruction %d" % index)
            out.append(struct.pack("<HBBI", code, jt, jf, k))
            index += 1
        if index > BPF_MAXINSNS:
            raise ValueError("the filter needs %d instructions; the kernel accepts at most %d"
                             % (index, BPF_MAXINSNS))
        return b"".join(out)


def _emit_check(asm: Assembler, check: Check, fail: Label) -> None:
    """Fall through when ``check`` holds for the 64-bit argument; jump to ``fail`` otherwise."""
    low = OFFSET_ARGS + 8 * check.index          # little-endian: low word first
    high = low + 4
    value_hi, value_lo = (check.value >> 32) & _U32, check.value & _U32
    passed = Label("pass")
    op = check.op
    if op == "SCMP_CMP_EQ":
        asm.load(high)
        asm.emit(BPF_JMP_JEQ_K, value_hi, None, fail)
        asm.load(low)
        asm.emit(BPF_JMP_JEQ_K, value_lo, None, fail)
    elif op == "SCMP_CMP_NE":
        asm.load(high)
        asm.emit(BPF_JMP_JEQ_K, value_hi, None, passed)
        asm.load(low)
        asm.emit(BPF_JMP_JEQ_K, value_lo, fail, None)
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        asm.load(high)
        asm.emit(BPF_JMP_JGT_K, value_hi, passed, None)     # high word larger: larger
        asm.emit(BPF_JMP_JEQ_K, value_hi, None, fail)       # high word smaller: smaller
        asm.load(low)
        code = BPF_JMP_JGT_K if op == "SCMP_CMP_GT" else BPF_JMP_JGE_K
        asm.emit(code, value_lo, None, fail)
    elif op in ("SCMP_CMP_LT", "SCMP_CMP_LE"):
        asm.load(high)
        asm.emit(BPF_JMP_JGE_K, value_hi, None, passed)     # high word smaller: smaller
        asm.emit(BPF_JMP_JEQ_K, value_hi, None, fail)       # high word larger: larger
        asm.load(low)
        code = BPF_JMP_JGE_K if op == "SCMP_CMP_LT" else BPF_JMP_JGT_K
        asm.emit(code, value_lo, fail, None)
    elif op == "SCMP_CMP_MASKED_EQ":
        want_hi, want_lo = (check.value_two >> 32) & _U32, check.value_two & _U32
        asm.load(high)
        asm.emit(BPF_ALU_AND_K, value_hi)
        asm.emit(BPF_JMP_JEQ_K, want_hi, None, fail)
        asm.load(low)
        asm.emit(BPF_ALU_AND_K, value_lo)
        asm.emit(BPF_JMP_JEQ_K, want_lo, None, fail)
    else:
        raise ValueError("unknown comparison %r" % op)
    asm.place(passed)


def _emit_tree(asm: Assembler, ranges: t.Sequence[t.Tuple[int, t.Any]], blocks: t.Dict[t.Any, Label]) -> None:
    """Binary search on the syscall number (in A) over contiguous ``(first_nr, outcome)`` ranges."""
    if len(ranges) == 1:
        outcome = ranges[0][1]
        if isinstance(outcome, int):
            asm.ret(outcome)
        else:
            asm.jump(blocks[outcome])
        return
    middle = len(ranges) // 2
    upper = Label("ge %d" % ranges[middle][0])
    asm.emit(BPF_JMP_JGE_K, ranges[middle][0], upper, None)
    _emit_tree(asm, ranges[:middle], blocks)
    asm.place(upper)
    _emit_tree(asm, ranges[middle:], blocks)


def number_ranges(plans: t.Mapping[int, Plan], default_ret: int, enosys_above: t.Optional[int],
                  refuse_x32: bool, bad_arch_ret: int) -> t.List[t.Tuple[int, t.Any]]:
    """Cover 0..2**32-1 with ``(first_nr, outcome)`` ranges; equal neighbours are merged."""
    ranges: t.List[t.Tuple[int, t.Any]] = []

    def add(first: int, outcome: t.Any) -> None:
        if not ranges or ranges[-1][1] != outcome:
            ranges.append((first, outcome))

    top = X32_SYSCALL_BIT if refuse_x32 else NO_SYSCALL
    cursor = 0
    for nr in sorted(plans):
        if nr >= top:
            raise ValueError("syscall number %#x is outside the native range" % nr)
        if nr > cursor:
            add(cursor, default_ret)
        add(nr, plans[nr])
        cursor = nr + 1
    if enosys_above is not None and enosys_above + 1 < top:
        if enosys_above + 1 > cursor:
            add(cursor, default_ret)
        # Numbers newer than any the profile names: ENOSYS, so libc falls back (runc does the same).
        cursor = max(cursor, enosys_above + 1)
        add(cursor, SECCOMP_RET_ERRNO | 38)
    elif cursor < top:
        add(cursor, default_ret)
    if refuse_x32:
        add(X32_SYSCALL_BIT, bad_arch_ret)
    # nr == -1 is how a tracer skips a syscall; seccomp sees it again after the tracer, and the
    # kernel then runs nothing.  Allowing it keeps the tracer's chosen return value intact.
    add(NO_SYSCALL, SECCOMP_RET_ALLOW)
    return ranges


def build_program(audit_arch: int, plans: t.Mapping[int, Plan], default_ret: int, bad_arch_ret: int,
                  refuse_x32: bool = False, enosys_above: t.Optional[int] = None) -> bytes:
    """Compile resolved plans to ``struct sock_filter[]`` bytes (little-endian arches only)."""
    asm = Assembler()
    native = Label("native")
    asm.load(OFFSET_ARCH)
    asm.emit(BPF_JMP_JEQ_K, audit_arch, native, None)
    asm.ret(bad_arch_ret)
    asm.place(native)
    asm.load(OFFSET_NR)
    blocks: t.Dict[t.Any, Label] = {}
    for plan in plans.values():
        if not isinstance(plan, int) and plan not in blocks:
            blocks[plan] = Label("block")
    _emit_tree(asm, number_ranges(plans, default_ret, enosys_above, refuse_x32, bad_arch_ret), blocks)
    for plan, label in blocks.items():
        asm.place(label)
        for branch in plan:
            next_branch = Label("next")
            for check in branch.checks:
                _emit_check(asm, check, next_branch)
            asm.ret(branch.ret)
            asm.place(next_branch)
        asm.ret(default_ret)
    return asm.assemble()


def instructions(program: bytes) -> t.List[t.Tuple[int, int, int, int]]:
    """Decode ``struct sock_filter[]`` bytes into ``(code, jt, jf, k)`` tuples."""
    if len(program) % 8:
        raise ValueError("a BPF program is a whole number of 8-byte instructions, got %d bytes" % len(program))
    return [struct.unpack_from("<HBBI", program, offset) for offset in range(0, len(program), 8)]
