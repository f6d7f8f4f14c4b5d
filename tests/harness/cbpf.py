# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small classic-BPF interpreter for seccomp programs, written from the kernel's rules.

Independent of the compiler under test: it decodes raw ``struct sock_filter``
bytes, applies the checks the kernel makes when a filter is attached
(net/core/filter.c bpf_check_classic, kernel/seccomp.c seccomp_check_filter)
and runs the program over a ``struct seccomp_data`` built here.
"""

import struct

SECCOMP_DATA_SIZE = 64
MAX_INSNS = 4096

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028


class BadProgram(Exception):
    """The kernel would refuse to attach this program."""


def decode(program):
    if len(program) % 8 or not program:
        raise BadProgram("length %d is not a positive multiple of 8" % len(program))
    insns = [struct.unpack_from("<HBBI", program, off) for off in range(0, len(program), 8)]
    if len(insns) > MAX_INSNS:
        raise BadProgram("%d instructions > %d" % (len(insns), MAX_INSNS))
    for pc, (code, jt, jf, k) in enumerate(insns):
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            if code != 0x20:
                raise BadProgram("pc %d: only ld w abs is allowed in seccomp, got %#x" % (pc, code))
            if k % 4 or k >= SECCOMP_DATA_SIZE:
                raise BadProgram("pc %d: load offset %d outside seccomp_data" % (pc, k))
        elif cls == 0x04:  # BPF_ALU, K source only here
            if code not in (0x04, 0x14, 0x24, 0x34, 0x44, 0x54, 0x64, 0x74, 0x84, 0xA4):
                raise BadProgram("pc %d: unsupported alu %#x" % (pc, code))
        elif cls == 0x05:  # BPF_JMP
            if code == 0x05:
                if pc + 1 + k >= len(insns):
                    raise BadProgram("pc %d: ja out of range" % pc)
            elif code in (0x15, 0x25, 0x35, 0x45):
                if pc + 1 + max(jt, jf) >= len(insns):
                    raise BadProgram("pc %d: conditional jump out of range" % pc)
            else:
                raise BadProgram("pc %d: unsupported jump %#x" % (pc, code))
        elif cls == 0x06:  # BPF_RET
            if code != 0x06:
                raise BadProgram("pc %d: only ret k is used, got %#x" % (pc, code))
        else:
            raise BadProgram("pc %d: unsupported class in %#x" % (pc, code))
    if insns[-1][0] & 0x07 != 0x06:
        raise BadProgram("the last instruction must be a return")
    return insns


def seccomp_data(nr, arch=AUDIT_ARCH_X86_64, args=(), ip=0):
    values = list(args) + [0] * (6 - len(args))
    return struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, ip, *[v & 0xFFFFFFFFFFFFFFFF for v in values])


def run(program, nr, arch=AUDIT_ARCH_X86_64, args=(), trace=None):
    """The 32-bit value the program returns for this syscall; ``trace`` collects the pcs run."""
    insns = decode(program) if isinstance(program, (bytes, bytearray)) else program
    data = seccomp_data(nr, arch, args)
    acc = 0
    pc = 0
    steps = 0
    while True:
        code, jt, jf, k = insns[pc]
        if trace is not None:
            trace.append(pc)
        steps += 1
        if steps > len(insns):
            raise BadProgram("loop: classic BPF only jumps forward")
        cls = code & 0x07
        if cls == 0x00:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif cls == 0x04:
            op = code & 0xF0
            if op == 0x00:
                acc = (acc + k) & 0xFFFFFFFF
            elif op == 0x10:
                acc = (acc - k) & 0xFFFFFFFF
            elif op == 0x50:
                acc &= k
            elif op == 0x40:
                acc |= k
            elif op == 0xA0:
                acc ^= k
            elif op == 0x60:
                acc = (acc << k) & 0xFFFFFFFF
            elif op == 0x70:
                acc >>= k
            else:
                raise BadProgram("alu %#x not interpreted" % code)
            pc += 1
        elif cls == 0x05:
            if code == 0x05:
                pc += 1 + k
                continue
            op = code & 0xF0
            taken = {0x10: acc == k, 0x20: acc > k, 0x30: acc >= k, 0x40: bool(acc & k)}[op]
            pc += 1 + (jt if taken else jf)
        else:
            return k


def action(ret):
    """('ALLOW', None), ('ERRNO', 1), ('KILL_PROCESS', None) ... for a returned value."""
    full = ret & 0xFFFF0000
    data = ret & 0xFFFF
    names = {RET_KILL_PROCESS: "KILL_PROCESS", RET_KILL_THREAD: "KILL_THREAD", RET_TRAP: "TRAP",
             RET_ERRNO: "ERRNO", RET_TRACE: "TRACE", RET_LOG: "LOG", RET_ALLOW: "ALLOW"}
    name = names[full]
    return (name, data if name in ("ERRNO", "TRACE") else None)
