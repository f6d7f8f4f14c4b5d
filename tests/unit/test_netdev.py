# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The struct ifreq the launcher's loopback ioctls send (the ioctls themselves: tests/integration/test_launch.py)."""

import errno
import struct

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netdev


def test_ifreq_is_the_kernel_layout():
    raw = netdev._ifreq("lo", netdev.IFF_UP)
    assert len(raw) == 40
    assert raw[:16] == b"lo" + b"\0" * 14
    assert struct.unpack_from("H", raw, 16)[0] == 1


@pytest.mark.parametrize("name", ["", "x" * 16])
def test_ifreq_refuses_names_the_kernel_cannot_hold(name):
    with pytest.raises(OSError) as info:
        netdev._ifreq(name)
    assert info.value.errno == errno.EINVAL
