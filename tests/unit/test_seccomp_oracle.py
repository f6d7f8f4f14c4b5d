# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Differential test: our compiler against libseccomp (the library runc uses) on the same profiles.

libseccomp is not a dependency of the collection; it is the reference here.
Both programs run in the test's cBPF interpreter over the same seccomp_data.
Known, intended differences are excluded explicitly: numbers above the
highest one a profile names (ours: ENOSYS, as runc patches in; libseccomp:
the default action), and foreign arches / x32 (ours: kill the process;
libseccomp's default bad-arch action: kill the thread).
"""

import random

import pytest

from harness import cbpf
from harness import libseccomp

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp.syscall_table import X86_64


@pytest.fixture(scope="module")
def lib():
    try:
        return libseccomp.load()
    except OSError as exc:
        pytest.fail("libseccomp.so.2 (Debian package libseccomp2) is needed as the reference: %s" % exc)


def highest_named(oci):
    return max(X86_64[name] for rule in oci["syscalls"] for name in rule["names"] if name in X86_64)


def known_to(lib):
    """Numbers of the syscalls this libseccomp has in its table (2.5.4 stops around Linux 6.0)."""
    return set(nr for name, nr in X86_64.items() if libseccomp.resolve(lib, name) >= 0)


def test_our_syscall_numbers_match_libseccomps(lib):
    mismatched = {name: (nr, libseccomp.resolve(lib, name)) for name, nr in X86_64.items()
                  if libseccomp.resolve(lib, name) not in (nr, -1)}      # -1: __NR_SCMP_ERROR, newer than it
    assert mismatched == {}
    assert len(known_to(lib)) > 350


ARG_SAMPLES = [0, 1, 17, 40, 41, 0x20000, 0x10000011, 0x7E020000, 0x01200011, 0xFFFFFFFF, 0x100000028,
               0xFFFFFFFF00000000, 2 ** 64 - 1]


@pytest.mark.parametrize("caps", [[], ["CAP_SYS_ADMIN"], ["CAP_SYS_PTRACE", "CAP_SYS_NICE", "CAP_BPF"]])
def test_default_profile_decisions_match_libseccomp(lib, caps):
    oci = seccomp.default_profile(caps, "x86_64").to_oci()
    ours = cbpf.decode(seccomp.compile_profile(seccomp.from_oci(oci), "x86_64"))
    theirs = cbpf.decode(libseccomp.compile_oci(lib, oci))
    top = highest_named(oci)
    unknown = set(X86_64.values()) - known_to(lib)
    for nr in range(0, top + 1):
        if nr in unknown:
            continue
        for arg in ARG_SAMPLES:
            args = [arg, arg >> 3, 0, 0, 0, 0]
            assert cbpf.run(ours, nr, args=args) == cbpf.run(theirs, nr, args=args), (nr, hex(arg))


OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
       "SCMP_CMP_MASKED_EQ"]


def _random_value(rng):
    return rng.choice([rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(32) << 32, rng.randrange(8),
                       0xFFFFFFFF, 0x100000000])


@pytest.mark.parametrize("seed", range(6))
def test_random_argument_rules_match_libseccomp(lib, seed):
    rng = random.Random(seed)
    known = known_to(lib)
    names = rng.sample(sorted(name for name in X86_64 if X86_64[name] in known), 40)
    rules = []
    for number, name in enumerate(names):
        args = []
        for index in rng.sample(range(6), rng.randint(1, 3)):
            value = _random_value(rng)
            args.append({"index": index, "value": value, "valueTwo": rng.getrandbits(64) & value,
                         "op": rng.choice(OPS)})
        rules.append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": number + 2, "args": args})
    oci = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    ours = cbpf.decode(seccomp.compile_profile(seccomp.from_oci(oci), "x86_64"))
    theirs = cbpf.decode(libseccomp.compile_oci(lib, oci))
    matched = 0
    for rule in rules:
        nr = X86_64[rule["names"][0]]
        for _case in range(60):
            data = [_random_value(rng) for _slot in range(6)]
            for arg in rule["args"]:             # bias towards the boundary of each comparison
                if rng.random() < 0.6:
                    data[arg["index"]] = (arg["value"] + rng.choice([-1, 0, 1])) & (2 ** 64 - 1)
            got, want = cbpf.run(ours, nr, args=data), cbpf.run(theirs, nr, args=data)
            assert got == want, (rule, [hex(v) for v in data])
            matched += got != cbpf.RET_ALLOW
    assert matched > 0


def test_podmans_generated_profile_matches_libseccomp(lib):
    """The profile podman 4.3 put in a container's config.json (recorded): it lists some syscalls twice with
    different actions, and libseccomp keeps the first rule, as our compiler does."""
    import json
    import os
    with open(os.path.join(os.path.dirname(__file__), "data", "podman_runtime_config.json")) as handle:
        oci = json.load(handle)["linux"]["seccomp"]
    oci = dict(oci, architectures=["SCMP_ARCH_X86_64"])
    ours = cbpf.decode(seccomp.compile_profile(seccomp.from_oci(oci), "x86_64"))
    theirs = cbpf.decode(libseccomp.compile_oci(lib, oci))
    unknown = set(X86_64.values()) - known_to(lib)
    for nr in range(0, highest_named(oci) + 1):
        if nr in unknown:
            continue
        for arg in (0, 16, 9, 40):
            args = [arg, 0, 9, 0, 0, 0]
            assert cbpf.run(ours, nr, args=args) == cbpf.run(theirs, nr, args=args), (nr, arg)
    assert cbpf.run(ours, X86_64["setns"]) == cbpf.RET_ALLOW
