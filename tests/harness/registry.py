# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real OCI distribution registry for the tests: Debian's docker-registry (CNCF distribution 2.8).

Started on loopback inside tests/sandbox only, in one of four configurations:

* ``plain``: HTTP, no authentication;
* ``tls``: HTTPS with a certificate signed by a CA made here (``Registry.ca_path``);
* ``basic``: HTTP with htpasswd (bcrypt) basic authentication;
* ``token``: HTTP with the token flow: the registry answers 401 ``Bearer realm=...`` and trusts JWTs
  signed by a key whose certificate is in its ``rootcertbundle``; ``TokenServer`` below is that
  token service (anonymous pull tokens for every repository except ``private/*``, which needs the
  test user's basic credentials), the way Docker Hub works.

Images are pushed with ``skopeo copy`` from OCI layouts.  ``FaultProxy`` sits between a client and a
registry and can corrupt one byte of a blob or hold a blob mid-way, for the fault tests.

Test tooling: it never imports the collection.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
import typing as t
import urllib.parse
import urllib.request

from harness import snapshot

USER, PASSWORD = "kbtuser", "kbt-secret-pw"
STARTUP_TIMEOUT = 120.0  # sized for a machine under 4x load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _require_sandbox() -> None:
    if os.environ.get("KB_SANDBOX") != "1":
        raise RuntimeError("the test registry may only run inside tests/sandbox")


# --- certificates ---------------------------------------------------------------------------------

def make_ca(folder: str, name: str = "kbt test CA") -> t.Tuple[t.Any, t.Any, str]:
    """(key, certificate, PEM path) of a self-signed CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    path = os.path.join(folder, name.replace(" ", "-") + ".pem")
    with open(path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(folder: str, ca_key: t.Any, ca_cert: t.Any) -> t.Tuple[str, str]:
    """(certificate path, key path) for 127.0.0.1 and localhost, signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "server.pem"), os.path.join(folder, "server.key")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# --- the token service ----------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """A minimal Docker token service: GET /token?service=S&scope=repository:NAME:pull -> {"token": JWT}."""

    ISSUER, SERVICE = "kbt-token-issuer", "kbt-registry"

    def __init__(self, folder: str) -> None:
        self.key, self.cert, self.bundle = make_ca(folder, "kbt token signer")
        self.port = free_port()
        self.requests: t.List[t.Dict[str, t.Any]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.handle(self)

            def log_message(self, *args: t.Any) -> None:
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return "http://127.0.0.1:%d/token" % self.port

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        scope = (query.get("scope") or [""])[0]
        header = request.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            name, _colon, password = base64.b64decode(header[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                self._reply(request, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                return
            user = name
        parts = scope.split(":")
        access = []
        if len(parts) == 3 and parts[0] == "repository" and (user or not parts[1].startswith("private/")):
            actions = [a for a in parts[2].split(",") if a in ("pull", "push")]
            access = [{"type": "repository", "name": parts[1], "actions": actions}]
        self.requests.append({"scope": scope, "user": user, "service": (query.get("service") or [""])[0],
                              "granted": bool(access)})
        self._reply(request, 200, {"token": self.token(user or "", access), "expires_in": 300})

    def token(self, subject: str, access: t.List[t.Dict[str, t.Any]]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "exp": now + 300, "nbf": now - 60,
                  "iat": now, "jti": "%d-%d" % (now, len(self.requests)), "access": access}
        signing_input = "%s.%s" % (_b64url(json.dumps(header).encode()), _b64url(json.dumps(claims).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    @staticmethod
    def _reply(request: http.server.BaseHTTPRequestHandler, status: int, body: t.Dict[str, t.Any]) -> None:
        raw = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(raw)))
        request.end_headers()
        request.wfile.write(raw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the registry ---------------------------------------------------------------------------------

class Registry:
    """One docker-registry process on 127.0.0.1:<port>, with its storage under ``folder``."""

    def __init__(self, folder: str, mode: str = "plain") -> None:
        _require_sandbox()
        self.folder, self.mode = folder, mode
        os.makedirs(folder, exist_ok=True)
        self.port = free_port()
        self.ca_path: t.Optional[str] = None
        self.token_server: t.Optional[TokenServer] = None
        self.proc: t.Optional[subprocess.Popen] = None
        self.config_path = os.path.join(folder, "config.yml")
        self.log_path = os.path.join(folder, "registry.log")
        with open(self.config_path, "w") as handle:
            json.dump(self._config(), handle, indent=1)  # JSON is YAML
        self.start()

    @property
    def host(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def scheme(self) -> str:
        return "https" if self.mode == "tls" else "http"

    def _config(self) -> t.Dict[str, t.Any]:
        config: t.Dict[str, t.Any] = {
            "version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.folder, "data")},
                        "delete": {"enabled": True}, "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": "kbt-test-secret"},
        }
        if self.mode == "tls":
            ca_key, ca_cert, self.ca_path = make_ca(self.folder)
            cert, key = make_server_cert(self.folder, ca_key, ca_cert)
            config["http"]["tls"] = {"certificate": cert, "key": key}
        elif self.mode == "basic":
            htpasswd = os.path.join(self.folder, "htpasswd")
            subprocess.run(["htpasswd", "-Bbc", htpasswd, USER, PASSWORD], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            config["auth"] = {"htpasswd": {"realm": "kbt-basic-realm", "path": htpasswd}}
        elif self.mode == "token":
            self.token_server = TokenServer(self.folder)
            config["auth"] = {"token": {"realm": self.token_server.realm, "service": TokenServer.SERVICE,
                                        "issuer": TokenServer.ISSUER,
                                        "rootcertbundle": self.token_server.bundle}}
        elif self.mode != "plain":
            raise ValueError(self.mode)
        return config

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(["docker-registry", "serve", self.config_path], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        snapshot.SHARED_DAEMONS.add(self.proc.pid)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited with %s:\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not listen on %s within %d s:\n%s"
                           % (self.host, STARTUP_TIMEOUT, self.log_tail()))

    def kill(self) -> None:
        """SIGKILL, as a crash would; ``start()`` brings it back on the same port and storage."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)
        if self.proc is not None:
            snapshot.SHARED_DAEMONS.discard(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.proc is not None:
            snapshot.SHARED_DAEMONS.discard(self.proc.pid)
        if self.token_server is not None:
            self.token_server.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return b"".join(handle.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def push(self, layout: str, repository: str, tag: str = "latest", all_platforms: bool = False,
             source_tag: t.Optional[str] = None) -> str:
        """skopeo copy oci:LAYOUT[:TAG] -> this registry; returns the pushed reference."""
        target = "%s/%s:%s" % (self.host, repository, tag)
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests"]
        if all_platforms:
            argv.append("--all")
        if self.mode in ("basic", "token"):
            argv += ["--dest-creds", "%s:%s" % (USER, PASSWORD)]
        source = "oci:%s" % layout + (":%s" % source_tag if source_tag else "")
        proc = subprocess.run(argv + [source, "docker://" + target], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise RuntimeError("skopeo push to %s failed: %s\n%s" % (target, proc.stderr, self.log_tail()))
        return target

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The digest the registry serves for a tag, asked with skopeo (independent of the collection)."""
        argv = ["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://%s/%s:%s" % (self.host, repository, tag)]
        if self.mode in ("basic", "token"):
            argv[3:3] = ["--creds", "%s:%s" % (USER, PASSWORD)]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, check=True)
        import hashlib
        return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


# --- a proxy that misbehaves on purpose -----------------------------------------------------------

class FaultProxy:
    """HTTP reverse proxy to a registry, logging every request, with faults for one blob digest.

    * ``corrupt``: flip one byte of the blob's body at ``offset``;
    * ``hold``: after ``offset`` bytes of the blob, wait until ``release`` is set (the test kills the
      registry meanwhile); whatever the registry sent before dying is passed on, then the client's
      connection is cut before the blob is complete.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.log: t.List[t.Dict[str, t.Any]] = []
        self.fault: t.Optional[t.Dict[str, t.Any]] = None
        self.held = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                proxy.forward(self, "GET")

            def do_HEAD(self) -> None:  # noqa: N802
                proxy.forward(self, "HEAD")

            def log_message(self, *args: t.Any) -> None:
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return "127.0.0.1:%d" % self.port

    def forward(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        entry = {"method": method, "path": request.path, "range": request.headers.get("Range"), "status": None,
                 "sent": 0}
        self.log.append(entry)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            upstream.request(method, request.path, headers=headers)
            response = upstream.getresponse()
        except OSError as exc:
            entry["status"] = 502
            body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "upstream: %s" % exc}]}).encode()
            request.send_response(502)
            request.send_header("Content-Length", str(len(body)))
            request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(body)
            request.close_connection = True
            upstream.close()
            return
        entry["status"] = response.status
        request.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                request.send_header(key, value)
        request.send_header("Connection", "close")
        request.end_headers()
        request.close_connection = True
        try:
            if method == "GET":
                self._body(request, response, entry)
        finally:
            upstream.close()

    def _body(self, request: http.server.BaseHTTPRequestHandler, response: http.client.HTTPResponse,
              entry: t.Dict[str, t.Any]) -> None:
        fault = self.fault if self.fault and self.fault["digest"] in entry["path"] else None
        position = 0
        if entry["range"] and entry["status"] == 206:
            position = int(entry["range"].split("=")[1].split("-")[0])
        while True:
            try:
                chunk = response.read(64 << 10)
            except (OSError, http.client.HTTPException):
                return  # upstream died: cut the client off mid-body
            if not chunk:
                return
            if fault and fault["kind"] == "corrupt" and position <= fault["offset"] < position + len(chunk):
                cut = fault["offset"] - position
                chunk = chunk[:cut] + bytes([chunk[cut] ^ 0xFF]) + chunk[cut + 1:]
            if fault and fault["kind"] == "hold" and position + len(chunk) >= fault["offset"] and \
                    not self.release.is_set():
                cut = fault["offset"] - position
                request.wfile.write(chunk[:cut])
                entry["sent"] += cut
                position += cut
                chunk = chunk[cut:]
                self.held.set()
                self.release.wait(300)
                fault = None  # after the hold, pass on what is left (until the registry's death cuts it)
            request.wfile.write(chunk)
            entry["sent"] += len(chunk)
            position += len(chunk)

    def blob_requests(self, digest: str) -> t.List[t.Dict[str, t.Any]]:
        return [e for e in self.log if e["method"] == "GET" and "/blobs/" + digest in e["path"]]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(predicate: t.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("%s did not happen within %d s" % (what, timeout))


def catalog(registry: Registry) -> t.Any:
    """The registry's /v2/_catalog, read with urllib (plain mode only)."""
    with urllib.request.urlopen("http://%s/v2/_catalog" % registry.host, timeout=30) as response:
        return json.load(response)
