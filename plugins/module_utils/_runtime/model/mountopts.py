# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: OCI mount options -> mount(2) flags and data.

Pure functions.  An OCI mount lists options the way mount(8) spells them
("ro", "nosuid", "rbind", "rslave", "size=64m"); the kernel wants mountflags,
a separate propagation call and a data string.  Options that are not flags go
to the filesystem as data, except on bind mounts, where the kernel would
silently ignore them: there they are refused, so a typo never goes unnoticed.
"""

from __future__ import annotations

import functools
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

# option -> (flag, clears): "rw" clears MS_RDONLY, "ro" sets it.
_FLAGS: t.Dict[str, t.Tuple[int, bool]] = {
    "defaults": (0, False),
    "ro": (libc.MS_RDONLY, False), "rw": (libc.MS_RDONLY, True),
    "nosuid": (libc.MS_NOSUID, False), "suid": (libc.MS_NOSUID, True),
    "nodev": (libc.MS_NODEV, False), "dev": (libc.MS_NODEV, True),
    "noexec": (libc.MS_NOEXEC, False), "exec": (libc.MS_NOEXEC, True),
    "sync": (libc.MS_SYNCHRONOUS, False), "async": (libc.MS_SYNCHRONOUS, True),
    "dirsync": (libc.MS_DIRSYNC, False),
    "mand": (libc.MS_MANDLOCK, False), "nomand": (libc.MS_MANDLOCK, True),
    "noatime": (libc.MS_NOATIME, False), "atime": (libc.MS_NOATIME, True),
    "nodiratime": (libc.MS_NODIRATIME, False), "diratime": (libc.MS_NODIRATIME, True),
    "relatime": (libc.MS_RELATIME, False), "norelatime": (libc.MS_RELATIME, True),
    "strictatime": (libc.MS_STRICTATIME, False), "nostrictatime": (libc.MS_STRICTATIME, True),
    "nosymfollow": (libc.MS_NOSYMFOLLOW, False), "symfollow": (libc.MS_NOSYMFOLLOW, True),
}

PROPAGATION: t.Dict[str, int] = {
    "private": libc.MS_PRIVATE, "rprivate": libc.MS_PRIVATE | libc.MS_REC,
    "slave": libc.MS_SLAVE, "rslave": libc.MS_SLAVE | libc.MS_REC,
    "unbindable": libc.MS_UNBINDABLE, "runbindable": libc.MS_UNBINDABLE | libc.MS_REC,
    "shared": libc.MS_SHARED, "rshared": libc.MS_SHARED | libc.MS_REC,
}

# Flags a read-only/nosuid... remount of a bind mount must repeat (MS_REMOUNT|MS_BIND replaces them all).
PER_MOUNT_FLAGS = (libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | libc.MS_NOATIME
                   | libc.MS_NODIRATIME | libc.MS_RELATIME | libc.MS_STRICTATIME | libc.MS_NOSYMFOLLOW)

# Filesystems we mount ourselves that take the bind path, and what OCI calls them.
BIND_TYPES = ("bind", "rbind")


@dataclass(frozen=True)
class MountOptions:
    """What a list of OCI mount options means to the kernel (shared, so immutable)."""

    flags: int = 0
    propagation: t.Tuple[int, ...] = ()
    data: t.Tuple[str, ...] = ()
    bind: bool = False
    recursive: bool = False

    @property
    def readonly(self) -> bool:
        return bool(self.flags & libc.MS_RDONLY)

    @property
    def data_string(self) -> t.Optional[str]:
        return ",".join(self.data) if self.data else None


def parse(options: t.Sequence[str], mount_type: t.Optional[str] = None,
          where: str = "mounts") -> MountOptions:
    """Parse OCI mount options; ``mount_type`` 'bind' makes it a bind mount as options 'bind' do."""
    try:
        return _parse(tuple(options), mount_type)
    except ValidationError as exc:
        raise ValidationError("%s: %s" % (where, exc))
    except TypeError:  # an unhashable option (not a string)
        raise ValidationError("%s: mount options must be strings, got %r" % (where, options))


@functools.lru_cache(maxsize=256)
def _parse(options: t.Tuple[str, ...], mount_type: t.Optional[str]) -> MountOptions:
    flags = 0
    propagation: t.List[int] = []
    data: t.List[str] = []
    bind = mount_type in BIND_TYPES
    recursive = mount_type == "rbind"
    for option in options:
        if not isinstance(option, str) or not option or "\0" in option or "," in option:
            raise ValidationError("mount option %r is not valid (one option per list item)" % (option,))
        if option in ("bind", "rbind"):
            bind = True
            recursive = recursive or option == "rbind"
        elif option in _FLAGS:
            flag, clears = _FLAGS[option]
            flags = flags & ~flag if clears else flags | flag
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option == "remount":
            raise ValidationError("option 'remount' is not allowed in a container spec")
        else:
            data.append(option)
    if bind and data:
        raise ValidationError("%s not valid for a bind mount (the kernel would ignore them)"
                              % ", ".join(repr(d) for d in data))
    return MountOptions(flags, tuple(propagation), tuple(data), bind, recursive)
