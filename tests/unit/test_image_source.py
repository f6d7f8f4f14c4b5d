# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""OCI and docker-save manifest parsing on recorded samples (podman 4.3 output), and selection rules."""
import hashlib
import json
import os
import shutil

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import image_manifest as meta
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import image_source as src
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")
MANIFEST = "sha256:75e05a757aa41f13e46f93178fefd2293efa1821f43f2f81ccbc17ec8add3753"
CONFIG = "sha256:df0406ae873e8d921f4671482adf61939884bef437e2b0bf54738737ef1d4318"
LAYER1 = "sha256:601699863363dde0699982787dedf479a56e8f4df16f367aeb4afef0475d425d"
DIFF1 = "sha256:0a8e2a0f2bc95478db5f0694cf64fcf8d15d71e06b751db73fede0715cbbb13c"
DIFF2 = "sha256:1c6541d23444b469067c4e0391d0de45fd0fe3f5997b3ae960a5ee84ac739056"


def sample(name):
    with open(os.path.join(DATA, name), "rb") as handle:
        return handle.read()


def put_blob(layout, raw, name=None):
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", name or digest.split(":")[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(raw)
    return digest


@pytest.fixture
def layout(tmp_path):
    """The recorded podman OCI layout, with empty stand-ins for the layer blobs (only their presence matters)."""
    root = str(tmp_path / "oci")
    os.makedirs(root)
    with open(os.path.join(root, "oci-layout"), "w") as handle:
        handle.write('{"imageLayoutVersion": "1.0.0"}')
    shutil.copy(os.path.join(DATA, "oci_index_podman.json"), os.path.join(root, "index.json"))
    assert put_blob(root, sample("oci_manifest_podman.json")) == MANIFEST
    assert put_blob(root, sample("oci_config_podman.json")) == CONFIG
    manifest = json.loads(sample("oci_manifest_podman.json"))
    for layer in manifest["layers"]:
        put_blob(root, b"", layer["digest"].split(":")[1])
    return root


def test_oci_layout_parses_and_verifies(layout):
    image = src.open_image(layout, platform="linux/amd64")
    try:
        assert image.format == "oci-layout"
        assert image.manifest_digest == MANIFEST and image.config_digest == CONFIG
        assert image.reference == "localhost/kbt-img:latest" and image.platform == "linux/amd64"
        assert [layer.diff_id for layer in image.layers] == [DIFF1, DIFF2]  # base first
        assert image.layers[0].digest == LAYER1 and image.layers[0].size == 1083779
        assert image.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
        summary = meta.runtime_config(image.config)
        assert summary["Cmd"] == ["/bin/sh", "-c", "echo hi"] and "FOO=bar" in summary["Env"]
        assert meta.process_of(summary) == {"args": ["/bin/sh", "-c", "echo hi"], "env": summary["Env"],
                                            "cwd": "/", "user": "0"}
    finally:
        image.close()


def test_tampered_manifest_is_refused(layout):
    path = os.path.join(layout, "blobs", "sha256", MANIFEST.split(":")[1])
    with open(path, "rb+") as handle:
        data = handle.read()
        handle.seek(0)
        handle.write(data.replace(b"schemaVersion\":2", b"schemaVersion\":2 "))
    with pytest.raises(src.ImageError) as info:
        src.open_image(layout)
    assert "is 755 bytes, its descriptor says 754" in str(info.value) or "does not match" in str(info.value)


def test_missing_layer_blob_is_named(layout):
    os.unlink(os.path.join(layout, "blobs", "sha256", LAYER1.split(":")[1]))
    with pytest.raises(src.ImageError) as info:
        src.open_image(layout)
    assert "layer 0 (%s) is missing" % LAYER1 in str(info.value)


def test_reference_selection(layout):
    with pytest.raises(src.ImageError) as info:
        src.open_image(layout, reference="other")
    assert "no image named 'other'" in str(info.value) and "localhost/kbt-img:latest" in str(info.value)
    src.open_image(layout, reference="kbt-img").close()
    src.open_image(layout, reference="kbt-img:latest").close()


def test_docker_save_directory(tmp_path):
    root = str(tmp_path / "docker")
    os.makedirs(root)
    shutil.copy(os.path.join(DATA, "docker_manifest_podman.json"), os.path.join(root, "manifest.json"))
    shutil.copy(os.path.join(DATA, "oci_config_podman.json"), os.path.join(root, CONFIG.split(":")[1] + ".json"))
    for diff_id in (DIFF1, DIFF2):
        open(os.path.join(root, diff_id.split(":")[1] + ".tar"), "wb").close()
    image = src.open_image(root)
    try:
        assert image.format == "docker-archive" and image.config_digest == CONFIG
        assert [layer.diff_id for layer in image.layers] == [DIFF1, DIFF2]
        assert [layer.digest for layer in image.layers] == [None, None]  # verified through the diff_id
        assert image.reference == "localhost/kbt-img:latest"
    finally:
        image.close()
    with open(os.path.join(root, CONFIG.split(":")[1] + ".json"), "ab") as handle:
        handle.write(b" ")
    with pytest.raises(src.ImageError) as info:
        src.open_image(root)
    assert "does not match its name" in str(info.value)


@pytest.mark.parametrize("value, expected", [
    ("sha256:" + "a" * 64, "sha256:" + "a" * 64),
    ("A" * 64, "sha256:" + "a" * 64),
    (" sha512:" + "b" * 128, "sha512:" + "b" * 128),
])
def test_normalise_digest(value, expected):
    assert meta.normalise_digest(value) == expected


@pytest.mark.parametrize("value", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "g" * 64, ""])
def test_bad_digests(value):
    with pytest.raises(ValidationError):
        meta.normalise_digest(value)


@pytest.mark.parametrize("reference, name, matches", [
    ("web", "localhost/web:latest", True),
    ("web:1.0", "localhost/web:latest", False),
    ("web", "docker.io/library/web:latest", True),
    ("web", "webapp:latest", False),
    ("web", "myweb:latest", False),
    ("latest", "latest", True),
    ("v1", "v2", False),
    ("registry.example.com:5000/web:2", "registry.example.com:5000/web:2", True),
    ("web:2", "registry.example.com:5000/web:2", True),
])
def test_reference_matches(reference, name, matches):
    assert meta.reference_matches(reference, name) is matches


def descriptor(arch, variant=None, name=None):
    platform = {"os": "linux", "architecture": arch}
    if variant:
        platform["variant"] = variant
    result = {"mediaType": meta.MANIFEST_TYPES[0], "digest": "sha256:" + (arch[0] * 64)[:64], "size": 1,
              "platform": platform}
    if name:
        result["annotations"] = {meta.REF_NAME: name}
    return result


def test_select_by_platform():
    index = [descriptor("amd64"), descriptor("arm64", "v8"), descriptor("arm", "v7")]
    assert meta.select_descriptor(index, None, "linux/arm64", "x")["platform"]["architecture"] == "arm64"
    assert meta.select_descriptor(index, None, "linux/arm/v7", "x")["platform"]["variant"] == "v7"
    with pytest.raises(src.ImageError) as info:
        meta.select_descriptor(index, None, "linux/s390x", "x")
    assert "no image for platform linux/s390x" in str(info.value)


def test_ambiguous_index_asks_for_a_reference():
    index = [dict(descriptor("amd64", name="a"), platform=None), dict(descriptor("amd64", name="b"), platform=None)]
    with pytest.raises(src.ImageError) as info:
        meta.select_descriptor(index, None, "linux/amd64", "x")
    assert "choose one with reference" in str(info.value)
    assert meta.select_descriptor(index, "b", "linux/amd64", "x")["annotations"][meta.REF_NAME] == "b"


def test_manifest_rules():
    manifest = json.loads(sample("oci_manifest_podman.json"))
    config, layers = meta.parse_manifest(manifest, "m")
    assert config["digest"] == CONFIG and [layer["digest"] for layer in layers][0] == LAYER1
    encrypted = dict(manifest, layers=[dict(manifest["layers"][0],
                                            mediaType="application/vnd.oci.image.layer.v1.tar+gzip+encrypted")])
    with pytest.raises(src.ImageError) as info:
        meta.parse_manifest(encrypted, "m")
    assert "unsupported media type" in str(info.value)
    with pytest.raises(src.ImageError):
        meta.parse_manifest(dict(manifest, schemaVersion=1), "m")
    config_data = json.loads(sample("oci_config_podman.json"))
    with pytest.raises(src.ImageError) as info:
        meta.diff_ids_of(config_data, 3, "c")
    assert "2 diff_ids for 3 layers" in str(info.value)


def test_runtime_config_defaults():
    summary = meta.runtime_config({})
    assert summary == {"Entrypoint": [], "Cmd": [], "Env": [], "WorkingDir": "", "User": "", "StopSignal": "",
                       "Labels": {}}
    config = {"config": {"Entrypoint": ["/init"], "Cmd": ["-v"], "WorkingDir": "/app", "User": "1000:1000"}}
    assert meta.process_of(meta.runtime_config(config)) == {"args": ["/init", "-v"], "env": [], "cwd": "/app",
                                                            "user": "1000:1000"}


def test_platform_names():
    assert meta.platform_matches("linux/arm64", "linux/arm64/v8")
    assert not meta.platform_matches("linux/arm/v7", "linux/arm/v6")
    assert meta.host_platform().startswith("linux/")
