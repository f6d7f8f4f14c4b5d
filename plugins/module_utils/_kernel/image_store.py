# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the images of a layer store (records beside the layers).

Layout, inside the layer store (see layer_store)::

    STORE/images/sha256/<image id hex>.json   one record per image, written atomically under the store lock
    STORE/downloads/sha256/<blob hex>[.partial]  blobs being fetched from a registry (never layers)
    STORE/.writers                            flock: pulls and unpacks hold it shared, a prune exclusive

An image's ID is its config digest, as in docker and podman (a rootfs tarball has no config: its ID
is the tarball's digest).  A record holds what a run needs without the network: the layers (diff_ids,
base first, with their blob digests), the image config, the platform, and the names:

* ``tags``: ``{"registry/repository:tag": "<digest that tag resolved to>"}``; a tag names one image at a
  time, so recording it on an image takes it off any other;
* ``digests``: ``registry/repository@digest`` names the image can be pulled by;
* ``dangling``: true once an image lost its last tag to a newer one (``docker image prune`` removes those);
  an image loaded from a file without a name was never tagged and is not dangling.

Records are small JSON files; listing reads them all (a store holds tens of images, not millions).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import image_manifest, layer_store
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

SCHEMA = 1
IMAGES = "images"
DOWNLOADS = "downloads"
WRITERS_LOCK = ".writers"
MAX_RECORD = 8 << 20
ALGORITHMS = ("sha256", "sha512")


@dataclass
class ImageRecord:
    id: str
    layers: t.List[t.Dict[str, t.Any]]  # base first: {diff_id, digest, size, media_type}
    config: t.Dict[str, t.Any]
    platform: t.Optional[str] = None
    manifest_digest: t.Optional[str] = None
    tags: t.Dict[str, t.Optional[str]] = field(default_factory=dict)
    digests: t.List[str] = field(default_factory=list)
    source: str = ""  # "registry" or the image file's path
    registry_url: t.Optional[str] = None  # scheme://host that served it (a plain-HTTP hint for the next pull)
    dangling: bool = False
    recorded_at: str = ""

    @property
    def diff_ids(self) -> t.List[str]:
        return [layer["diff_id"] for layer in self.layers]

    def to_json(self) -> t.Dict[str, t.Any]:
        return {"schema": SCHEMA, "id": self.id, "layers": self.layers, "config": self.config,
                "platform": self.platform, "manifest_digest": self.manifest_digest, "tags": dict(self.tags),
                "digests": sorted(set(self.digests)), "source": self.source, "registry_url": self.registry_url,
                "dangling": self.dangling, "recorded_at": self.recorded_at}

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> "ImageRecord":
        return cls(id=data["id"], layers=list(data.get("layers") or []), config=dict(data.get("config") or {}),
                   platform=data.get("platform"), manifest_digest=data.get("manifest_digest"),
                   tags=dict(data.get("tags") or {}), digests=list(data.get("digests") or []),
                   source=data.get("source") or "", registry_url=data.get("registry_url"),
                   dangling=bool(data.get("dangling")), recorded_at=data.get("recorded_at") or "")

    def same_content(self, other: "ImageRecord") -> bool:
        """Whether writing ``other`` over this record would change nothing but its time stamp."""
        mine, theirs = self.to_json(), other.to_json()
        mine.pop("recorded_at")
        theirs.pop("recorded_at")
        return mine == theirs


def _record_path(store: str, image_id: str) -> str:
    algorithm, hexpart = image_manifest.digest_parts(image_id)
    return os.path.join(store, IMAGES, algorithm, hexpart + ".json")


def _read(path: str) -> t.Optional[ImageRecord]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(MAX_RECORD).decode("utf-8"))
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            return None
        record = ImageRecord.from_json(data)
        image_manifest.normalise_digest(record.id)
        return record
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # a damaged record is as good as none: the image is pulled or loaded again


def load(store: str, image_id: str) -> t.Optional[ImageRecord]:
    return _read(_record_path(store, image_id))


def list_images(store: str) -> t.List[ImageRecord]:
    """Every readable image record of the store, sorted by ID."""
    folder = os.path.join(store, IMAGES)
    found = []
    try:
        algorithms = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for algorithm in algorithms:
        try:
            names = sorted(os.listdir(os.path.join(folder, algorithm)))
        except OSError:
            continue
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                record = _read(os.path.join(folder, algorithm, name))
                if record is not None and record.id == "%s:%s" % (algorithm, name[:-5]):
                    found.append(record)
    return found


def find_tag(images: t.Iterable[ImageRecord], tagged: str) -> t.Optional[ImageRecord]:
    """The image a ``registry/repository:tag`` names, if any."""
    for record in images:
        if tagged in record.tags:
            return record
    return None


def find_digest(images: t.Iterable[ImageRecord], by_digest: str) -> t.Optional[ImageRecord]:
    """The image a ``registry/repository@digest`` names, if any."""
    for record in images:
        if by_digest in record.digests:
            return record
    return None


def layers_present(store: str, record: ImageRecord) -> bool:
    return all(layer_store.status(store, diff_id) == layer_store.PRESENT for diff_id in record.diff_ids)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- writing (callers hold layer_store.locked) ---------------------------------------------------

def ensure_dir(root_fd: int, parts: t.Sequence[str]) -> int:
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def write(store: str, root_fd: int, record: ImageRecord) -> None:
    algorithm, hexpart = image_manifest.digest_parts(record.id)
    folder = ensure_dir(root_fd, (IMAGES, algorithm))
    try:
        layer_store.write_json_atomic(folder, hexpart + ".json", record.to_json())
    finally:
        os.close(folder)


def remove_record(store: str, image_id: str) -> None:
    """Forget an image (its layers stay until removed or pruned)."""
    with layer_store.locked(store):
        delete(store, image_id)


def delete(store: str, image_id: str) -> None:
    try:
        os.unlink(_record_path(store, image_id))
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def tag_moves(images: t.Iterable[ImageRecord], image_id: str, tags: t.Iterable[str]) -> t.List[t.Tuple[str, str]]:
    """[(tag, id of the image that holds it now)] for the ``tags`` another image holds."""
    wanted = set(tags)
    return [(tag, record.id) for record in images if record.id != image_id for tag in record.tags if tag in wanted]


def save(store: str, record: ImageRecord) -> t.List[str]:
    """Write ``record``, taking its tags off any other image (which becomes dangling without tags).

    Merges with an existing record of the same image: tags and digests are added, not replaced.
    Returns what changed, as sentences.  Takes the store lock.
    """
    notes = []
    with layer_store.locked(store) as root:
        images = list_images(store)
        current = next((r for r in images if r.id == record.id), None)
        merged = _merged(current, record)
        for tag, holder_id in tag_moves(images, record.id, merged.tags):
            holder = next(r for r in images if r.id == holder_id)
            del holder.tags[tag]
            if not holder.tags:
                holder.dangling = True
            write(store, root, holder)
            notes.append("the tag %s moved from image %s" % (tag, holder_id))
        if current is None or not current.same_content(merged):
            merged.recorded_at = now()
            write(store, root, merged)
            notes.append("recorded image %s" % record.id)
    return notes


def _merged(current: t.Optional[ImageRecord], new: ImageRecord) -> ImageRecord:
    """``new`` over ``current``: names are added; the rest stays as first recorded (the same config means the
    same image, but a file and a registry may compress its layers differently: no flapping between them)."""
    if current is None:
        return ImageRecord(**{**new.__dict__, "tags": dict(new.tags), "digests": sorted(set(new.digests))})
    tags = dict(current.tags)
    tags.update(new.tags)
    return ImageRecord(id=current.id, layers=current.layers, config=current.config,
                       platform=current.platform or new.platform,
                       manifest_digest=current.manifest_digest or new.manifest_digest, tags=tags,
                       digests=sorted(set(current.digests) | set(new.digests)),
                       source=current.source or new.source, registry_url=current.registry_url or new.registry_url,
                       dangling=current.dangling and not tags, recorded_at=current.recorded_at)


def needs_save(images: t.Sequence[ImageRecord], record: ImageRecord) -> t.List[str]:
    """Why ``save(record)`` would change the store (empty: it would not), for plans and check mode."""
    current = next((r for r in images if r.id == record.id), None)
    reasons = ["the tag %s is on image %s" % (tag, holder) for tag, holder in tag_moves(images, record.id, record.tags)]
    if current is None:
        reasons.insert(0, "no record of image %s" % record.id)
    elif not current.same_content(_merged(current, record)):
        missing = sorted(set(record.tags) - set(current.tags)) + sorted(set(record.digests) - set(current.digests))
        reasons.insert(0, "image %s is not yet named %s" % (record.id, ", ".join(missing))
                       if missing else "the record of image %s is out of date" % record.id)
    return reasons


# --- removal --------------------------------------------------------------------------------------

def untag(store: str, image_id: str, tag: str) -> None:
    """Take ``tag`` off an image (its other names stay)."""
    with layer_store.locked(store) as root:
        record = load(store, image_id)
        if record is not None and tag in record.tags:
            del record.tags[tag]
            write(store, root, record)


def layer_users(images: t.Iterable[ImageRecord]) -> t.Dict[str, t.List[str]]:
    """diff_id -> IDs of the images that use the layer."""
    users: t.Dict[str, t.List[str]] = {}
    for record in images:
        for diff_id in record.diff_ids:
            users.setdefault(diff_id, []).append(record.id)
    return users


class SharedWriters:
    """The writers lock held shared across several steps (``acquire`` ... ``release``); the lock goes with the
    file descriptor, so a run that dies in between releases it too."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.fd: t.Optional[int] = None

    def acquire(self) -> None:
        if self.fd is None:
            self.fd = _lock_writers(self.store, exclusive=False, timeout=layer_store.LOCK_TIMEOUT)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _lock_writers(store: str, exclusive: bool, timeout: float) -> int:
    root = layer_store.open_root(store)  # creates the store (0700) if needed, without following symlinks
    try:
        fd = os.open(WRITERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root)
    finally:
        os.close(root)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KernelboxError("the layer store %s stayed busy (%s) for %d s" % (
                        store, "a pull or unpack is running" if exclusive else "a prune is running", timeout))
                time.sleep(0.2)
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def writers(store: str, exclusive: bool = False, timeout: float = layer_store.LOCK_TIMEOUT) -> t.Iterator[None]:
    """Held shared by every pull and unpack for its whole run, exclusive by a prune.

    A prune must not remove a layer a concurrent pull has unpacked but not yet recorded in an image.
    """
    fd = _lock_writers(store, exclusive, timeout)
    try:
        yield
    finally:
        os.close(fd)


# --- inventory and pruning ------------------------------------------------------------------------

@dataclass
class StoredLayer:
    diff_id: str
    status: str  # layer_store.PRESENT or PARTIAL
    size: t.Optional[int]  # the uncompressed tar's size, from the marker
    images: t.List[str] = field(default_factory=list)  # IDs of the images that use it
    mounts: t.List[str] = field(default_factory=list)  # overlays that have it as a lower layer


@dataclass
class Leftover:
    path: str  # relative to the store
    size: int
    why: str


def stored_layers(store: str) -> t.List[str]:
    """diff_ids of every layer directory in the store, complete or not."""
    found = []
    for algorithm in ALGORITHMS:
        try:
            names = sorted(os.listdir(os.path.join(store, algorithm)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            try:
                found.append(image_manifest.normalise_digest("%s:%s" % (algorithm, name)))
            except ValueError:
                continue
    return found


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def leftovers(store: str) -> t.List[Leftover]:
    """Interrupted downloads (kept for a resume) and interrupted unpacks: never layers, removable by a prune."""
    found = []
    for algorithm in ALGORITHMS:
        folder = os.path.join(store, DOWNLOADS, algorithm)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            size = os.lstat(os.path.join(folder, name)).st_size
            found.append(Leftover(os.path.join(DOWNLOADS, algorithm, name), size,
                                  "an interrupted download" if name.endswith(".partial") else "a download not unpacked"))
    staging = os.path.join(store, "tmp")
    for name in sorted(os.listdir(staging)) if os.path.isdir(staging) else []:
        found.append(Leftover(os.path.join("tmp", name), _tree_size(os.path.join(staging, name)),
                              "an interrupted unpack"))
    return found


def inventory(store: str, images: t.Sequence[ImageRecord],
              lower_users: t.Callable[[str], t.List[str]]) -> t.Dict[str, StoredLayer]:
    """Every layer in the store, with its size, the images that use it and the overlays that mount it.

    ``lower_users(layer_directory)`` names the overlay mount points that have the layer as a lower.
    """
    layers: t.Dict[str, StoredLayer] = {}
    for diff_id in stored_layers(store):
        state = layer_store.status(store, diff_id)
        marker = layer_store.read_marker(store, diff_id) or {}
        size = marker.get("size") if state == layer_store.PRESENT else None
        layers[diff_id] = StoredLayer(diff_id, state, size if isinstance(size, int) else None,
                                      mounts=lower_users(layer_store.layer_path(store, diff_id)))
    for record in images:
        for diff_id in dict.fromkeys(record.diff_ids):
            if diff_id in layers:
                layers[diff_id].images.append(record.id)
    return layers


@dataclass
class PrunePlan:
    images: t.List[t.Tuple[ImageRecord, str]]  # (image, why it goes)
    layers: t.List[t.Tuple[StoredLayer, str]]
    kept: t.List[t.Tuple[str, t.List[str]]]  # (diff_id, the overlays using it) that would otherwise go
    leftovers: t.List[Leftover]

    @property
    def space(self) -> int:
        return sum(layer.size or 0 for layer, _why in self.layers) + sum(left.size for left in self.leftovers)


def prune_plan(images: t.Sequence[ImageRecord], layers: t.Mapping[str, StoredLayer],
               left: t.Sequence[Leftover], remove_all: bool) -> PrunePlan:
    """What a prune removes: dangling images (with ``remove_all``, every image no overlay uses), then every
    layer no remaining image uses, and the leftovers.  Nothing an overlay uses is ever removed."""
    def mounted(record: ImageRecord) -> t.List[str]:
        points = set()
        for diff_id in record.diff_ids:
            points.update(layers[diff_id].mounts if diff_id in layers else [])
        return sorted(points)

    doomed: t.List[t.Tuple[ImageRecord, str]] = []
    for record in images:
        if mounted(record):
            continue
        if record.dangling:
            doomed.append((record, "dangling: its tags moved to newer images"))
        elif remove_all:
            doomed.append((record, "all=true and no overlay uses its layers"))
    gone = {record.id for record, _why in doomed}
    plan = PrunePlan(doomed, [], [], list(left))
    for diff_id, layer in sorted(layers.items()):
        users = [image_id for image_id in layer.images if image_id not in gone]
        if users:
            continue
        if layer.mounts:
            plan.kept.append((diff_id, list(layer.mounts)))
            continue
        why = "no image uses it" if layer.status == layer_store.PRESENT else \
            "partially unpacked, and no image uses it"
        plan.layers.append((layer, why))
    return plan


def remove_unused_image(store: str, image_id: str, remove_all: bool,
                        lower_users: t.Callable[[str], t.List[str]]) -> bool:
    """Remove an image record if it is still prunable (dangling, or any image with ``remove_all``, and unmounted)."""
    with writers(store, exclusive=True):
        record = load(store, image_id)
        if record is None or not (record.dangling or remove_all):
            return False
        if any(lower_users(layer_store.layer_path(store, diff_id)) for diff_id in record.diff_ids):
            return False
        with layer_store.locked(store):
            delete(store, image_id)
        return True


def remove_unused_layer(store: str, diff_id: str, lower_users: t.Callable[[str], t.List[str]]) -> bool:
    """Remove a layer unless an image or an overlay took it up meanwhile; False when it stayed.

    Holds the writers lock exclusively: no pull or unpack is between unpacking and recording a layer.
    """
    with writers(store, exclusive=True):
        if any(diff_id in record.diff_ids for record in list_images(store)):
            return False
        if lower_users(layer_store.layer_path(store, diff_id)):
            return False
        layer_store.remove_layer(store, diff_id)
        return True


def remove_leftover(store: str, leftover: Leftover) -> None:
    """Remove an interrupted download (no pull is running: writers lock) or unpack (store lock)."""
    if leftover.path.startswith(DOWNLOADS + "/"):
        with writers(store, exclusive=True):
            try:
                os.unlink(os.path.join(store, leftover.path))
            except FileNotFoundError:
                pass
        return
    with layer_store.locked(store):
        layer_store.clean_staging(store)
