# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cBPF compiler, run by an independent interpreter (tests/harness/cbpf.py) over synthetic seccomp_data."""

import random

import pytest

from harness import cbpf

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp, bpf as seccomp_bpf
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp.syscall_table import AARCH64, X86_64
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

U64 = 2 ** 64 - 1


def profile(rules, default="SCMP_ACT_ALLOW", **extra):
    data = {"defaultAction": default, "syscalls": rules}
    data.update(extra)
    return seccomp.from_oci(data)


def decide(program, name, args=(), arch="x86_64"):
    table, audit = (X86_64, cbpf.AUDIT_ARCH_X86_64) if arch == "x86_64" else (AARCH64, cbpf.AUDIT_ARCH_AARCH64)
    return cbpf.action(cbpf.run(program, table[name], audit, args))


def test_program_passes_the_kernels_attach_checks():
    program = seccomp.compile_profile(profile([{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]))
    insns = cbpf.decode(program)
    assert insns[0] == (0x20, 0, 0, 4)              # ld seccomp_data.arch comes first
    assert insns[1][0] == 0x15 and insns[1][3] == cbpf.AUDIT_ARCH_X86_64


@pytest.mark.parametrize("arch", [cbpf.AUDIT_ARCH_I386, cbpf.AUDIT_ARCH_ARM, cbpf.AUDIT_ARCH_AARCH64, 0, 0xFFFFFFFF])
def test_foreign_arch_is_killed_even_with_default_allow(arch):
    program = seccomp.compile_profile(profile([{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]))
    for nr in (0, 20, 39, 165, 0x40000000):
        assert cbpf.action(cbpf.run(program, nr, arch)) == ("KILL_PROCESS", None)


def test_x32_numbers_are_killed_and_minus_one_is_let_through():
    program = seccomp.compile_profile(profile([{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]))
    for nr in (0x40000000, 0x40000000 | 39, 0x40000000 | 165, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE):
        assert cbpf.action(cbpf.run(program, nr)) == ("KILL_PROCESS", None), hex(nr)
    assert cbpf.action(cbpf.run(program, 0xFFFFFFFF)) == ("ALLOW", None)
    assert decide(program, "getpid") == ("ERRNO", 1)
    assert decide(program, "getppid") == ("ALLOW", None)


def test_aarch64_has_no_x32_range_and_checks_its_own_arch():
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
    program = seccomp.compile_profile(profile(rules), arch="aarch64")
    assert decide(program, "getpid", arch="aarch64") == ("ERRNO", 42)
    assert AARCH64["getpid"] == 172
    assert cbpf.action(cbpf.run(program, 0x40000000 | 172, cbpf.AUDIT_ARCH_AARCH64)) == ("ALLOW", None)
    assert cbpf.action(cbpf.run(program, 172, cbpf.AUDIT_ARCH_X86_64)) == ("KILL_PROCESS", None)
    assert cbpf.action(cbpf.run(program, 172, cbpf.AUDIT_ARCH_ARM)) == ("KILL_PROCESS", None)


def test_every_action_encodes_as_the_kernel_expects():
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_KILL"},
             {"names": ["getppid"], "action": "SCMP_ACT_KILL_THREAD"},
             {"names": ["gettid"], "action": "SCMP_ACT_KILL_PROCESS"},
             {"names": ["getuid"], "action": "SCMP_ACT_TRAP"},
             {"names": ["geteuid"], "action": "SCMP_ACT_ERRNO"},
             {"names": ["getgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4095},
             {"names": ["getegid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
             {"names": ["getpgrp"], "action": "SCMP_ACT_LOG"}]
    program = seccomp.compile_profile(profile(rules, default="SCMP_ACT_ERRNO", defaultErrnoRet=13))
    assert decide(program, "getpid") == ("KILL_THREAD", None)
    assert decide(program, "getppid") == ("KILL_THREAD", None)
    assert decide(program, "gettid") == ("KILL_PROCESS", None)
    assert decide(program, "getuid") == ("TRAP", None)
    assert decide(program, "geteuid") == ("ERRNO", 1)         # errnoRet defaults to EPERM
    assert decide(program, "getgid") == ("ERRNO", 4095)
    assert decide(program, "getegid") == ("TRACE", 7)
    assert decide(program, "getpgrp") == ("LOG", None)
    assert decide(program, "read") == ("ERRNO", 13)            # defaultErrnoRet


# --- 64-bit argument comparisons ----------------------------------------------

REFERENCE = {
    "SCMP_CMP_EQ": lambda arg, value, two: arg == value,
    "SCMP_CMP_NE": lambda arg, value, two: arg != value,
    "SCMP_CMP_LT": lambda arg, value, two: arg < value,
    "SCMP_CMP_LE": lambda arg, value, two: arg <= value,
    "SCMP_CMP_GT": lambda arg, value, two: arg > value,
    "SCMP_CMP_GE": lambda arg, value, two: arg >= value,
    "SCMP_CMP_MASKED_EQ": lambda arg, mask, two: arg & mask == two,
}

# Values that differ only in the high word, only in the low word, at the 32-bit edges, and at 0 / max.
EDGES = [0, 1, 2, 0xFFFFFFFE, 0xFFFFFFFF, 0x100000000, 0x100000001, 0x1FFFFFFFF, 0x200000000, 0x7FFFFFFFFFFFFFFF,
         0x8000000000000000, 0xFFFFFFFF00000000, 0xFFFFFFFF00000001, U64 - 1, U64, 0x123456789, 0x123456788,
         0x223456789, 0x023456789]


def _ops_program(op, value, value_two=0, index=3):
    rule = {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
            "args": [{"index": index, "value": value, "valueTwo": value_two, "op": op}]}
    return seccomp.compile_profile(profile([rule]))


@pytest.mark.parametrize("op", sorted(REFERENCE))
def test_comparisons_on_both_halves_at_the_edges(op):
    for value in EDGES:
        program = _ops_program(op, value, value_two=value & 0xF0000000F)
        for arg in EDGES:
            args = [0, 0, 0, arg]
            expected = REFERENCE[op](arg, value, value & 0xF0000000F)
            got = decide(program, "getpid", args) == ("ERRNO", 99)
            assert got == expected, "%s arg=%#x value=%#x" % (op, arg, value)


@pytest.mark.parametrize("op", sorted(REFERENCE))
def test_comparisons_random(op):
    rng = random.Random(op)
    for _profile in range(40):
        value = rng.choice([rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(32) << 32])
        two = rng.getrandbits(64) & value if rng.random() < 0.7 else rng.getrandbits(64)
        program = _ops_program(op, value, two, index=rng.randrange(6))
        index = cbpf.decode(program)
        for _case in range(40):
            arg = rng.choice([value, value + 1, value - 1, value ^ (1 << 32), value ^ 1, rng.getrandbits(64),
                              value | rng.getrandbits(64)]) & U64
            slot = [rng.getrandbits(64) for _slot in range(6)]
            rule_index = _rule_index(program)
            slot[rule_index] = arg
            got = cbpf.action(cbpf.run(index, X86_64["getpid"], cbpf.AUDIT_ARCH_X86_64, slot)) == ("ERRNO", 99)
            assert got == REFERENCE[op](arg, value, two), "%s arg=%#x value=%#x two=%#x" % (op, arg, value, two)


def _rule_index(program):
    """The argument index the program loads (16 + 8 * index for the low word)."""
    offsets = set(k for code, _jt, _jf, k in cbpf.decode(program) if code == 0x20 and k >= 16)
    return (min(offsets) - 16) // 8


def test_rule_with_several_args_needs_all_of_them():
    rule = {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5, "args": [
        {"index": 0, "value": 7, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 0x100000000, "op": "SCMP_CMP_GE"},
        {"index": 5, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]}
    program = seccomp.compile_profile(profile([rule]))
    assert decide(program, "getpid", [7, 0x100000000, 0, 0, 0, 0x1F]) == ("ERRNO", 5)
    assert decide(program, "getpid", [7, 0xFFFFFFFF, 0, 0, 0, 0x1F]) == ("ALLOW", None)
    assert decide(program, "getpid", [8, 0x100000000, 0, 0, 0, 0x1F]) == ("ALLOW", None)
    assert decide(program, "getpid", [7, 0x100000000, 0, 0, 0, 0x2F]) == ("ALLOW", None)


def test_first_matching_rule_wins_and_unconditional_rule_overrides():
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 10,
              "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_LT"}]},
             {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 20,
              "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_LT"}]},
             {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30,
              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
             {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 40}]
    program = seccomp.compile_profile(profile(rules))
    assert decide(program, "getpid", [1]) == ("ERRNO", 10)
    assert decide(program, "getpid", [4]) == ("ERRNO", 10)
    assert decide(program, "getpid", [9]) == ("ALLOW", None)
    assert decide(program, "getppid", [1]) == ("ERRNO", 40)
    assert decide(program, "getppid", [2]) == ("ERRNO", 40)


def test_rules_equal_to_the_default_are_dropped_as_runc_does():
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
             {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_LT"}]}]
    program = seccomp.compile_profile(profile(rules, default="SCMP_ACT_ERRNO"))
    assert decide(program, "getpid", [1]) == ("ALLOW", None)
    assert decide(program, "getpid", [7]) == ("ERRNO", 1)


def test_conflicting_unconditional_rules_keep_the_first_as_libseccomp():
    """podman's profile allows setns, then lists it again under ERRNO: libseccomp (runc, crun) keeps the first."""
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}, {"names": ["getpid"], "action": "SCMP_ACT_KILL"}]
    program = seccomp.compile_profile(profile(rules))
    assert decide(program, "getpid") == ("ERRNO", 1)
    assert any("getpid (SCMP_ACT_ERRNO kept, SCMP_ACT_KILL ignored)" in note
               for note in seccomp.compile_notes(profile(rules), "x86_64"))


def test_same_unconditional_rule_twice_is_fine():
    rules = [{"names": ["getpid", "getppid"], "action": "SCMP_ACT_ERRNO"}, {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]
    program = seccomp.compile_profile(profile(rules))
    assert decide(program, "getpid") == decide(program, "getppid") == ("ERRNO", 1)


def test_numbers_above_the_profile_return_enosys_unless_default_allows():
    allow_list = profile([{"names": ["read", "write", "openat"], "action": "SCMP_ACT_ALLOW"}], default="SCMP_ACT_ERRNO")
    program = seccomp.compile_profile(allow_list)
    assert decide(program, "openat") == ("ALLOW", None)                      # 257, the highest named
    assert decide(program, "close") == ("ERRNO", 1)                          # below it: default
    assert decide(program, "clone3") == ("ERRNO", 38)                        # above it: ENOSYS
    assert cbpf.action(cbpf.run(program, 0x3FFFFFFF)) == ("ERRNO", 38)
    deny_list = profile([{"names": ["read"], "action": "SCMP_ACT_ERRNO"}], default="SCMP_ACT_ALLOW")
    program = seccomp.compile_profile(deny_list)
    assert decide(program, "clone3") == ("ALLOW", None)
    assert cbpf.action(cbpf.run(program, 999)) == ("ALLOW", None)


def test_unknown_names_are_skipped_with_a_note():
    rules = [{"names": ["getpid", "chown32", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]
    prof = profile(rules, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    program = seccomp.compile_profile(prof)
    assert decide(program, "getpid") == ("ERRNO", 1)
    notes = seccomp.compile_notes(prof)
    assert any("chown32" in note and "x86_64 does not have" in note for note in notes)
    assert any("no_such_call" in note and "unknown" in note for note in notes)
    assert any("SCMP_ARCH_X86 not compiled" in note for note in notes)


# --- long programs ----------------------------------------------------------------

def test_assembler_chains_far_conditional_jumps():
    asm = seccomp_bpf.Assembler()
    far = seccomp_bpf.Label("far")
    asm.load(seccomp_bpf.OFFSET_NR)
    asm.emit(seccomp_bpf.BPF_JMP_JEQ_K, 7, far, None)
    for _filler in range(600):
        asm.ret(seccomp_bpf.SECCOMP_RET_ERRNO | 1)
    asm.place(far)
    asm.ret(seccomp_bpf.SECCOMP_RET_ALLOW)
    program = asm.assemble()
    insns = cbpf.decode(program)
    assert len(insns) == 604                   # one trampoline added
    assert insns[1][1] == 0 and insns[2][0] == 0x05
    assert cbpf.run(program, 7) == seccomp_bpf.SECCOMP_RET_ALLOW
    assert cbpf.run(program, 8) == seccomp_bpf.SECCOMP_RET_ERRNO | 1


def test_every_syscall_distinct_forces_trampolines_and_stays_exact():
    names = sorted(X86_64, key=X86_64.get)
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + i} for i, name in enumerate(names)]
    program = seccomp.compile_profile(profile(rules))
    insns = cbpf.decode(program)
    assert len(insns) > 700
    assert any(code == 0x05 for code, _jt, _jf, _k in insns), "expected ja trampolines in a tree this size"
    for i, name in enumerate(names):
        assert decide(program, name) == ("ERRNO", 1 + i), name
    for nr in range(0, 1100):
        if nr not in X86_64.values():
            assert cbpf.action(cbpf.run(program, nr)) in (("ALLOW", None),), nr


def test_big_argument_blocks_far_from_the_tree():
    rules = []
    for i, name in enumerate(["getpid", "getppid", "gettid", "getuid", "getgid", "geteuid", "getegid"]):
        for value in range(12):
            rules.append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 100 * i + value, "args": [
                {"index": 0, "value": value, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": value << 33, "op": "SCMP_CMP_GE"}]})
    program = seccomp.compile_profile(profile(rules))
    assert len(cbpf.decode(program)) > 800
    for i, name in enumerate(["getpid", "getppid", "gettid", "getuid", "getgid", "geteuid", "getegid"]):
        for value in range(12):
            assert decide(program, name, [value, value << 33]) == ("ERRNO", 100 * i + value)
            assert decide(program, name, [value, (value << 33) - 1]) == (
                ("ALLOW", None) if value else ("ERRNO", 100 * i))


def test_more_than_4096_instructions_is_refused_clearly():
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": n % 4000, "args": [
        {"index": i, "value": 1, "op": "SCMP_CMP_GT"} for i in range(6)]} for n, name in enumerate(X86_64)]
    with pytest.raises(ValidationError, match="at most 4096"):
        seccomp.compile_profile(profile(rules))
