# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: registry credentials and authentication challenges (pure parts).

* ``parse_challenges``: the ``WWW-Authenticate`` header of a 401 (RFC 7235), e.g.
  ``Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"``.
* ``auth_file_candidates``: where podman, skopeo and docker keep logins, in the order podman reads them:
  ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/UID/auth.json``),
  ``~/.config/containers/auth.json``, ``~/.docker/config.json``, ``~/.dockercfg``.
* ``credentials_from_auth_data``: the entry for a registry (or a repository below it; the most specific
  key wins, as in containers-auth.json(5)), from an ``auths`` map of ``{"auth": base64("user:password")}``.
  Credential helpers (``credHelpers``, ``credsStore``) are programs; they are reported, never run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import reference as refs

MAX_AUTH_FILE = 1 << 20
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    origin: str = "parameters"  # where they came from, for messages ("/root/.docker/config.json")

    def __repr__(self) -> str:  # never print the password
        return "Credentials(%r, origin=%r)" % (self.username, self.origin)


class Challenge(t.NamedTuple):
    scheme: str  # lower case: "bearer", "basic"
    params: t.Dict[str, str]


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t,":
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> t.Tuple[str, int]:
    """The value of a quoted-string starting at ``text[pos] == '"'``; returns (value, position after it)."""
    out = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos


def parse_challenges(headers: t.Iterable[str]) -> t.List[Challenge]:
    """Every challenge in the given ``WWW-Authenticate`` header values, in order."""
    challenges: t.List[Challenge] = []
    for text in headers:
        pos = _skip_space(text, 0)
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                break
            word, pos = match.group(0), match.end()
            after = _skip_space_only(text, pos)
            if after < len(text) and text[after] == "=" and challenges:
                value, pos = _param_value(text, _skip_space_only(text, after + 1))
                challenges[-1].params[word.lower()] = value
            else:
                challenges.append(Challenge(word.lower(), {}))
                # a token68 (Basic's old form) right after the scheme is ignored: registries send params
            pos = _skip_space(text, pos)
    return challenges


def _skip_space_only(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _param_value(text: str, pos: int) -> t.Tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        return _quoted(text, pos)
    match = _TOKEN.match(text, pos)
    if not match:
        return "", pos
    return match.group(0), match.end()


def auth_file_candidates(environ: t.Mapping[str, str], uid: int, home: str) -> t.List[str]:
    """The auth files podman would read, in its order (the first that has an entry wins)."""
    paths = []
    if environ.get("REGISTRY_AUTH_FILE"):
        paths.append(environ["REGISTRY_AUTH_FILE"])
    runtime_dir = environ.get("XDG_RUNTIME_DIR") or "/run/containers/%d" % uid
    if environ.get("XDG_RUNTIME_DIR"):
        runtime_dir = os.path.join(runtime_dir, "containers")
    paths.append(os.path.join(runtime_dir, "auth.json"))
    paths.append(os.path.join(environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                              "containers", "auth.json"))
    paths.append(os.path.join(environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json"))
    paths.append(os.path.join(home, ".dockercfg"))
    return paths


def _normalise_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://reg:5000`` -> ``reg:5000``; paths stay."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            text = re.sub(r"/v[12]/?$", "", text)
            break
    text = text.rstrip("/")
    host, slash, path = text.partition("/")
    return refs.normalise_registry(host) + slash + path


def _decode_entry(entry: t.Any, where: str) -> t.Optional[Credentials]:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            decoded = base64.b64decode(entry["auth"], validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("%s: an 'auth' entry is not base64 of user:password" % where)
        username, colon, password = decoded.partition(":")
        if not colon:
            raise ValueError("%s: an 'auth' entry is not base64 of user:password" % where)
        return Credentials(username, password, where)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"], where)
    return None


def credentials_from_auth_data(data: t.Any, registry: str, repository: str,
                               where: str) -> t.Tuple[t.Optional[Credentials], t.Optional[str]]:
    """(credentials, note): the most specific entry for ``registry/repository``, or a note on why there is none.

    The note names a credential helper that would have been asked; it is for messages, never run.
    """
    if not isinstance(data, dict):
        return None, None
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else None
    if auths is None and "auths" not in data and all(isinstance(v, dict) for v in data.values()):
        auths = data  # the legacy ~/.dockercfg form: the map itself
    wanted = [registry + "/" + "/".join(repository.split("/")[:count])
              for count in range(len(repository.split("/")), 0, -1)] + [registry]
    normalised = {}
    for key, entry in (auths or {}).items():
        if isinstance(key, str):
            normalised.setdefault(_normalise_key(key), entry)
    for key in wanted:
        if key in normalised:
            found = _decode_entry(normalised[key], where)
            if found:
                return found, None
    helpers = data.get("credHelpers") if isinstance(data.get("credHelpers"), dict) else {}
    for key, helper in helpers.items():
        if isinstance(key, str) and _normalise_key(key) == registry:
            return None, "%s names the credential helper docker-credential-%s for %s, which is not run" % (
                where, helper, registry)
    if isinstance(data.get("credsStore"), str) and data["credsStore"]:
        return None, "%s names the credential store docker-credential-%s, which is not run" % (
            where, data["credsStore"])
    return None, None


def load_auth_file(path: str) -> t.Any:
    """The parsed JSON of an auth file (None when missing); raises ValueError for a damaged one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_AUTH_FILE + 1)
    if len(raw) > MAX_AUTH_FILE:
        raise ValueError("%s is larger than %d bytes; not an auth file" % (path, MAX_AUTH_FILE))
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("%s is not valid JSON: %s" % (path, exc))


def find_credentials(files: t.Sequence[str], registry: str,
                     repository: str) -> t.Tuple[t.Optional[Credentials], t.List[str]]:
    """Credentials from the first file that has an entry, plus notes (helpers named, damaged files)."""
    notes: t.List[str] = []
    for path in files:
        try:
            data = load_auth_file(path)
        except (OSError, ValueError) as exc:
            notes.append(str(exc))
            continue
        if data is None:
            continue
        try:
            found, note = credentials_from_auth_data(data, registry, repository, path)
        except ValueError as exc:
            notes.append(str(exc))
            continue
        if note:
            notes.append(note)
        if found:
            return found, notes
    return None, notes


def basic_header(credentials: Credentials) -> str:
    raw = ("%s:%s" % (credentials.username, credentials.password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")
