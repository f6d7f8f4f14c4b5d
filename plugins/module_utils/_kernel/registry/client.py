# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a client for one repository of an OCI distribution (v2) registry.

HTTP goes through Ansible's own client (``ansible.module_utils.urls.Request``), so proxies
(``https_proxy``, ``no_proxy``), TLS and redirects behave as in every other Ansible module.

* **Scheme.** HTTPS, verified against the system CAs or ``ca_path``.  Plain HTTP only for an insecure
  registry: ``validate_certs=False`` (podman's ``--tls-verify=false``) or a loopback registry (docker's
  default), and only after HTTPS failed at the TLS or connection level.
* **Authentication** on a 401, from its ``WWW-Authenticate`` challenge: ``Bearer`` asks the token
  server in ``realm`` for a pull token for this repository (anonymously, or with the credentials:
  how Docker Hub works); ``Basic`` sends the credentials.  The ``Authorization`` header is never
  forwarded on a redirect (blobs often redirect to a CDN), and credentials never go to a plain-HTTP
  token server unless the registry itself is plain HTTP.
* **Retries.** Connection errors, timeouts, 408, 429 and 5xx are retried with a growing back-off, at
  most ``retries`` times; other errors are final, with the registry's own error codes in the message.
* **Bounded.** Every socket operation has ``timeout``; metadata (manifests, configs, token replies,
  error bodies) is read up to a fixed size; a blob up to its descriptor's size.

One ``Repository`` is safe to share between the threads of a concurrent download.
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import threading
import time
import typing as t
import urllib.error
import urllib.parse
from dataclasses import dataclass, field

from ansible.module_utils.urls import Request, make_context

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.image_manifest import (
    INDEX_TYPES, MANIFEST_TYPES, ImageError, digest_of)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry import auth
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.registry.reference import Reference

MAX_METADATA = 4 << 20
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_REPLY = 1 << 20
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
USER_AGENT = "kernelbox.containers (Ansible; OCI distribution client)"
SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+json",
                 "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)


class RegistryError(ImageError):
    """The registry refused or failed a request; the message names the registry, the object and the reason."""


class NotFound(RegistryError):
    pass


class Unauthorized(RegistryError):
    pass


class Unreachable(RegistryError):
    """No answer (connection refused, reset, timed out), after the retries."""


@dataclass
class Options:
    """How to talk to registries.  ``auth_files`` are read only when a registry asks for credentials."""

    credentials: t.Optional[auth.Credentials] = None
    auth_files: t.Sequence[str] = ()
    ca_path: t.Optional[str] = None
    validate_certs: bool = True
    timeout: float = 30.0
    retries: int = 3
    notes: t.List[str] = field(default_factory=list)  # things worth a warning (credential helpers not run, ...)


@dataclass
class Manifest:
    """A manifest or index as served: the bytes (verified against ``digest``), its media type and parsed JSON."""

    raw: bytes
    media_type: str
    digest: str
    data: t.Dict[str, t.Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or self.data.get("mediaType") in INDEX_TYPES


def _registry_errors(body: bytes) -> str:
    """'MANIFEST_UNKNOWN: manifest unknown' from a registry's JSON error body, or a short text excerpt."""
    try:
        data = json.loads(body.decode("utf-8"))
        errors = data.get("errors") if isinstance(data, dict) else None
    except (UnicodeDecodeError, ValueError):
        errors = None
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors[:5]:
            if isinstance(error, dict):
                parts.append("%s: %s" % (error.get("code", "?"), error.get("message", "")))
        if parts:
            return "; ".join(parts)
    text = body.decode("utf-8", "replace").strip().splitlines()
    return text[0][:200] if text else ""


def _is_tls_or_connect_failure(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ssl.SSLError, ssl.CertificateError, ConnectionRefusedError, ConnectionResetError,
                               http.client.BadStatusLine))


def _is_certificate_failure(exc: BaseException) -> bool:
    """A certificate the client does not trust: retrying cannot help."""
    return isinstance(getattr(exc, "reason", exc), (ssl.SSLCertVerificationError, ssl.CertificateError))


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed (%s)" % (exc.verify_message or exc)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return text


class Repository:
    """One repository of one registry, with its scheme, authorization and retry policy."""

    def __init__(self, reference: Reference, options: Options, scheme_hint: t.Optional[str] = None) -> None:
        self.reference = reference
        self.options = options
        self.host = reference.api_host
        self.insecure_allowed = (not options.validate_certs) or reference.is_loopback
        self._scheme: t.Optional[str] = None
        self._scheme_order = ["https", "http"] if self.insecure_allowed else ["https"]
        if scheme_hint == "http" and self.insecure_allowed:
            self._scheme_order = ["http", "https"]
        self._authorization: t.Optional[str] = None
        self._credentials_loaded = False
        self._credentials: t.Optional[auth.Credentials] = options.credentials
        self._lock = threading.Lock()
        self._http = Request(timeout=options.timeout, http_agent=USER_AGENT, follow_redirects="urllib2",
                             decompress=False, use_netrc=False)
        self.requests = 0

    # --- public -------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return "%s://%s" % (self._scheme or self._scheme_order[0], self.host)

    @property
    def scheme(self) -> t.Optional[str]:
        return self._scheme

    def head_manifest(self, ref: str) -> t.Tuple[t.Optional[str], str]:
        """(Docker-Content-Digest or None, media type) of a manifest, without its body."""
        response = self.open("HEAD", "manifests/" + ref, {"Accept": MANIFEST_ACCEPT}, "manifest %s" % ref)
        try:
            digest = response.headers.get("Docker-Content-Digest")
            return (digest.strip().lower() if digest else None), response.headers.get("Content-Type", "")
        finally:
            response.close()

    def get_manifest(self, ref: str, expected_digest: t.Optional[str] = None,
                     expected_size: t.Optional[int] = None) -> Manifest:
        """A manifest or index by tag or digest, verified when the digest is known."""
        what = "manifest %s of %s" % (ref, self.reference.name)
        response = self.open("GET", "manifests/" + ref, {"Accept": MANIFEST_ACCEPT}, what)
        try:
            raw = self._read_bounded(response, MAX_METADATA, what)
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        finally:
            response.close()
        algorithm = (expected_digest or "sha256:").split(":")[0]
        digest = digest_of(raw, algorithm)
        if expected_digest and digest != expected_digest:
            raise RegistryError("%s does not match its digest: expected %s, received %s"
                                % (what, expected_digest, digest))
        if expected_size is not None and len(raw) != expected_size:
            raise RegistryError("%s is %d bytes, its descriptor says %d" % (what, len(raw), expected_size))
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RegistryError("%s is not valid JSON: %s" % (what, exc))
        if not isinstance(data, dict):
            raise RegistryError("%s is not a JSON object" % what)
        media_type = data.get("mediaType") or media_type
        if media_type in SCHEMA1_TYPES or data.get("schemaVersion") == 1:
            raise RegistryError("%s is a Docker schema 1 manifest, which is deprecated and not supported; "
                                "push the image again with a current client" % what)
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            if "manifests" in data:
                media_type = INDEX_TYPES[0]
            elif "layers" in data:
                media_type = MANIFEST_TYPES[0]
            else:
                raise RegistryError("%s has the unsupported media type %r" % (what, media_type))
        return Manifest(raw, media_type, digest, data)

    def get_small_blob(self, digest: str, size: t.Optional[int], what: str) -> bytes:
        """A config blob: read in full (bounded), verified against its digest and size."""
        response = self.open("GET", "blobs/" + digest, {}, "%s %s" % (what, digest), blob=True)
        try:
            raw = self._read_bounded(response, MAX_METADATA, "%s %s" % (what, digest))
        finally:
            response.close()
        if size is not None and len(raw) != size:
            raise RegistryError("%s %s is %d bytes, the manifest says %d" % (what, digest, len(raw), size))
        if digest_of(raw, digest.split(":")[0]) != digest:
            raise RegistryError("%s %s from %s does not match its digest" % (what, digest, self.reference.name))
        return raw

    def open_blob(self, digest: str, offset: int = 0) -> t.Tuple[t.Any, int]:
        """(response, offset it starts at) for a blob; ``offset`` > 0 asks for a range (0 if ignored)."""
        headers = {"Range": "bytes=%d-" % offset} if offset else {}
        response = self.open("GET", "blobs/" + digest, headers, "blob %s" % digest, blob=True)
        status = getattr(response, "status", None) or response.getcode()
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start == offset:
                return response, offset
            response.close()
            raise RegistryError("blob %s: asked for bytes from %d, the registry sent a range starting at %s"
                                % (digest, offset, start))
        return response, 0

    # --- the request loop ---------------------------------------------------------------------------

    def open(self, method: str, path: str, headers: t.Dict[str, str], what: str, blob: bool = False) -> t.Any:
        """Send one request (authenticating and retrying as needed); returns the open response (2xx).

        ``blob``: the answer may redirect (to a CDN or object store, usually over HTTPS).
        """
        attempt = 0
        authenticated = False
        while True:
            sent_with = self._authorization
            try:
                return self._send(method, path, headers, sent_with, blob)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and not authenticated:
                    self._authenticate(exc, sent_with, what)
                    authenticated = True
                    continue
                if exc.code in TRANSIENT_STATUS and attempt < self.options.retries:
                    attempt += 1
                    self._back_off(attempt, _retry_after(exc))
                    continue
                raise self._http_failure(exc, what)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if attempt < self.options.retries and not _is_certificate_failure(exc):
                    attempt += 1
                    self._back_off(attempt)
                    continue
                raise self._unreachable(exc, what)

    def _send(self, method: str, path: str, headers: t.Dict[str, str], authorization: t.Optional[str],
              blob: bool = False) -> t.Any:
        full = dict(headers)
        if authorization:
            full["Authorization"] = authorization
        self.requests += 1
        if self._scheme:
            return self._http.open(method, self._url(self._scheme, path), headers=full,
                                   unredirected_headers=["Authorization"], context=self._ssl_context(self._scheme, blob))
        failures: t.List[t.Tuple[str, BaseException]] = []
        for scheme in self._scheme_order:
            try:
                response = self._http.open(method, self._url(scheme, path), headers=full,
                                           unredirected_headers=["Authorization"], context=self._ssl_context(scheme, blob))
            except urllib.error.HTTPError as exc:
                if scheme == "http" and exc.code == 400 and len(self._scheme_order) > 1:
                    failures.append((scheme, exc))  # a TLS server asked in plain HTTP ("HTTP request to an HTTPS server")
                    continue
                self._scheme = scheme
                raise
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if not _is_tls_or_connect_failure(exc):
                    raise
                failures.append((scheme, exc))
                continue
            self._scheme = scheme
            return response
        # Nothing answered: the HTTPS failure says more (a certificate problem, say) than plain HTTP's.
        failures.sort(key=lambda failure: failure[0] != "https")
        raise failures[0][1]

    def _url(self, scheme: str, path: str) -> str:
        return "%s://%s/v2/%s/%s" % (scheme, self.host, self.reference.repository, path)

    def _ssl_context(self, scheme: str = "https", redirects: bool = True) -> ssl.SSLContext:
        """One verifying context for every HTTPS request: building one loads the CA store (milliseconds).

        Request.open builds that context for plain-HTTP requests too unless it is given one.  A plain-HTTP
        request that cannot be redirected to HTTPS (manifests; blobs may be) never uses it, so it gets an
        empty client context instead, which verifies everything and trusts nothing.
        """
        if scheme == "http" and not redirects:
            return _empty_context()
        return _verifying_context(self.options.ca_path, self.options.validate_certs)

    def _back_off(self, attempt: int, hint: t.Optional[float] = None) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** (attempt - 1)))
        if hint is not None:
            delay = min(BACKOFF_MAX, max(delay, hint))
        time.sleep(delay)

    # --- errors -------------------------------------------------------------------------------------

    def _http_failure(self, exc: urllib.error.HTTPError, what: str) -> RegistryError:
        try:
            detail = _registry_errors(exc.read(MAX_ERROR_BODY) if exc.fp else b"")
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            exc.close()
        where = "%s (%s)" % (self.reference.name, self.base_url)
        suffix = ": %s" % detail if detail else ""
        if exc.code == 404:
            return NotFound("%s not found in %s: HTTP 404%s" % (what, where, suffix), status=404)
        if exc.code == 401:
            return Unauthorized("%s: registry %s refused the request: HTTP 401 unauthorized%s%s"
                                % (what, where, suffix, self._login_hint()), status=401)
        if exc.code == 403:
            return Unauthorized("%s: registry %s denied access: HTTP 403%s" % (what, where, suffix), status=403)
        return RegistryError("%s: registry %s answered HTTP %d %s%s" % (what, where, exc.code, exc.reason, suffix),
                             status=exc.code)

    def _login_hint(self) -> str:
        if self._credentials:
            return " (with the credentials of %r from %s)" % (self._credentials.username, self._credentials.origin)
        return "; it needs a login: give username and password, or an auth file with an entry for %s" % (
            self.reference.registry)

    def _unreachable(self, exc: BaseException, what: str) -> RegistryError:
        text = _describe(exc)
        hint = ""
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            hint = "; give ca_path (the CA that signed the registry's certificate), or validate_certs: false " \
                   "for an insecure registry"
        attempts = "" if hint else " after %d attempts" % (self.options.retries + 1)
        return Unreachable("%s: cannot reach registry %s (%s)%s: %s%s"
                           % (what, self.reference.registry, self.base_url, attempts, text, hint))

    # --- authentication -----------------------------------------------------------------------------

    def _authenticate(self, exc: urllib.error.HTTPError, sent_with: t.Optional[str], what: str) -> None:
        challenges = auth.parse_challenges(exc.headers.get_all("WWW-Authenticate") or [])
        exc.close()
        with self._lock:
            if self._authorization != sent_with:
                return  # another thread authenticated meanwhile
            bearer = next((c for c in challenges if c.scheme == "bearer"), None)
            basic = next((c for c in challenges if c.scheme == "basic"), None)
            if bearer is not None:
                self._authorization = "Bearer " + self._fetch_token(bearer, what)
            elif basic is not None:
                credentials = self._load_credentials()
                if credentials is None:
                    raise Unauthorized("%s: registry %s (%s) requires a login (Basic realm %r): give username and "
                                       "password, or an auth file with an entry for %s"
                                       % (what, self.reference.registry, self.base_url,
                                          basic.params.get("realm", ""), self.reference.registry), status=401)
                if self._scheme == "http" and not self.insecure_allowed:
                    raise Unauthorized("%s: refusing to send credentials over plain HTTP" % what)
                self._authorization = auth.basic_header(credentials)
            else:
                raise Unauthorized("%s: registry %s answered 401 with no challenge this client supports (%s)"
                                   % (what, self.reference.registry,
                                      ", ".join(c.scheme for c in challenges) or "none"), status=401)

    def _load_credentials(self) -> t.Optional[auth.Credentials]:
        if not self._credentials_loaded:
            self._credentials_loaded = True
            if self._credentials is None and self.options.auth_files:
                found, notes = auth.find_credentials(self.options.auth_files, self.reference.registry,
                                                     self.reference.repository)
                self._credentials = found
                self.options.notes.extend(notes)
        return self._credentials

    def _fetch_token(self, challenge: auth.Challenge, what: str) -> str:
        realm = challenge.params.get("realm", "")
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise Unauthorized("%s: registry %s names the token server %r, which is not an http(s) URL"
                               % (what, self.reference.registry, realm))
        scope = challenge.params.get("scope") or "repository:%s:pull" % self.reference.repository
        query = {"scope": scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        url = realm + ("&" if parsed.query else "?") + urllib.parse.urlencode(query)
        credentials = self._load_credentials()
        headers = {}
        if credentials is not None:
            if parsed.scheme == "http" and self._scheme != "http":
                raise Unauthorized("%s: refusing to send the credentials of %r to the plain-HTTP token server %s"
                                   % (what, credentials.username, realm))
            headers["Authorization"] = auth.basic_header(credentials)
        try:
            response = self._http.open("GET", url, headers=headers, unredirected_headers=["Authorization"],
                                       context=self._ssl_context(parsed.scheme))
        except urllib.error.HTTPError as exc:
            detail = _registry_errors(exc.read(MAX_ERROR_BODY) if exc.fp else b"")
            exc.close()
            who = ("the credentials of %r (from %s)" % (credentials.username, credentials.origin)
                   if credentials else "an anonymous request; it needs a login: give username and password, "
                                       "or an auth file with an entry for %s" % self.reference.registry)
            raise Unauthorized("%s: the token server %s refused %s: HTTP %d%s"
                               % (what, realm, who, exc.code, ": " + detail if detail else ""), status=exc.code)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise Unreachable("%s: cannot reach the token server %s: %s" % (what, realm, _describe(exc)))
        try:
            raw = self._read_bounded(response, MAX_TOKEN_REPLY, "token reply from %s" % realm)
        finally:
            response.close()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized("%s: the token server %s sent no token" % (what, realm))
        return token

    # --- reading ------------------------------------------------------------------------------------

    def _read_bounded(self, response: t.Any, limit: int, what: str) -> bytes:
        try:
            raw = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable("%s: the transfer failed: %s" % (what, _describe(exc)))
        if len(raw) > limit:
            raise RegistryError("%s is larger than %d bytes; refusing it" % (what, limit))
        return raw


@functools.lru_cache(maxsize=8)
def _verifying_context(ca_path: t.Optional[str], validate_certs: bool) -> ssl.SSLContext:
    """The TLS context for HTTPS, once per process and setting: building one loads the CA store."""
    return make_context(cafile=ca_path, validate_certs=validate_certs)


@functools.lru_cache(maxsize=1)
def _empty_context() -> ssl.SSLContext:
    """A TLS client context that trusts no CA: handed to plain-HTTP requests, which never use it (built once)."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _content_range_start(value: str) -> t.Optional[int]:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    text = value.strip()
    if not text.startswith("bytes "):
        return None
    start = text[6:].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _retry_after(exc: urllib.error.HTTPError) -> t.Optional[float]:
    value = exc.headers.get("Retry-After") if exc.headers else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
