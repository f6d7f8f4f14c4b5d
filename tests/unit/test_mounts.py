# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which mounts of mountinfo this namespace can reach (pure logic, with statx replaced by a table)."""
import ctypes
import errno

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts, overlay
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, procfs

# The test sandbox after `make demo` on the host: the host's shared /run/netns (with a demo netns) and the demo's
# overlay are listed, but the sandbox's tmpfs over /run and /var/lib hide them.  Then a stack of two mounts at /srv/x.
HIDDEN = procfs.parse_mountinfo("""\
1 0 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
20 1 0:20 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
21 20 0:20 /netns /run/netns rw,nosuid,nodev shared:6 - tmpfs tmpfs rw,mode=755
22 21 0:4 net:[4026532300] /run/netns/demo rw shared:7 - nsfs nsfs rw
30 1 0:60 / /var/lib/kernelbox/rootfs/web/merged rw,relatime - overlay kernelbox rw,lowerdir=/var/lib/kernelbox/\
layers/sha256/aa/diff,upperdir=/var/lib/kernelbox/rootfs/web/upper,workdir=/var/lib/kernelbox/rootfs/web/work
40 1 0:70 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
41 1 0:71 / /var/lib rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
42 40 0:70 /netns /run/netns rw,nosuid,nodev shared:9 - tmpfs tmpfs rw,mode=755
50 1 0:80 / /srv/x rw - tmpfs bottom rw
51 50 0:81 / /srv/x rw - tmpfs top rw
52 51 0:82 / /srv/x/inner rw - tmpfs inner rw
""")
# What statx of each mount point reaches in the sandbox.
REACHED = {"/": 1, "/run": 40, "/run/netns": 42, "/run/netns/demo": None, "/var/lib": 41,
           "/var/lib/kernelbox/rootfs/web/merged": None, "/srv/x": 51, "/srv/x/inner": 52}


def visible():
    return mounts.visible_mounts(HIDDEN, REACHED.get)


def test_hidden_mounts_are_left_out_and_a_stacked_one_kept():
    assert [m.mount_id for m in visible()] == [1, 40, 41, 42, 50, 51, 52]


def test_top_mount_is_the_reachable_one():
    assert mounts.top_mount("/run/netns", visible()).mount_id == 42
    assert mounts.top_mount("/run/netns/demo", visible()) is None
    assert mounts.top_mount("/srv/x", visible()).mount_id == 51
    # on the raw list, the path string alone would pick a hidden mount
    assert mounts.top_mount("/run/netns/demo", HIDDEN).mount_id == 22


def test_mounts_below_and_overlays_ignore_hidden_ones():
    assert [m.mount_id for m in mounts.mounts_below("/run", visible())] == [42]
    assert [m.mount_id for m in mounts.mounts_below("/srv", visible())] == [50, 51, 52]
    assert overlay.find_overlay("/var/lib/kernelbox/rootfs/web/merged", visible()) == (None, None)
    assert overlay.overlays_with_lower("/var/lib/kernelbox/layers/sha256/aa", visible()) == []
    assert len(overlay.overlays_with_lower("/var/lib/kernelbox/layers/sha256/aa", HIDDEN)) == 1
    assert overlay.overlays_using("/var/lib/kernelbox/rootfs/web/upper", visible()) == []


class FakeStatx:
    """A libc whose statx fills the mount id and the mount-root attribute from a table, or fails."""

    def __init__(self, table, err=0):
        self.table, self.err = table, err

    def statx(self, _dirfd, path, _flags, _mask, buf_ref):
        if self.err:
            ctypes.set_errno(self.err)
            return -1
        mnt_id, root = self.table[path.decode()]
        buf = buf_ref._obj  # pylint: disable=protected-access
        buf.mask = libc.STATX_TYPE | (libc.STATX_MNT_ID if mnt_id is not None else 0)
        buf.mnt_id = mnt_id or 0
        if root is not None:
            buf.attributes_mask = libc.STATX_ATTR_MOUNT_ROOT
            buf.attributes = libc.STATX_ATTR_MOUNT_ROOT if root else 0
        return 0


def test_statx_mount_reads_the_id_and_the_mount_root_attribute():
    fake = FakeStatx({"/run/netns": (42, True), "/run": (40, None), "/old": (None, None)})
    assert libc.statx_mount("/run/netns", libc=fake) == libc.MountStat(42, True)
    assert libc.statx_mount("/run", libc=fake) == libc.MountStat(40, None)
    assert libc.statx_mount("/old", libc=fake) == libc.MountStat(None, None)
    with pytest.raises(OSError) as info:
        libc.statx_mount("/gone", libc=FakeStatx({}, errno.ENOENT))
    assert info.value.errno == errno.ENOENT and info.value.filename == "/gone"


@pytest.mark.parametrize("table, expected", [
    ({"/run/netns": (42, True)}, True),            # the kernel says it is a mount root
    ({"/run/netns": (40, False)}, False),          # a plain directory, whatever mountinfo lists there
    ({"/run/netns": (42, None), "/run": (40, None)}, True),   # Linux < 5.8 style: compare with the parent
    ({"/run/netns": (40, None), "/run": (40, None)}, False),
])
def test_is_mount_point_trusts_the_kernel_not_mountinfo(monkeypatch, table, expected):
    monkeypatch.setattr(libc, "statx_mount", lambda path: libc.MountStat(*table[path]))
    assert mounts.is_mount_point("/run/netns") is expected


def test_is_mount_point_of_a_missing_path_is_false(monkeypatch):
    def missing(path):
        raise OSError(errno.ENOENT, "statx failed", path)
    monkeypatch.setattr(libc, "statx_mount", missing)
    assert mounts.is_mount_point("/run/netns") is False
    assert mounts.mount_id_at("/run/netns") is None
