# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The OCI linux.seccomp model: round trip, validation errors, Docker-format profiles, install() errors."""

import copy
import ctypes
import errno

import pytest

from harness import cbpf

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp.syscall_table import X86_64
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

# Shaped like runc's `runc spec` output and the runtime-spec's config-linux.md example.
OCI = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [
        {"names": ["read", "write", "getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ],
}


def test_round_trip_is_one_to_one():
    prof = seccomp.from_oci(copy.deepcopy(OCI))
    assert prof.default_action == "SCMP_ACT_ERRNO" and prof.default_errno_ret == 1
    assert prof.syscalls[1].args[0].op == "SCMP_CMP_EQ" and prof.syscalls[1].args[0].value == 8
    assert prof.syscalls[2].errno_ret == 38
    assert prof.to_oci() == OCI
    assert seccomp.from_oci(prof.to_oci()) == prof
    assert seccomp.Profile.from_oci(OCI) == prof
    assert prof.install_flags() == libc.SECCOMP_FILTER_FLAG_LOG


def test_optional_fields_have_runc_defaults():
    prof = seccomp.from_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_NE"}],
         "comment": "ignored"}]})
    assert prof.architectures == [] and prof.flags == [] and prof.default_errno_ret is None
    assert prof.syscalls[0].args[0].value_two == 0
    assert prof.to_oci()["syscalls"][0] == {"names": ["mount"], "action": "SCMP_ACT_ERRNO",
                                            "args": [{"index": 1, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_NE"}]}
    assert seccomp.Profile().validate().default_action == "SCMP_ACT_ERRNO"


def test_config_json_profile_blocking_getpid_with_errno_42():
    config = {"ociVersion": "1.0.2", "linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}}}
    program = seccomp.compile_profile(seccomp.from_oci(config["linux"]["seccomp"]), "x86_64")
    assert cbpf.action(cbpf.run(program, X86_64["getpid"])) == ("ERRNO", 42)
    assert cbpf.action(cbpf.run(program, X86_64["getppid"])) == ("ALLOW", None)


BAD = [
    ("not a dict", [], "linux.seccomp: must be an object"),
    ("no default", {"syscalls": []}, "'defaultAction' is required"),
    ("bad default", {"defaultAction": "SCMP_ACT_NOPE"}, "defaultAction: unknown action 'SCMP_ACT_NOPE'"),
    ("notify", {"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY needs a seccomp agent"),
    ("listener", {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "notify agents"),
    ("unknown key", {"defaultAction": "SCMP_ACT_ALLOW", "defaultAktion": 1}, "unknown key(s) 'defaultAktion'"),
    ("docker syntax", {"defaultAction": "SCMP_ACT_ALLOW", "archMap": []}, "load it with from_docker"),
    ("default errno with allow", {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "defaultErrnoRet: only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"),
    ("errno too big", {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}, "from 0 to 4095"),
    ("bad arch", {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "'SCMP_ARCH_Z80'"),
    ("bad flag", {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}, "flags: unknown"),
    ("syscalls not list", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls: must be a list"),
    ("no names", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "syscalls[0].names: must name at least one syscall"),
    ("name not str", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [3], "action": "SCMP_ACT_ERRNO"}]},
     "syscalls[0].names: must be a list of non-empty strings"),
    ("bad action", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_DENY"}]}, "syscalls[0].action: unknown action"),
    ("errno with kill", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]}, "syscalls[0].errnoRet: only valid"),
    ("bad op", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]},
     "syscalls[0].args[0].op: unknown operator 'SCMP_CMP_XX'"),
    ("index 6", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                                  "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].index: must be an integer from 0 to 5"),
    ("negative", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                                   "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].value: must be an integer from 0 to 18446744073709551615"),
    ("bool", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                               "args": [{"index": True, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].index: must be an integer"),
    ("missing op", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                                     "args": [{"index": 0, "value": 1}]}]},
     "args[0]: 'op' is required"),
]


@pytest.mark.parametrize("data,message", [(case[1], case[2]) for case in BAD], ids=[case[0] for case in BAD])
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(ValidationError) as info:
        seccomp.from_oci(data)
    assert message in str(info.value)


def test_validate_checks_a_hand_built_profile():
    prof = seccomp.Profile(syscalls=[seccomp.SyscallRule(names=["read"], action="SCMP_ACT_ALLOW",
                                                         args=[seccomp.SeccompArg(index=0, value=1, op="SCMP_CMP_EQ")])])
    assert prof.validate() is prof
    prof.syscalls[0].args[0].op = "SCMP_CMP_BETWEEN"
    with pytest.raises(ValidationError, match="unknown operator"):
        prof.validate()


def test_unsupported_arch_is_refused():
    with pytest.raises(ValidationError, match="'s390x' is not supported"):
        seccomp.compile_profile(seccomp.Profile(), arch="s390x")
    assert seccomp.resolve_arch("amd64") == "x86_64" and seccomp.resolve_arch("SCMP_ARCH_AARCH64") == "aarch64"


# --- Docker-format profiles ------------------------------------------------------

DOCKER = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "", "includes": {}, "excludes": {}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"name": "getpid", "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
    ],
}


def _names(prof):
    return [(tuple(rule.names), rule.action, rule.errno_ret) for rule in prof.syscalls]


def test_docker_profile_resolves_includes_and_excludes():
    plain = seccomp.from_docker(DOCKER, capabilities=[], arch="x86_64", kernel="6.1.0-18-amd64")
    assert plain.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert _names(plain) == [(("read", "write"), "SCMP_ACT_ALLOW", None), (("ptrace",), "SCMP_ACT_ALLOW", None),
                             (("arch_prctl",), "SCMP_ACT_ALLOW", None), (("clone3",), "SCMP_ACT_ERRNO", 38),
                             (("getpid",), "SCMP_ACT_ALLOW", None)]
    admin = seccomp.from_docker(DOCKER, capabilities=["sys_admin"], arch="x86_64", kernel="4.4.0")
    assert _names(admin) == [(("read", "write"), "SCMP_ACT_ALLOW", None), (("mount",), "SCMP_ACT_ALLOW", None),
                             (("arch_prctl",), "SCMP_ACT_ALLOW", None), (("getpid",), "SCMP_ACT_ALLOW", None)]
    arm = seccomp.from_docker(DOCKER, capabilities=[], arch="aarch64", kernel="6.1")
    assert arm.architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [rule.names for rule in arm.syscalls] == [["read", "write"], ["ptrace"], ["clone3"]]


def test_docker_profile_errors_keep_the_original_index():
    bad = copy.deepcopy(DOCKER)
    bad["syscalls"][4]["action"] = "SCMP_ACT_WHAT"
    with pytest.raises(ValidationError, match=r"seccomp.syscalls\[4\].action: unknown action"):
        seccomp.from_docker(bad, arch="x86_64", kernel="6.1")
    bad = copy.deepcopy(DOCKER)
    bad["syscalls"][1]["includes"]["capz"] = []
    with pytest.raises(ValidationError, match=r"syscalls\[1\].includes: unknown key"):
        seccomp.from_docker(bad, arch="x86_64", kernel="6.1")


# --- install(): argument checks and error context (fake libc, no syscall made) ---------

class FakeLibc:
    def __init__(self, results):
        self.results, self.calls = list(results), []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            ret, err = self.results.pop(0)
            ctypes.set_errno(err)
            return ret
        return call


def test_install_refuses_malformed_programs_before_any_syscall():
    fake = FakeLibc([])
    for program in (b"", b"\x06\x00", b"\x06\x00\x00\x00\x00\x00\xff\x7f" * 4097):
        with pytest.raises(ValueError, match="1 to 4096 instructions"):
            seccomp.install(program, libc=fake)
    assert fake.calls == []


def test_install_explains_eacces():
    fake = FakeLibc([(-1, errno.EACCES)])
    with pytest.raises(OSError) as info:
        seccomp.install(b"\x06\x00\x00\x00\x00\x00\xff\x7f", libc=fake)
    assert info.value.errno == errno.EACCES
    assert "no_new_privs" in str(info.value) and "1 instructions" in str(info.value)
    assert fake.calls[0][0] == "syscall"


def test_install_falls_back_to_prctl_on_old_kernels():
    fake = FakeLibc([(-1, errno.ENOSYS), (0, 0)])
    seccomp.install(b"\x06\x00\x00\x00\x00\x00\xff\x7f", libc=fake)
    assert [name for name, _args in fake.calls] == ["syscall", "prctl"]


def test_install_reports_tsync_failure():
    fake = FakeLibc([(4242, 0)])
    with pytest.raises(OSError) as info:
        seccomp.install(b"\x06\x00\x00\x00\x00\x00\xff\x7f", flags=libc.SECCOMP_FILTER_FLAG_TSYNC, libc=fake)
    assert info.value.errno == errno.ESRCH and "thread 4242" in str(info.value)
