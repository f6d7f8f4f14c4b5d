# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: pull an image by reference into the layer store.  No engine, no Ansible.

The API, for image_layers and any module that takes an image reference (the container module)::

    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import client, pull

    options = pull.PullOptions(platform=None,                # None: this machine's os/arch[/variant]
                               client=client.Options(credentials=None, auth_files=[...], ca_path=None,
                                                     validate_certs=True, timeout=30, retries=3),
                               concurrency=3)
    plan = pull.plan(store, "docker.io/library/busybox:1.36", policy="missing", options=options)
    # READ-ONLY (check mode may call it): the store first; the registry only when the policy needs it
    # (missing: only if the image or a layer is absent; always: one HEAD of the manifest, then GETs only
    # if the digest moved; never: no network, fails if absent).  Layer blobs are never fetched here.
    plan.digest           # what the reference resolved to (an index or a manifest): pin with name@digest
    plan.manifest_digest  # the chosen platform's manifest;  plan.image_id: the config digest
    plan.config           # the whole image config; image_manifest.runtime_config(plan.config) -> Cmd, Env...
    plan.layers           # [PlannedLayer(index, digest, diff_id, size, media_type, status)], base first
    plan.lower            # overlay lower directories, TOPMOST FIRST, for overlay_rootfs / the runtime
    plan.changes()        # [(what, why)]: what apply() would do; empty when the store is up to date
    pull.apply(plan)      # downloads the missing layers (bounded pool, resume, retries), verifies and
                          # unpacks each (layer_store.unpack_layer), then records the image and its tag
    plan = pull.ensure(store, name, policy, options)   # plan + apply, for callers without check mode

Errors are ImageError (client.RegistryError, NotFound, Unauthorized, Unreachable for the registry;
DigestMismatch for bad content) or OSError, each naming the image, the layer and the registry.

Blobs are streamed to ``STORE/downloads/<algorithm>/<hex>.partial`` with the digest computed as the bytes
arrive, never held in memory.  An interrupted blob is kept and resumed with an HTTP range request, by a
retry in this run or by the next run (its bytes so far are hashed again first, so the final digest covers
the whole blob).  A complete blob that does not match its digest is deleted and never unpacked; a
verified one is unpacked into the store (which verifies it once more, with the diff_id) and deleted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import os
import threading
import time
import typing as t
import urllib.error
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import (
    image_manifest, image_source, image_store, layer_store, layer_unpack)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.image_manifest import ImageError
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import client, reference
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

POLICIES = ("missing", "always", "never")
CHUNK = 1 << 20
DOWNLOAD_LOCK_TIMEOUT = 1800.0


@dataclass
class PullOptions:
    platform: t.Optional[str] = None
    client: client.Options = field(default_factory=client.Options)
    concurrency: int = 3


@dataclass
class PlannedLayer:
    index: int  # 0 = base
    digest: str
    diff_id: str
    size: t.Optional[int]
    media_type: str
    status: str  # layer_store.PRESENT / PARTIAL / ABSENT


@dataclass
class PullPlan:
    store: str
    reference: reference.Reference
    policy: str
    digest: str
    manifest_digest: t.Optional[str]
    image_id: str
    config: t.Dict[str, t.Any]
    platform: t.Optional[str]
    layers: t.List[PlannedLayer]
    record: image_store.ImageRecord  # what apply() records
    record_reasons: t.List[str]  # why the record must be written (empty: it is up to date)
    resolved_by: str  # "store", "head" (digest unchanged) or "registry"
    repository: t.Optional[client.Repository] = None
    current: t.Optional[image_store.ImageRecord] = None  # what the name meant in the store before (may differ)
    warnings: t.List[str] = field(default_factory=list)
    fetched: t.List[str] = field(default_factory=list)  # diff_ids apply() unpacked
    downloaded_bytes: int = 0
    resumed_bytes: int = 0

    @property
    def missing(self) -> t.List[PlannedLayer]:
        """The layers to fetch, once each (an image may list a layer twice)."""
        seen: t.Set[str] = set()
        result = []
        for layer in self.layers:
            if layer.status != layer_store.PRESENT and layer.diff_id not in seen:
                seen.add(layer.diff_id)
                result.append(layer)
        return result

    @property
    def lower(self) -> t.List[str]:
        return [layer_store.lower_dir(self.store, layer.diff_id) for layer in reversed(self.layers)]

    @property
    def source(self) -> str:
        return self.repository.base_url if self.repository else (self.record.registry_url or "the store")

    def changes(self) -> t.List[t.Tuple[str, str]]:
        result = []
        count = len(self.layers)
        for layer in self.missing:
            why = "not in the store" if layer.status == layer_store.ABSENT else \
                "partially unpacked (no valid completion marker)"
            result.append(("download and unpack layer %d/%d %s (%s, %s) from %s"
                           % (layer.index + 1, count, layer.diff_id, layer.media_type.rsplit(".", 1)[-1],
                              human_size(layer.size), self.reference.name), why))
        if self.record_reasons:
            result.append(("record image %s as %s" % (self.image_id, self.reference), "; ".join(self.record_reasons)))
        return result


def human_size(value: t.Optional[int]) -> str:
    if value is None:
        return "size unknown"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= scale:
            return "%.1f %s" % (value / scale, unit)
    return "%d B" % value


# --- planning (read-only) -------------------------------------------------------------------------

def plan(store: str, name: str, policy: str = "missing", options: t.Optional[PullOptions] = None) -> PullPlan:
    """What pulling ``name`` into ``store`` takes; reads the store and, if the policy needs it, the registry."""
    options = options or PullOptions()
    if policy not in POLICIES:
        raise ValueError("pull policy %r is not one of %s" % (policy, ", ".join(POLICIES)))
    ref = reference.parse(name)
    platform = options.platform or image_manifest.host_platform()
    images = image_store.list_images(store)
    local = _local_image(images, ref, platform)
    result = _plan_with(store, ref, policy, platform, options, images, local)
    result.current = local
    return result


def _plan_with(store: str, ref: reference.Reference, policy: str, platform: str, options: PullOptions,
               images: t.Sequence[image_store.ImageRecord], local: t.Optional[image_store.ImageRecord]) -> PullPlan:
    known = _from_record(store, ref, policy, local, "store") if local is not None else None
    if policy == "never":
        if known is None:
            raise ImageError("%s (%s) is not in the layer store %s, and pull is never" % (ref, platform, store))
        if known.missing:
            raise ImageError("%s is in the layer store %s, but %d of its layers are missing, and pull is never"
                             % (ref, store, len(known.missing)))
        return known
    complete = known is not None and not known.missing
    if complete and (policy == "missing" or ref.digest):
        return t.cast(PullPlan, known)
    repository = client.Repository(ref, options.client, _scheme_of(local))
    if policy == "always" and complete and ref.tag and not ref.digest:
        head_digest, _media = repository.head_manifest(ref.tag)
        if head_digest and head_digest == t.cast(image_store.ImageRecord, local).tags.get(t.cast(str, ref.tagged)):
            known = t.cast(PullPlan, known)
            known.resolved_by, known.repository = "head", repository
            return known
    return _resolve(store, ref, policy, platform, repository, images)


def _scheme_of(record: t.Optional[image_store.ImageRecord]) -> t.Optional[str]:
    if record is not None and record.registry_url and "://" in record.registry_url:
        return record.registry_url.split("://", 1)[0]
    return None


def _local_image(images: t.Sequence[image_store.ImageRecord], ref: reference.Reference,
                 platform: str) -> t.Optional[image_store.ImageRecord]:
    if ref.digest:
        found = image_store.find_digest(images, ref.by_digest(ref.digest))
    else:
        found = image_store.find_tag(images, t.cast(str, ref.tagged))
    if found is not None and found.platform and not image_manifest.platform_matches(platform, found.platform):
        return None  # the same name for another platform: pull the one asked for
    return found


def _wanted_record(ref: reference.Reference, record: image_store.ImageRecord, top_digest: str,
                   repository: t.Optional[client.Repository]) -> image_store.ImageRecord:
    tags = {t.cast(str, ref.tagged): top_digest} if ref.tag and not ref.digest else {}
    digests = [ref.by_digest(top_digest)]
    if record.manifest_digest and record.manifest_digest != top_digest:
        digests.append(ref.by_digest(record.manifest_digest))
    url = repository.base_url if repository is not None and repository.scheme else record.registry_url
    return image_store.ImageRecord(id=record.id, layers=record.layers, config=record.config,
                                   platform=record.platform, manifest_digest=record.manifest_digest, tags=tags,
                                   digests=digests, source="registry", registry_url=url)


def _from_record(store: str, ref: reference.Reference, policy: str, record: image_store.ImageRecord,
                 resolved_by: str) -> PullPlan:
    top = (ref.digest or record.tags.get(ref.tagged or "") or record.manifest_digest or record.id)
    layers = [PlannedLayer(index, entry.get("digest") or "", entry["diff_id"], entry.get("size"),
                           entry.get("media_type") or "", layer_store.status(store, entry["diff_id"]))
              for index, entry in enumerate(record.layers)]
    # Found by this very name: only its tag may need taking back from another image (never, here).
    return PullPlan(store, ref, policy, top, record.manifest_digest, record.id, record.config, record.platform,
                    layers, record, [], resolved_by)


def choose_platform(descriptors: t.Sequence[t.Mapping[str, t.Any]], platform: str, where: str) -> t.Dict[str, t.Any]:
    """The index entry for ``platform``: an exact os/arch/variant match first, else the first that fits."""
    offered = [d for d in descriptors if isinstance(d.get("platform"), dict)]
    fitting = [d for d in offered if image_manifest.platform_matches(platform, image_manifest.platform_of(d["platform"]))]
    exact = [d for d in fitting if image_manifest.platform_of(d["platform"]) == platform]
    if exact or fitting:
        return dict((exact or fitting)[0])
    if not offered and len(descriptors) == 1:
        return dict(descriptors[0])
    names = sorted({image_manifest.platform_of(d["platform"]) for d in offered})
    raise ImageError("%s has no image for platform %s; it has %s" % (where, platform, ", ".join(names) or "none"))


def _resolve(store: str, ref: reference.Reference, policy: str, platform: str, repository: client.Repository,
             images: t.Sequence[image_store.ImageRecord]) -> PullPlan:
    top = repository.get_manifest(ref.manifest_ref, expected_digest=ref.digest)
    manifest = top
    where = "%s (%s)" % (ref, top.digest)
    if top.is_index:
        descriptors = [image_manifest.check_descriptor(d, "index %s" % top.digest)
                       for d in (top.data.get("manifests") or [])]
        chosen = choose_platform(descriptors, platform, "the index of %s" % ref)
        manifest = repository.get_manifest(chosen["digest"], chosen["digest"], chosen.get("size"))
        if manifest.is_index:
            raise ImageError("%s: the index entry for %s is another index; nested indexes are not supported"
                             % (where, platform))
        where = "%s (manifest %s for %s)" % (ref, manifest.digest, platform)
    config_desc, layer_descs = image_manifest.parse_manifest(manifest.data, where)
    for position, desc in enumerate(layer_descs):
        if desc.get("size") is None:
            raise ImageError("%s: layer %d has no size; refusing an unbounded download" % (where, position))
    image_id = config_desc["digest"]
    known = next((r for r in images if r.id == image_id), None)
    if known is not None and [layer.get("digest") for layer in known.layers] == [d["digest"] for d in layer_descs]:
        config = known.config
    else:
        raw = repository.get_small_blob(image_id, config_desc.get("size"), "the config of %s" % ref)
        config = image_manifest.load_json(raw, "config %s" % image_id)
        if not isinstance(config, dict):
            raise ImageError("%s: config %s is not a JSON object" % (where, image_id))
    diff_ids = image_manifest.diff_ids_of(config, len(layer_descs), "config %s of %s" % (image_id, ref))
    image_platform = image_manifest.platform_of(config) if config.get("os") and config.get("architecture") else None
    layers = [PlannedLayer(index, desc["digest"], diff_id, desc.get("size"), desc["mediaType"],
                           layer_store.status(store, diff_id))
              for index, (desc, diff_id) in enumerate(zip(layer_descs, diff_ids))]
    found = image_store.ImageRecord(
        id=image_id, config=config, platform=image_platform, manifest_digest=manifest.digest,
        layers=[{"diff_id": item.diff_id, "digest": item.digest, "size": item.size, "media_type": item.media_type}
                for item in layers])
    record = _wanted_record(ref, found, top.digest, repository)
    result = PullPlan(store, ref, policy, top.digest, manifest.digest, image_id, config, image_platform, layers,
                      record, image_store.needs_save(images, record), "registry", repository)
    if image_platform and not image_manifest.platform_matches(platform, image_platform):
        result.warnings.append("%s is for %s, not %s: its programs may not run here" % (ref, image_platform, platform))
    return result


# --- applying -------------------------------------------------------------------------------------

def apply(pulled: PullPlan, concurrency: int = 3) -> PullPlan:
    """Fetch and unpack the missing layers, then record the image; returns the plan with fresh statuses."""
    if not pulled.changes():
        return pulled  # a warm pull: nothing to lock, nothing to read again
    with image_store.writers(pulled.store):
        fetch_layers(pulled, concurrency)
        if pulled.record_reasons:
            image_store.save(pulled.store, pulled.record)
            pulled.record_reasons = []
    for layer in pulled.layers:
        layer.status = layer_store.status(pulled.store, layer.diff_id)
    return pulled


def ensure(store: str, name: str, policy: str = "missing", options: t.Optional[PullOptions] = None) -> PullPlan:
    options = options or PullOptions()
    return apply(plan(store, name, policy, options), options.concurrency)


def fetch_layers(pulled: PullPlan, concurrency: int = 3) -> None:
    """Download the missing layers concurrently and unpack each as soon as its blob is verified.

    After the first failure nothing new starts and the running downloads stop at their next chunk (keeping
    their bytes for a resume), but a blob verified meanwhile is still unpacked: a download can finish
    between the failure and the stop, and its verified blob must not stay behind in downloads/.  The first
    failure is raised once every download has ended.
    """
    missing = pulled.missing
    if not missing:
        return
    if pulled.repository is None:
        raise ImageError("%s: %d layers are missing and no registry was asked" % (pulled.reference, len(missing)))
    downloads = Downloads(pulled.store)
    stop = threading.Event()
    failures: t.List[Exception] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(missing)))) as pool:
            futures = {pool.submit(downloads.fetch, pulled, layer, stop): layer for layer in missing}
            try:
                for future in as_completed(futures):
                    try:
                        layer = futures[future]
                        downloads.unpack(pulled, layer, future.result())
                        pulled.fetched.append(layer.diff_id)
                    except Exception as exc:  # raised below, once the other downloads have ended
                        failures.append(exc)
                        _stop(stop, futures)
            except BaseException:
                _stop(stop, futures)
                raise
    finally:
        downloads.close()
    if failures:
        raise failures[0]


def _stop(stop: threading.Event, futures: t.Iterable[t.Any]) -> None:
    stop.set()
    for future in futures:
        future.cancel()


class Stopped(Exception):
    """Another download of the same pull failed: this one stops, keeping its bytes for a resume."""


class Downloads:
    """``STORE/downloads/<algorithm>/``: blobs on their way from the registry into the store."""

    def __init__(self, store: str) -> None:
        self.store = store
        root = layer_store.open_root(store)
        try:
            self.top = image_store.ensure_dir(root, (image_store.DOWNLOADS,))
        finally:
            os.close(root)
        self.folders: t.Dict[str, int] = {}
        self.lock = threading.Lock()

    def folder(self, algorithm: str) -> int:
        with self.lock:
            if algorithm not in self.folders:
                self.folders[algorithm] = image_store.ensure_dir(self.top, (algorithm,))
            return self.folders[algorithm]

    def path(self, algorithm: str) -> str:
        return os.path.join(self.store, image_store.DOWNLOADS, algorithm)

    def close(self) -> None:
        for fd in self.folders.values():
            os.close(fd)
        os.close(self.top)

    # --- one blob ---------------------------------------------------------------------------------

    def fetch(self, pulled: PullPlan, layer: PlannedLayer, stop: threading.Event) -> str:
        """Download one layer blob (resuming what is there), verify it; returns its file name."""
        algorithm, hexpart = image_manifest.digest_parts(layer.digest)
        folder = self.folder(algorithm)
        partial = hexpart + ".partial"
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
        try:
            _lock_file(fd, "the download of %s" % layer.digest, stop)
            if _exists(folder, hexpart):
                return hexpart  # another run finished it while we waited
            if not _names(folder, partial, fd):
                return self.fetch(pulled, layer, stop)  # the run we waited for removed its download: afresh
            try:
                self._download(pulled, layer, fd, algorithm, stop)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    _unlink(folder, partial)
                    raise KernelboxError(
                        "no space left on device in the layer store %s while downloading layer %d/%d %s of %s; the "
                        "partial download was removed: free space (image_prune removes unused layers) and run again"
                        % (self.store, layer.index + 1, len(pulled.layers), layer.digest, pulled.reference),
                        errno=exc.errno)
                _drop_if_empty(folder, partial, fd)
                raise
            except layer_unpack.DigestMismatch:
                _unlink(folder, partial)
                raise
            except BaseException:  # stopped, or the registry's answer: what was received is kept for a resume
                _drop_if_empty(folder, partial, fd)
                raise
            os.rename(partial, hexpart, src_dir_fd=folder, dst_dir_fd=folder)
            return hexpart
        finally:
            os.close(fd)

    def _download(self, pulled: PullPlan, layer: PlannedLayer, fd: int, algorithm: str,
                  stop: threading.Event) -> None:
        size = t.cast(int, layer.size)
        what = "layer %d/%d %s of %s" % (layer.index + 1, len(pulled.layers), layer.digest, pulled.reference)
        hasher, offset = _hash_existing(fd, algorithm, size)
        resumed = offset
        with self.lock:
            pulled.resumed_bytes += resumed
        failures = 0
        while True:
            if offset < size:
                before = offset
                try:
                    hasher, offset = self._transfer(pulled, layer, fd, hasher, offset, size, stop)
                except (client.RegistryError, OSError, http.client.HTTPException, urllib.error.URLError) as exc:
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                        raise
                    if isinstance(exc, client.RegistryError) and not _transient(exc):
                        raise  # 401, 403, 404...: the registry's answer, not a broken transfer
                    failures = 1 if offset > before else failures + 1
                    retries = t.cast(client.Repository, pulled.repository).options.retries
                    if failures > retries or isinstance(exc, client.RegistryError):
                        raise client.Unreachable(
                            "%s: the download broke off at %s of %s: %s; the %s received are kept in %s for the "
                            "next run to resume" % (what, human_size(offset), human_size(size),
                                                    client._describe(exc), human_size(offset),
                                                    self.path(algorithm)))
                    time.sleep(min(client.BACKOFF_MAX, client.BACKOFF_FIRST * failures))
                    continue
            received = "%s:%s" % (algorithm, hasher.hexdigest())
            if received == layer.digest:
                return
            if resumed:
                # The bytes kept from an earlier run may be what is wrong: fetch the whole blob once more.
                os.ftruncate(fd, 0)
                hasher, offset, resumed = hashlib.new(algorithm), 0, 0
                continue
            raise layer_unpack.DigestMismatch(
                "%s from %s does not match its digest: received %s; the download was discarded and nothing "
                "was unpacked" % (what, pulled.source, received))

    def _transfer(self, pulled: PullPlan, layer: PlannedLayer, fd: int, hasher: t.Any, offset: int, size: int,
                  stop: threading.Event) -> t.Tuple[t.Any, int]:
        """One GET from ``offset`` to the end (or to an error); returns (hasher, new offset)."""
        repository = t.cast(client.Repository, pulled.repository)
        response, start = repository.open_blob(layer.digest, offset)
        try:
            if start != offset:  # the registry ignored the range: start over
                os.ftruncate(fd, 0)
                hasher, offset = hashlib.new(hasher.name), 0
            os.lseek(fd, offset, os.SEEK_SET)
            # Never more than the manifest's size (the digest covers exactly that); a blob whose bytes have all
            # arrived is not stopped, only verified.
            while offset < size:
                if stop.is_set():
                    raise Stopped()
                chunk = response.read(min(CHUNK, size - offset))
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                hasher.update(chunk)
                offset += len(chunk)
                with self.lock:
                    pulled.downloaded_bytes += len(chunk)
        finally:
            response.close()
        if offset < size:
            raise http.client.IncompleteRead(b"", size - offset)
        return hasher, offset

    # --- into the store ---------------------------------------------------------------------------

    def unpack(self, pulled: PullPlan, layer: PlannedLayer, name: str) -> None:
        """Unpack a verified blob into the store (verified again there, with its diff_id), then delete it."""
        algorithm, _hexpart = image_manifest.digest_parts(layer.digest)
        files = image_source.DirFiles(self.path(algorithm))
        files.description = "the download of %s" % pulled.reference.name
        blob = image_source.Layer(layer.index, layer.media_type, layer.digest, layer.diff_id, layer.size, files, name)
        try:
            layer_store.unpack_layer(pulled.store, blob, layer.diff_id)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise KernelboxError(
                    "no space left on device in the layer store %s while unpacking layer %d/%d %s of %s; the "
                    "partly unpacked layer was removed: free space (image_prune removes unused layers) and run again"
                    % (pulled.store, layer.index + 1, len(pulled.layers), layer.diff_id, pulled.reference),
                    errno=exc.errno)
            raise
        finally:
            files.close()
            _unlink(self.folder(algorithm), name)


def _transient(exc: client.RegistryError) -> bool:
    return isinstance(exc, client.Unreachable) or exc.result.get("status") in client.TRANSIENT_STATUS


def _hash_existing(fd: int, algorithm: str, size: int) -> t.Tuple[t.Any, int]:
    """Hash what an interrupted download left (a resume must verify the whole blob); drop it if oversized."""
    hasher = hashlib.new(algorithm)
    length = os.fstat(fd).st_size
    if length > size:
        os.ftruncate(fd, 0)
        return hasher, 0
    os.lseek(fd, 0, os.SEEK_SET)
    done = 0
    while done < length:
        chunk = os.read(fd, min(CHUNK, length - done))
        if not chunk:
            break
        hasher.update(chunk)
        done += len(chunk)
    return hasher, done


def _lock_file(fd: int, what: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + DOWNLOAD_LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if stop.is_set():
                raise Stopped()
            if time.monotonic() > deadline:
                raise KernelboxError("%s stayed locked by another run for %d s" % (what, DOWNLOAD_LOCK_TIMEOUT))
            time.sleep(0.2)


def _exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _names(folder: int, name: str, fd: int) -> bool:
    """Whether ``name`` in ``folder`` is still the file open as ``fd`` (not removed or replaced meanwhile)."""
    try:
        named = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _drop_if_empty(folder: int, name: str, fd: int) -> None:
    """A download that failed or stopped before its first byte leaves nothing to resume: no empty file stays."""
    if os.fstat(fd).st_size == 0:
        _unlink(folder, name)


def _unlink(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
