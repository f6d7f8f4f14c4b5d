# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The device program: rule semantics, and the compiled eBPF run in a small interpreter against them.

The interpreter covers exactly the instructions the compiler emits (u32 loads from
the context, 64-bit register moves, 32-bit AND/RSH with constants, JEQ/JNE with
constants, EXIT); anything else fails the test.  The real kernel runs the same
program in tests/integration/test_oci_launch.py.
"""

import itertools
import struct

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_devices as D
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


def run_program(code: bytes, kind: str, major: int, minor: int, access: str) -> bool:
    ctx = struct.pack("<III", (D._mask(access) << 16) | D.TYPE_CODES[kind], major, minor)
    regs = [0] * 11
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 10000
        op, regbyte, off, imm = struct.unpack_from("<BBhi", code, pc * 8)
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if op == bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W:
            assert src == 1
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_X:
            regs[dst] = regs[src]
        elif op == bpf.BPF_ALU64 | bpf.BPF_MOV | bpf.BPF_K:
            regs[dst] = imm
        elif op == bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif op == bpf.BPF_ALU | bpf.BPF_RSH | bpf.BPF_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == bpf.BPF_JMP | bpf.BPF_JNE | bpf.BPF_K:
            pc += off if regs[dst] != imm else 0
        elif op == bpf.BPF_JMP | bpf.BPF_JEQ | bpf.BPF_K:
            pc += off if regs[dst] == imm else 0
        elif op == bpf.BPF_JMP | bpf.BPF_EXIT:
            return bool(regs[0])
        else:
            raise AssertionError("unexpected opcode %#x" % op)


RULESETS = [
    [D.rule(False)] + list(D.DEFAULT_ALLOWED),                               # runc's and podman's default
    [D.rule(True)],                                                          # everything
    [D.rule(True), D.rule(False, "c", 1, 3, "w")],                           # all but writing /dev/null
    [D.rule(False), D.rule(True, "c", 1, None, "r"), D.rule(True, "b", 8, 0, "rw")],
    [D.rule(True, "c", None, None, "m")],                                    # mknod of any char device only
    [],                                                                      # nothing matches: deny
]
REQUESTS = list(itertools.product(("c", "b"), (1, 5, 8, 136), (0, 3, 7), ("r", "w", "m", "rw", "rwm")))


@pytest.mark.parametrize("rules", RULESETS)
def test_compiled_program_decides_like_the_rules(rules):
    code = D.program(rules)
    for kind, major, minor, access in REQUESTS:
        assert run_program(code, kind, major, minor, access) == D.decide(rules, kind, major, minor, access), \
            (kind, major, minor, access)


def test_last_matching_rule_wins_and_default_deny():
    rules = [D.rule(False)] + list(D.DEFAULT_ALLOWED)
    assert D.decide(rules, "c", 1, 3, "rw")          # /dev/null
    assert D.decide(rules, "c", 136, 4, "rw")        # a pty slave
    assert not D.decide(rules, "b", 8, 0, "r")       # a disk
    assert D.decide(rules, "c", 1, 3, "m")           # the defaults are rwm, as runc's
    assert not D.decide(rules, "b", 8, 0, "m")       # but no mknod-anything rule
    assert not D.decide([], "c", 1, 3, "r")
    partial = [D.rule(True, "c", 1, 3, "r")]
    assert D.decide(partial, "c", 1, 3, "r") and not D.decide(partial, "c", 1, 3, "rw")


def test_an_unconditional_rule_ends_the_program():
    # The verifier refuses unreachable code: nothing is emitted after a rule that matches everything.
    assert len(D.program([D.rule(True, "c", 1, 3), D.rule(False)])) == (7 + 2) * 8


@pytest.mark.parametrize("args, fragment", [
    (("yes",), "allow: must be true or false"),
    ((True, "x"), "type: 'x' is not a, c or b"),
    ((True, "c", -5), "major: -5 is not a device number"),
    ((True, "c", 1, 3, "rx"), "access: 'rx'"),
    ((True, "a", 1), r"type 'a' \(all devices\) cannot name"),
])
def test_rule_validation(args, fragment):
    with pytest.raises(ValidationError, match=fragment):
        D.rule(*args)


def test_rules_are_normalised():
    assert D.rule(True, None, None, None, "mwr") == D.DeviceRule(True, "a", D.ANY, D.ANY, "rwm")
    assert D.rule(False, "c", 1, -1, None).describe() == "deny c 1:* rwm"
