# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the bpf(2) calls a cgroup device program needs, with ctypes.

Mechanism only: ``insn()`` encodes one eBPF instruction, ``prog_load()`` loads a
program and returns its fd, ``prog_attach()``, ``prog_detach()`` and
``prog_query()`` manage the programs attached to a cgroup directory fd.  The
``union bpf_attr`` layouts and constants are from include/uapi/linux/bpf.h.
"""

from __future__ import annotations

import ctypes
import struct
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

# commands
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_QUERY = 16
BPF_PROG_GET_FD_BY_ID = 13

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 2

# instruction classes and fields
BPF_LDX, BPF_ALU, BPF_JMP, BPF_ALU64 = 0x01, 0x04, 0x05, 0x07
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JEQ, BPF_JNE, BPF_JSET, BPF_EXIT = 0x10, 0x50, 0x40, 0x90

_ATTR_SIZE = 128  # larger than every layout used here; the kernel reads what it knows, the rest is zero
_LOG_SIZE = 65536


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """struct bpf_insn: u8 code, u8 dst_reg:4 src_reg:4, s16 off, s32 imm (little-endian registers nibbles)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _call(command: int, attr: ctypes.Array, what: str) -> int:
    return libc.syscall("bpf", ctypes.c_int(command), ctypes.byref(attr), ctypes.c_uint(_ATTR_SIZE), context=what)


def prog_load(program: bytes, prog_type: int, expected_attach_type: int, name: str = "") -> int:
    """Load ``program`` (concatenated instructions); returns the program fd (close-on-exec).

    A verifier rejection raises OSError whose message carries the verifier's log.
    """
    code = ctypes.create_string_buffer(program, len(program))
    license_text = ctypes.create_string_buffer(b"GPL")
    what = "load %s" % (name or "bpf program")

    def load(log: t.Optional[ctypes.Array]) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQIIQII16sII", attr, 0, prog_type, len(program) // 8, ctypes.addressof(code),
                         ctypes.addressof(license_text), 1 if log is not None else 0,
                         _LOG_SIZE if log is not None else 0, ctypes.addressof(log) if log is not None else 0,
                         0, 0, name.encode()[:15], 0, expected_attach_type)
        return _call(BPF_PROG_LOAD, attr, what)

    try:
        return load(None)
    except OSError as exc:
        if exc.errno not in (13, 22):  # EACCES, EINVAL: the verifier's log says why
            raise
    log = ctypes.create_string_buffer(_LOG_SIZE)
    try:
        return load(log)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip()
        raise OSError(exc.errno, "%s failed: %s; verifier: %s" % (what, exc.strerror, detail[-500:] or "-"))


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, target_fd, prog_fd, attach_type, flags)
    _call(BPF_PROG_ATTACH, attr, "attach")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<III", attr, 0, target_fd, prog_fd, attach_type)
    _call(BPF_PROG_DETACH, attr, "detach")


def prog_query(target_fd: int, attach_type: int, capacity: int = 64) -> t.List[int]:
    """The ids of the programs attached directly to ``target_fd`` for ``attach_type``."""
    ids = (ctypes.c_uint32 * capacity)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIIQI", attr, 0, target_fd, attach_type, 0, 0, ctypes.addressof(ids), capacity)
    _call(BPF_PROG_QUERY, attr, "query")
    count = struct.unpack_from("<I", attr, 24)[0]
    return [ids[i] for i in range(min(count, capacity))]


def prog_fd_by_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _call(BPF_PROG_GET_FD_BY_ID, attr, "program %d" % prog_id)
