# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""overlay option escaping, normalisation, spec validation and mountinfo decoding (pure logic)."""
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import overlay
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")


def recorded_mounts():
    with open(os.path.join(DATA, "mountinfo_overlay_6_18.txt"), encoding="utf-8") as handle:
        return procfs.parse_mountinfo(handle.read())


def spec(**kw):
    values = dict(merged="/srv/c/rootfs", lower=["/srv/l2", "/srv/l1"], upper="/srv/c/upper", work="/srv/c/work",
                  options={})
    values.update(kw)
    return overlay.OverlaySpec(**values)


@pytest.mark.parametrize("raw, expected", [
    ({}, {}),
    (None, {}),
    ({"index": True, "volatile": True}, {"index": "on", "volatile": True}),
    ({"index": False, "metacopy": "OFF"}, {"index": "off", "metacopy": "off"}),
    ({"redirect_dir": "follow", "xino": "auto", "uuid": "null"},
     {"redirect_dir": "follow", "uuid": "null", "xino": "auto"}),
    ({"volatile": False, "nosuid": "yes", "nodev": True}, {"nodev": True, "nosuid": True}),
    ({"nfs-export": "on"}, {"nfs_export": "on"}),
])
def test_options_normalise(raw, expected):
    assert overlay.normalise_options(raw) == expected


@pytest.mark.parametrize("raw, fragment", [
    ({"lowerdir": "/etc"}, "not an allowed overlay option"),
    ({"upperdir": "/etc"}, "not an allowed overlay option"),
    ({"index": "maybe"}, "index must be one of on, off"),
    ({"redirect_dir": "on,upperdir=/etc"}, "redirect_dir must be one of"),
    ({"volatile": "sometimes"}, "volatile is a flag"),
])
def test_options_refused(raw, fragment):
    with pytest.raises(ValidationError) as info:
        overlay.normalise_options(raw)
    assert fragment in str(info.value)


@pytest.mark.parametrize("path, escaped", [
    ("/srv/plain", "/srv/plain"),
    ("/srv/a:b", "/srv/a\\:b"),
    ("/srv/a\\b", "/srv/a\\\\b"),
    ("/srv/sp ace", "/srv/sp ace"),
])
def test_escape_round_trip(path, escaped):
    assert overlay.escape_path(path) == escaped
    assert overlay.unescape_path(escaped) == path
    assert overlay.split_lowerdir(escaped + ":" + escaped) == [path, path]


def test_commas_are_refused_never_passed():
    with pytest.raises(ValidationError) as info:
        overlay.escape_path("/a,upperdir=/etc", "lower")
    assert "comma" in str(info.value)
    with pytest.raises(ValidationError):
        overlay.validate_spec(spec(lower=["/a,upperdir=/etc"]))
    with pytest.raises(ValidationError):
        overlay.validate_spec(spec(upper="/srv/u,lowerdir=/etc"))


def test_mount_data_and_label():
    s = spec(lower=["/srv/l:2", "/srv/l1"], options={"index": "off", "volatile": True, "nodev": True})
    assert s.mount_data() == "lowerdir=/srv/l\\:2:/srv/l1,upperdir=/srv/c/upper,workdir=/srv/c/work,index=off,volatile"
    assert s.source() == "kernelbox:index=off,volatile"
    assert s.mount_flags() & overlay.libc.MS_NODEV and not s.mount_flags() & overlay.libc.MS_RDONLY
    ro = spec(upper=None, work=None)
    assert ro.mount_data() == "lowerdir=/srv/l2:/srv/l1" and ro.source() == "kernelbox"
    assert ro.mount_flags() & overlay.libc.MS_RDONLY
    assert overlay.parse_label(s.source()) == {"index": "off", "volatile": True}
    assert overlay.parse_label("kernelbox") == {}
    assert overlay.parse_label("overlay") is None


@pytest.mark.parametrize("kw, fragment", [
    (dict(merged="/"), "system directory"),
    (dict(merged="/etc"), "system directory"),
    (dict(merged="/usr"), "system directory"),
    (dict(merged="/proc/kb"), "kernel interface"),
    (dict(merged="/sys/fs/x"), "kernel interface"),
    (dict(merged="/dev/shm/x"), "kernel interface"),
    (dict(lower=[]), "at least one lower"),
    (dict(lower=["/srv/l1", "/srv/l1"]), "listed twice"),
    (dict(work=None), "go together"),
    (dict(work="/srv/c/upper/work"), "work /srv/c/upper/work must not be inside upper /srv/c/upper"),
    (dict(upper="/srv/c/work/u"), "upper /srv/c/work/u must not be inside work /srv/c/work"),
    (dict(work="/srv/c/upper"), "are the same directory"),
    (dict(lower=["/srv/c/rootfs/l"]), "lower /srv/c/rootfs/l must not be inside merged"),
    (dict(merged="/srv/l1/m"), "merged /srv/l1/m must not be inside lower /srv/l1"),
    (dict(upper=None, work=None, lower=["/srv/l1"]), "at least two lower"),
    (dict(upper=None, work=None, options={"volatile": True}), "volatile needs an upper"),
    (dict(lower=["/srv/" + "x" * 200 + str(i) for i in range(25)]), "mount(2) accepts"),
])
def test_spec_refused(kw, fragment):
    with pytest.raises(ValidationError) as info:
        overlay.validate_spec(spec(**kw))
    assert fragment in str(info.value)


def test_prefix_siblings_are_not_nested():
    overlay.validate_spec(spec(upper="/srv/c/up", work="/srv/c/upper2", merged="/srv/c/upper3"))


def test_parse_overlay_decodes_escapes_and_labels():
    mounts = recorded_mounts()
    first, _top = overlay.find_overlay("/tmp/kb m", mounts)
    assert first.lower == ["/tmp/l,1", "/tmp/l:2", "/tmp/l\\3"]
    assert first.upper == "/tmp/u:x" and first.work == "/tmp/w"
    assert first.label == {} and first.shown_options == {"uuid": "on"}
    volatile, _top = overlay.find_overlay("/tmp/kbvol", mounts)
    assert volatile.label == {"index": "off", "volatile": True}
    assert volatile.shown_options == {"index": "off", "uuid": "on", "volatile": True} and volatile.volatile
    assert volatile.mount_flags() == {"nosuid": True}
    readonly, _top = overlay.find_overlay("/tmp/kbro", mounts)
    assert readonly.readonly and readonly.label is None and readonly.lower == ["/a", "/b"]
    newapi, _top = overlay.find_overlay("/tmp/newapi", mounts)
    assert newapi.lower == ["/n1", "/n2"] and newapi.data_layers == ["/d1"]
    none, top = overlay.find_overlay("/run", mounts)
    assert none is None and top.fstype == "tmpfs"
    assert overlay.find_overlay("/tmp/kb", mounts) == (None, None)


def test_effective_options_labelled_mount_reports_its_label():
    volatile, _top = overlay.find_overlay("/tmp/kbvol", recorded_mounts())
    wanted = {"index": "off", "nosuid": True, "volatile": True}
    assert overlay.effective_options(volatile, wanted) == wanted


def test_effective_options_foreign_mount_uses_kernel_defaults():
    docker, _top = overlay.find_overlay("/var/lib/docker/overlay2/x/merged", recorded_mounts())
    defaults = {"index": "off", "metacopy": "off", "redirect_dir": "follow", "xino": "off"}
    assert overlay.effective_options(docker, {"index": "on", "metacopy": "off"}, defaults) == {
        "index": "on", "metacopy": "off", "volatile": True}
    # options not asked for are the kernel's business; flags always count
    assert overlay.effective_options(docker, {}, defaults) == {"volatile": True}


def test_kernel_defaults_from_module_parameters(tmp_path):
    for name, value in {"index": "N", "metacopy": "Y", "nfs_export": "N", "redirect_dir": "N",
                        "redirect_always_follow": "Y", "xino_auto": "N"}.items():
        (tmp_path / name).write_text(value + "\n")
    assert overlay.kernel_defaults(upper=True, params_dir=str(tmp_path)) == {
        "index": "off", "metacopy": "on", "nfs_export": "off", "redirect_dir": "follow", "xino": "off"}
    # without an upper, overlayfs turns redirect_dir=follow into on
    assert overlay.kernel_defaults(upper=False, params_dir=str(tmp_path))["redirect_dir"] == "on"
    assert overlay.kernel_defaults(upper=True, params_dir=str(tmp_path / "missing")) == {}


def test_overlays_using_and_with_lower():
    mounts = recorded_mounts()
    assert [m.info.mount_point for m in overlay.overlays_using("/u", mounts)] == ["/tmp/kbvol"]
    assert overlay.overlays_using("/u", mounts, exclude_merged="/tmp/kbvol") == []
    assert overlay.overlays_using("/u2", mounts) == []
    assert [m.info.mount_point for m in overlay.overlays_with_lower("/a", mounts)] == ["/tmp/kbvol", "/tmp/kbro"]
    assert overlay.overlays_with_lower("/l", mounts) == []
