# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""errno handling of the ctypes layer, with an injected fake libc (no syscalls made)."""
import ctypes
import errno

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.forked import ChildError, call_in_child


class FakeLibc:
    def __init__(self, ret, err=0):
        self.ret, self.err, self.calls = ret, err, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            ctypes.set_errno(self.err)
            return self.ret
        return call


def test_unshare_error_has_errno_and_context():
    fake = FakeLibc(-1, errno.EPERM)
    with pytest.raises(OSError) as info:
        libc.unshare(libc.CLONE_NEWNET | libc.CLONE_NEWNS, libc=fake)
    assert info.value.errno == errno.EPERM
    assert "unshare(mnt|net)" in str(info.value)


def test_mount_error_names_target():
    fake = FakeLibc(-1, errno.ENOENT)
    with pytest.raises(OSError) as info:
        libc.mount("none", "/x/y", "tmpfs", 0, "size=1M", libc=fake)
    assert info.value.errno == errno.ENOENT and info.value.filename == "/x/y"
    assert fake.calls[0][0] == "mount"


def test_success_passes_through():
    fake = FakeLibc(0)
    libc.sethostname("box", libc=fake)
    assert fake.calls[0][1][0] == b"box"


def test_describe_clone_flags():
    assert libc.describe_clone_flags(libc.CLONE_NEWPID | libc.CLONE_NEWUTS) == "pid|uts"


def test_call_in_child_returns_data_and_errors():
    assert call_in_child(lambda: {"answer": 42}) == {"answer": 42}

    def fails():
        raise OSError(errno.EACCES, "nope", "/some/path")

    with pytest.raises(OSError) as info:
        call_in_child(fails)
    assert (info.value.errno, info.value.filename) == (errno.EACCES, "/some/path")

    def raises_value_error():
        raise ValueError("bad")

    with pytest.raises(ChildError, match="ValueError: bad"):
        call_in_child(raises_value_error)
