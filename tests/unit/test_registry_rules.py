# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image references, auth challenges, auth files and platform choice (pure logic, no network)."""
import base64
import json
import threading

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.image_manifest import ImageError
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import auth, pull
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import reference as refs
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry.client import (
    _content_range_start, _registry_errors)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, expected", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("bitnami/nginx:1.27", "docker.io/bitnami/nginx:1.27"),
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
    ("quay.io/podman/stable", "quay.io/podman/stable:latest"),
    ("localhost/web", "localhost/web:latest"),
    ("localhost:5000/a/b/c:v1.0-rc_1", "localhost:5000/a/b/c:v1.0-rc_1"),
    ("127.0.0.1:5000/kbt/img", "127.0.0.1:5000/kbt/img:latest"),
    ("[::1]:5000/kbt/img:x", "[::1]:5000/kbt/img:x"),
    ("Registry.Example.com/app", "Registry.Example.com/app:latest"),
    ("busybox@" + DIGEST, "docker.io/library/busybox@" + DIGEST),
    ("busybox:1.36@" + DIGEST, "docker.io/library/busybox:1.36@" + DIGEST),
    ("my-reg.example:443/a__b/c.d-e", "my-reg.example:443/a__b/c.d-e:latest"),
])
def test_references_normalise_like_docker(text, expected):
    assert str(refs.parse(text)) == expected


def test_reference_parts_and_api_host():
    ref = refs.parse("busybox:1.36")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("docker.io", "library/busybox", "1.36", None)
    assert ref.api_host == "registry-1.docker.io" and ref.tagged == "docker.io/library/busybox:1.36"
    assert ref.manifest_ref == "1.36"
    pinned = refs.parse("127.0.0.1:5000/kbt/img:1@" + DIGEST)
    assert pinned.api_host == "127.0.0.1:5000" and pinned.manifest_ref == DIGEST and pinned.is_loopback
    assert pinned.by_digest(DIGEST) == "127.0.0.1:5000/kbt/img@" + DIGEST
    assert not refs.parse("quay.io/a/b").is_loopback and refs.parse("localhost:1/a").is_loopback
    assert refs.parse("[::1]:5000/a").is_loopback


@pytest.mark.parametrize("text, fragment", [
    ("", "required"),
    ("Busybox", "lower case"),
    ("docker.io/Library/x", "lower case"),
    ("busybox:", "tag"),
    ("busybox:-x", "tag"),
    ("busybox:" + "a" * 129, "tag"),
    ("busybox@sha256:abc", "digest"),
    ("busybox@md5:" + "a" * 32, "digest"),
    ("a//b", "component"),
    ("a/b-", "component"),
    ("ab" * 32, "image ID"),
    ("reg.example/" + "a" * 260, "longer"),
    ("bad_host:5000/x", "registry host"),
])
def test_bad_references_are_refused(text, fragment):
    with pytest.raises(ValidationError) as info:
        refs.parse(text, "name")
    assert fragment in str(info.value) and str(info.value).startswith("name:")


def test_looks_like_reference_keeps_bare_tags_out():
    assert not refs.looks_like_reference("kbt")
    assert refs.looks_like_reference("localhost/kbt-img:latest") and refs.looks_like_reference("kbt-img:latest")
    assert not refs.looks_like_reference("Bad/Name:x")


@pytest.mark.parametrize("headers, expected", [
    (['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/b:pull"'],
     [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                  "scope": "repository:library/b:pull"})]),
    (['Basic realm="basic-realm"'], [("basic", {"realm": "basic-realm"})]),
    (['Basic realm="a, b", Bearer realm="https://x/t", service=reg'],
     [("basic", {"realm": "a, b"}), ("bearer", {"realm": "https://x/t", "service": "reg"})]),
    (['Bearer realm="q\\"uote"', 'Basic realm=r'], [("bearer", {"realm": 'q"uote'}), ("basic", {"realm": "r"})]),
    ([''], []),
])
def test_challenges_parse(headers, expected):
    assert [(c.scheme, c.params) for c in auth.parse_challenges(headers)] == expected


def _auth(user, password):
    return base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def test_auth_file_entries_most_specific_first():
    data = {"auths": {"reg.example:5000": {"auth": _auth("whole", "p1")},
                      "reg.example:5000/team": {"auth": _auth("team", "p2")},
                      "https://index.docker.io/v1/": {"auth": _auth("hub", "p3:with:colons")}}}
    found, note = auth.credentials_from_auth_data(data, "reg.example:5000", "team/app", "/a.json")
    assert (found.username, found.password, found.origin, note) == ("team", "p2", "/a.json", None)
    found, _note = auth.credentials_from_auth_data(data, "reg.example:5000", "other/app", "/a.json")
    assert found.username == "whole"
    found, _note = auth.credentials_from_auth_data(data, "docker.io", "library/busybox", "/a.json")
    assert (found.username, found.password) == ("hub", "p3:with:colons")
    assert auth.credentials_from_auth_data(data, "quay.io", "x/y", "/a.json") == (None, None)
    assert "p2" not in repr(found) and "p3" not in repr(found)


def test_auth_file_helpers_are_named_not_run():
    found, note = auth.credentials_from_auth_data({"auths": {}, "credHelpers": {"quay.io": "secretservice"}},
                                                  "quay.io", "a/b", "/c.json")
    assert found is None and "docker-credential-secretservice" in note and "not run" in note
    _found, note = auth.credentials_from_auth_data({"credsStore": "desktop"}, "quay.io", "a/b", "/c.json")
    assert "docker-credential-desktop" in note
    with pytest.raises(ValueError):
        auth.credentials_from_auth_data({"auths": {"quay.io": {"auth": _auth("x", "y")[:-4] + "!!!!"}}},
                                        "quay.io", "a/b", "/c.json")


def test_legacy_dockercfg_and_username_password_entries():
    found, _note = auth.credentials_from_auth_data({"http://reg:5000": {"auth": _auth("u", "p")}}, "reg:5000", "a", "f")
    assert found.username == "u"
    entries = {"auths": {"reg:5000": {"username": "v", "password": "w"}}}
    found, _note = auth.credentials_from_auth_data(entries, "reg:5000", "a", "f")
    assert (found.username, found.password) == ("v", "w")


def test_auth_file_search_order(tmp_path):
    env = {"REGISTRY_AUTH_FILE": "/x/auth.json", "XDG_RUNTIME_DIR": "/run/user/0"}
    assert auth.auth_file_candidates(env, 0, "/root") == [
        "/x/auth.json", "/run/user/0/containers/auth.json", "/root/.config/containers/auth.json",
        "/root/.docker/config.json", "/root/.dockercfg"]
    assert auth.auth_file_candidates({}, 0, "/root")[0] == "/run/containers/0/auth.json"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("{not json")
    second.write_text(json.dumps({"auths": {"reg:1": {"auth": _auth("u", "p")}}}))
    found, notes = auth.find_credentials([str(first), str(tmp_path / "missing"), str(second)], "reg:1", "x")
    assert found.origin == str(second) and "not valid JSON" in notes[0]


def test_basic_header():
    assert auth.basic_header(auth.Credentials("user", "pa:ss")) == "Basic " + _auth("user", "pa:ss")


def _entry(platform, digest="sha256:" + "0" * 64):
    parts = platform.split("/")
    desc = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        desc["variant"] = parts[2]
    return {"digest": digest, "platform": desc}


def test_platform_choice():
    index = [_entry("linux/amd64", "a"), _entry("linux/arm64/v8", "b"), _entry("linux/arm/v7", "c"),
             _entry("unknown/unknown", "d")]
    assert pull.choose_platform(index, "linux/amd64", "idx")["digest"] == "a"
    assert pull.choose_platform(index, "linux/arm64", "idx")["digest"] == "b"
    assert pull.choose_platform(index, "linux/arm/v7", "idx")["digest"] == "c"
    with pytest.raises(ImageError) as info:
        pull.choose_platform(index, "linux/s390x", "idx")
    assert "linux/amd64, linux/arm/v7, linux/arm64/v8, unknown/unknown" in str(info.value)
    both = [_entry("linux/arm64", "plain"), _entry("linux/arm64/v8", "exact")]
    assert pull.choose_platform(both, "linux/arm64/v8", "idx")["digest"] == "exact"
    assert pull.choose_platform([{"digest": "only"}], "linux/amd64", "idx")["digest"] == "only"


def test_registry_error_bodies_and_ranges():
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {}}]})
    assert _registry_errors(body.encode()) == "MANIFEST_UNKNOWN: manifest unknown"
    assert _registry_errors(b"<html>\nbad gateway") == "<html>"
    assert _content_range_start("bytes 100-199/200") == 100 and _content_range_start("items 1-2/3") is None


def test_plan_changes_describe_layers_and_record():
    ref = refs.parse("127.0.0.1:5000/kbt/img:1")
    layers = [pull.PlannedLayer(0, "sha256:" + "1" * 64, "sha256:" + "2" * 64, 3 << 20,
                                "application/vnd.oci.image.layer.v1.tar+gzip", "present"),
              pull.PlannedLayer(1, "sha256:" + "3" * 64, "sha256:" + "4" * 64, 1500,
                                "application/vnd.oci.image.layer.v1.tar+gzip", "absent"),
              pull.PlannedLayer(2, "sha256:" + "3" * 64, "sha256:" + "4" * 64, 1500,
                                "application/vnd.oci.image.layer.v1.tar+gzip", "absent")]
    plan = pull.PullPlan("/s", ref, "missing", DIGEST, DIGEST, "sha256:" + "5" * 64, {}, "linux/amd64", layers,
                         None, ["no record of image x"], "registry")
    assert [layer.index for layer in plan.missing] == [1]
    assert plan.changes() == [
        ("download and unpack layer 2/3 sha256:%s (tar+gzip, 1.5 kB) from 127.0.0.1:5000/kbt/img" % ("4" * 64),
         "not in the store"),
        ("record image sha256:%s as 127.0.0.1:5000/kbt/img:1" % ("5" * 64), "no record of image x")]
    assert plan.lower == ["/s/sha256/%s/diff" % h for h in ("4" * 64, "4" * 64, "2" * 64)]


def test_a_blob_verified_after_another_download_failed_is_still_unpacked(monkeypatch):
    """The race behind leftovers in downloads/: one download fails, another finishes before it sees the stop."""
    ref = refs.parse("127.0.0.1:5000/kbt/img:1")
    gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [pull.PlannedLayer(i, "sha256:" + c * 64, "sha256:" + d * 64, 10, gzip, "absent")
              for i, (c, d) in enumerate((("1", "2"), ("3", "4"), ("5", "6")))]
    plan = pull.PullPlan("/s", ref, "missing", DIGEST, DIGEST, "sha256:" + "7" * 64, {}, "linux/amd64", layers,
                         None, [], "registry", repository=object())
    failed = threading.Event()
    unpacked = []

    class Downloads:
        def __init__(self, store):
            self.closed = False

        def fetch(self, pulled, layer, stop):
            if layer.index == 0:
                failed.set()
                raise ImageError("layer 1 broke off")
            assert failed.wait(10)
            if layer.index == 1:
                assert stop.wait(10)  # past its last stop check when the failure was seen: it completes
                return "verified"
            stop.wait(10)
            raise pull.Stopped()

        def unpack(self, pulled, layer, name):
            unpacked.append((layer.index, name))

        def close(self):
            pass

    monkeypatch.setattr(pull, "Downloads", Downloads)
    with pytest.raises(ImageError, match="layer 1 broke off"):
        pull.fetch_layers(plan, concurrency=3)
    assert unpacked == [(1, "verified")] and plan.fetched == ["sha256:" + "4" * 64]
