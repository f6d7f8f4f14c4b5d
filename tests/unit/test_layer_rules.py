# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layer tar member checks, whiteout names, xattr selection, compression sniffing and hashing (pure logic)."""
import gzip
import hashlib
import io
import tarfile

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import layer_stream
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import layer_unpack as lu


@pytest.mark.parametrize("name, parts", [
    ("./", []),
    (".", []),
    ("etc/passwd", ["etc", "passwd"]),
    ("./etc//./passwd", ["etc", "passwd"]),
    ("usr/lib/", ["usr", "lib"]),
])
def test_member_parts(name, parts):
    assert lu.member_parts(name) == parts


@pytest.mark.parametrize("name, fragment", [
    ("../etc/passwd", "'..'"),
    ("a/../../b", "'..'"),
    ("/etc/passwd", "absolute"),
    ("a\0b", "NUL"),
])
def test_member_parts_refuses(name, fragment):
    with pytest.raises(lu.UnsafeLayer) as info:
        lu.member_parts(name)
    assert fragment in str(info.value)


@pytest.mark.parametrize("basename, kind", [
    (".wh..wh..opq", ("opaque", None)),
    (".wh.motd", ("whiteout", "motd")),
    (".wh..hidden", ("whiteout", ".hidden")),
    (".wh..wh.plnk", ("meta", None)),
    (".wh..wh.aufs", ("meta", None)),
    ("motd", ("entry", None)),
    ("x.wh.y", ("entry", None)),
])
def test_whiteout_kind(basename, kind):
    assert lu.whiteout_kind(basename) == kind


@pytest.mark.parametrize("basename", [".wh.", ".wh..", ".wh..."])
def test_whiteout_without_name_is_refused(basename):
    with pytest.raises(lu.UnsafeLayer):
        lu.whiteout_kind(basename)


@pytest.mark.parametrize("parts, target, escapes", [
    (["bin", "sh"], "busybox", False),
    (["bin", "sh"], "/bin/busybox", False),  # resolved inside the container's root
    (["usr", "bin", "x"], "../../lib/x", False),
    (["usr", "bin", "x"], "../../../etc", True),
    (["x"], "..", True),
    (["a", "b"], "c/../../d", False),
    (["a", "b"], "./../../d", True),
    (["link"], ".", False),
])
def test_symlink_escapes(parts, target, escapes):
    assert lu.symlink_escapes(parts, target) is escapes


def member_with(pax):
    info = tarfile.TarInfo("f")
    info.pax_headers = pax
    return info


def test_xattrs_from_pax_headers():
    capability = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    wanted, dropped = lu.member_xattrs(member_with({
        "SCHILY.xattr.security.capability": capability.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.note": "hello",
        "LIBARCHIVE.xattr.user.b64": "aGk",  # base64 without padding, as bsdtar writes it
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.overlay.metacopy": "",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "path": "ignored",
    }))
    assert wanted == {"security.capability": capability, "user.note": b"hello", "user.b64": b"hi",
                      "trusted.overlay.opaque": b"y"}
    assert sorted(dropped) == ["trusted.overlay.redirect", "user.overlay.metacopy"]


@pytest.mark.parametrize("head, kind", [
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x28\xb5\x2f\xfd\x00", "zstd"),
    (b"\xfd7zXZ\x00\x00", "xz"),
    (b"BZh91AY", "bzip2"),
    (b"etc/\x00\x00\x00", "none"),
])
def test_detect_compression(head, kind):
    assert layer_stream.detect_compression(head) == kind


def test_digests_of_a_gzip_blob():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"world"))
    raw_tar = buf.getvalue()
    blob = gzip.compress(raw_tar)
    digest, diff_id = layer_stream.digests(io.BytesIO(blob))
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert diff_id == "sha256:" + hashlib.sha256(raw_tar).hexdigest()
