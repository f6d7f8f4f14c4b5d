# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build small test images: OCI layouts written by hand (for hostile or exact layers) and real ones with podman.

Everything here is test tooling; it never imports the collection, so what it
writes is an independent reference for what the modules read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import typing as t

BUSYBOX_APPLETS = ("sh", "ls", "cat", "rm", "mkdir", "echo", "sleep", "touch", "test", "id", "pwd", "stat")


def tar_bytes(entries: t.Sequence[t.Mapping[str, t.Any]]) -> bytes:
    """A PAX tar from entries {name, type=file|dir|symlink|hardlink|chr|fifo, data, link, mode, uid, gid, pax}."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["name"])
            info.type = kinds[entry.get("type", "file")]
            info.linkname = entry.get("link", "")
            info.mode = entry.get("mode", 0o755 if info.type == tarfile.DIRTYPE else 0o644)
            info.uid, info.gid = entry.get("uid", 0), entry.get("gid", 0)
            info.mtime = entry.get("mtime", 1700000000)
            info.devmajor, info.devminor = entry.get("dev", (0, 0))
            info.pax_headers = dict(entry.get("pax", {}))
            data = entry.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(layout: str, data: bytes) -> str:
    digest = sha256(data)
    path = os.path.join(layout, "blobs", "sha256", digest.split(":")[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return digest


def write_oci_layout(layout: str, layers: t.Sequence[bytes], config: t.Optional[t.Dict[str, t.Any]] = None,
                     compress: bool = True, diff_ids: t.Optional[t.Sequence[str]] = None,
                     ref_name: str = "kbt:latest") -> t.Dict[str, t.Any]:
    """Write an OCI layout with ``layers`` (uncompressed tars, base first); returns the digests used."""
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    descriptors = []
    for layer in layers:
        blob = gzip.compress(layer, compresslevel=1, mtime=0) if compress else layer
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else ""),
                            "digest": write_blob(layout, blob), "size": len(blob)})
    image_config = {"architecture": "amd64", "os": "linux",
                    "config": (config or {"Cmd": ["/bin/sh"]}),
                    "rootfs": {"type": "layers", "diff_ids": list(diff_ids or [sha256(layer) for layer in layers])}}
    config_raw = json.dumps(image_config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": write_blob(layout, config_raw), "size": len(config_raw)},
                "layers": descriptors}
    manifest_raw = json.dumps(manifest).encode()
    manifest_digest = write_blob(layout, manifest_raw)
    with open(os.path.join(layout, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": len(manifest_raw), "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}, handle)
    return {"manifest": manifest_digest, "layers": [d["digest"] for d in descriptors],
            "diff_ids": image_config["rootfs"]["diff_ids"]}


def busybox_rootfs(root: str) -> None:
    """A tiny working root filesystem: the static busybox, applet symlinks and a few files to hide later."""
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    os.makedirs(os.path.join(root, "etc", "keep"))
    for name, text in (("etc/motd", "hello\n"), ("etc/keep/a", "kept\n"), ("etc/hostname", "kbt\n")):
        with open(os.path.join(root, name), "w") as handle:
            handle.write(text)
    for name in ("proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(root, name))


CONTAINERFILE = """FROM kbt-base
RUN rm /etc/motd && rm -rf /etc/keep && mkdir /etc/keep && echo new > /etc/keep/b
COPY app.txt /app/app.txt
ENV FOO=bar
WORKDIR /app
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat app.txt"]
"""


def build_with_podman(workdir: str) -> t.Dict[str, str]:
    """A real 3-layer image (import, RUN with deletions, COPY) saved in every format the module reads.

    podman runs with its storage under ``workdir`` and is gone afterwards.
    Only call this inside tests/sandbox.
    """
    if os.environ.get("KB_SANDBOX") != "1":
        raise RuntimeError("podman may only run inside tests/sandbox")
    podman = ["podman", "--root", os.path.join(workdir, "root"), "--runroot", os.path.join(workdir, "runroot"),
              "--runtime", "runc", "--cgroup-manager=cgroupfs", "--storage-driver", "overlay",
              "--events-backend", "none"]

    def run(argv: t.List[str]) -> None:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), proc.returncode, proc.stderr))

    rootfs = os.path.join(workdir, "rootfs")
    busybox_rootfs(rootfs)
    out = {"rootfs_tar": os.path.join(workdir, "rootfs.tar"), "oci_archive": os.path.join(workdir, "img.oci.tar"),
           "docker_archive": os.path.join(workdir, "img.docker.tar"), "oci_layout": os.path.join(workdir, "oci"),
           "oci_zstd": os.path.join(workdir, "oci-zstd"), "rootfs_tgz": os.path.join(workdir, "rootfs.tar.gz")}
    run(["tar", "-C", rootfs, "--numeric-owner", "-cf", out["rootfs_tar"], "."])
    run(["tar", "-C", rootfs, "--numeric-owner", "-czf", out["rootfs_tgz"], "."])
    with open(os.path.join(workdir, "Containerfile"), "w") as handle:
        handle.write(CONTAINERFILE)
    with open(os.path.join(workdir, "app.txt"), "w") as handle:
        handle.write("app\n")
    try:
        run(podman + ["import", "-q", out["rootfs_tar"], "kbt-base"])
        # chroot isolation: RUN steps need no OCI runtime, so podman creates no cgroups on this host; it only
        # allows the "host" network, which is the sandbox's private, empty network namespace.
        run(podman + ["build", "-q", "--isolation", "chroot", "--network", "host", "--ulimit", "nofile=1024:1024",
                      "--ulimit", "nproc=4096:4096", "-t", "kbt-img", "-f", os.path.join(workdir, "Containerfile"),
                      workdir])
        run(podman + ["save", "-q", "--format", "oci-archive", "-o", out["oci_archive"], "kbt-img"])
        run(podman + ["save", "-q", "--format", "docker-archive", "-o", out["docker_archive"], "kbt-img"])
    finally:
        subprocess.run(podman + ["rmi", "-a", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        shutil.rmtree(os.path.join(workdir, "root"), ignore_errors=True)
        shutil.rmtree(os.path.join(workdir, "runroot"), ignore_errors=True)
    run(["skopeo", "copy", "-q", "oci-archive:" + out["oci_archive"], "oci:%s:kbt" % out["oci_layout"]])
    run(["skopeo", "copy", "-q", "--dest-compress", "--dest-compress-format", "zstd",
         "oci-archive:" + out["oci_archive"], "oci:%s:kbt" % out["oci_zstd"]])
    return out


def tree_snapshot(root: str) -> t.Dict[str, t.Tuple[t.Any, ...]]:
    """relative path -> (type, mode, uid, gid, size, link target or rdev, xattrs, content hash) for every entry.

    An independent reader of an unpacked layer (os.lstat, os.listxattr), for comparing layers unpacked
    from different formats.
    """
    import stat

    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            extra: t.Any = None
            content = None
            if stat.S_ISLNK(info.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                extra = (os.major(info.st_rdev), os.minor(info.st_rdev))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            xattrs = {} if stat.S_ISLNK(info.st_mode) else {
                key: os.getxattr(path, key, follow_symlinks=False) for key in os.listxattr(path, follow_symlinks=False)}
            mtime = None if stat.S_ISDIR(info.st_mode) else int(info.st_mtime)
            result[os.path.relpath(path, root)] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                                                   extra, tuple(sorted(xattrs.items())), content, mtime)
    return result


def _platform_config(platform: str, layers: t.Sequence[bytes], config: t.Optional[t.Dict[str, t.Any]]) -> bytes:
    parts = platform.split("/")
    image_config: t.Dict[str, t.Any] = {"architecture": parts[1], "os": parts[0],
                                        "config": config or {"Cmd": ["/bin/sh"]},
                                        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]}}
    if len(parts) > 2:
        image_config["variant"] = parts[2]
    return json.dumps(image_config).encode()


def _write_manifest(layout: str, layers: t.Sequence[bytes], config_raw: bytes, level: int = 1) -> t.Dict[str, t.Any]:
    descriptors = []
    for layer in layers:
        blob = gzip.compress(layer, compresslevel=level, mtime=0)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": write_blob(layout, blob), "size": len(blob)})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": write_blob(layout, config_raw), "size": len(config_raw)},
                "layers": descriptors}
    raw = json.dumps(manifest).encode()
    return {"mediaType": manifest["mediaType"], "digest": write_blob(layout, raw), "size": len(raw),
            "layers": descriptors}


def write_multiplatform_layout(layout: str, images: t.Mapping[str, t.Sequence[bytes]],
                               ref_name: str = "multi") -> t.Dict[str, t.Any]:
    """An OCI layout whose ``ref_name`` is an image index with one image per platform (``{"linux/arm64": [tars]}``).

    Returns {"index": digest, platform: {"manifest": digest, "diff_ids": [...], "layers": [...]}}.
    """
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    entries, result = [], {}
    for platform, layers in images.items():
        written = _write_manifest(layout, layers, _platform_config(platform, layers, None))
        parts = platform.split("/")
        desc = {"mediaType": written["mediaType"], "digest": written["digest"], "size": written["size"],
                "platform": dict({"os": parts[0], "architecture": parts[1]},
                                 **({"variant": parts[2]} if len(parts) > 2 else {}))}
        entries.append(desc)
        result[platform] = {"manifest": written["digest"], "diff_ids": [sha256(layer) for layer in layers],
                            "layers": [d["digest"] for d in written["layers"]]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    raw = json.dumps(index).encode()
    result["index"] = write_blob(layout, raw)
    with open(os.path.join(layout, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": index["mediaType"], "digest": result["index"], "size": len(raw),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}, handle)
    return result


def write_single_layout(layout: str, layers: t.Sequence[bytes], ref_name: str = "latest", level: int = 1,
                        platform: str = "linux/amd64",
                        config: t.Optional[t.Dict[str, t.Any]] = None) -> t.Dict[str, t.Any]:
    """An OCI layout holding one gzip image (``level`` 0 stores the layers uncompressed inside gzip)."""
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    written = _write_manifest(layout, layers, _platform_config(platform, layers, config), level)
    index_path = os.path.join(layout, "index.json")
    entries = []
    if os.path.exists(index_path):
        with open(index_path) as handle:
            entries = [e for e in json.load(handle)["manifests"]
                       if e.get("annotations", {}).get("org.opencontainers.image.ref.name") != ref_name]
    entries.append({"mediaType": written["mediaType"], "digest": written["digest"], "size": written["size"],
                    "annotations": {"org.opencontainers.image.ref.name": ref_name}})
    with open(index_path, "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": entries}, handle)
    return {"manifest": written["digest"], "diff_ids": [sha256(layer) for layer in layers],
            "layers": [d["digest"] for d in written["layers"]], "sizes": [d["size"] for d in written["layers"]]}


def random_body(seed: int, size: int) -> bytes:
    import random
    return random.Random(seed).randbytes(size)


def random_layer(seed: int, size: int, prefix: str = "data") -> bytes:
    """A layer tar with one file ``PREFIX/blobSEED.bin`` of ``random_body(seed, size)`` (incompressible)."""
    body = random_body(seed, size)
    return tar_bytes([{"name": prefix + "/", "type": "dir"}, {"name": "%s/blob%d.bin" % (prefix, seed), "data": body}])


def write_docker_archive(path: str, images: t.Mapping[str, t.Sequence[bytes]]) -> t.Dict[str, t.Dict[str, t.Any]]:
    """A ``docker save`` tar holding several images (``{"repo:tag": [layer tars, base first]}``), layers shared by
    content, as ``docker save`` of several images writes it.  Returns {tag: {"id": config digest, "diff_ids"}}."""
    members: t.Dict[str, bytes] = {}
    entries, result = [], {}
    for tag, layers in images.items():
        config = _platform_config("linux/amd64", layers, None)
        config_name = sha256(config).split(":")[1] + ".json"
        members[config_name] = config
        names = []
        for layer in layers:
            names.append(sha256(layer).split(":")[1] + ".tar")
            members[names[-1]] = layer
        entries.append({"Config": config_name, "RepoTags": [tag], "Layers": names})
        result[tag] = {"id": sha256(config), "diff_ids": [sha256(layer) for layer in layers]}
    manifest = json.dumps(entries).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", manifest)] + sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    return result
