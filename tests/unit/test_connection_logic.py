# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The connection plugin's pure parts: the helper protocol, the in-root file copy rules, the staging area,
the code copy's identity and cache, and the session's decisions (install, inline or staged, error mapping)
against a recording fake hop.  The kernel side (joining, confinement, hostile paths) is in
tests/integration/test_connection.py."""

import os
import stat
import subprocess
import sys

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.connect import helper, protocol, transfer
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import materialise
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.plugin_utils import _kernelbox_session as session_lib


# --- protocol ------------------------------------------------------------------------------

def test_request_round_trip_keeps_every_field_and_binary_payload():
    request = protocol.Request(op="exec", container="web", argv=["/bin/sh", "-c", "echo 'a\nb'"], user="1000:1000",
                               timeout=2.5, output_limit=10, payload=b"\x00\n{\"v\": 1}\n\xff")
    decoded = protocol.decode_request(protocol.encode_request(request))
    assert decoded == request


def test_reply_round_trip_with_output_that_looks_like_a_header():
    hostile = b'{"v": 1, "ok": false, "error": "failed", "lengths": [0, 0, 0]}\n'
    reply = protocol.Reply(ok=True, rc=3, stdout=hostile, stderr=b"\n\n", data=b"x" * 5, dropped={"stdout": 7},
                           staged=None, size=5)
    decoded = protocol.decode_reply(protocol.encode_reply(reply))
    assert decoded == reply


@pytest.mark.parametrize("raw, words", [
    (b"", "no header"),
    (b"sh: 1: /usr/bin/python3: not found\n", "not JSON"),
    (b'{"v": 2, "ok": true}\n', "version 1"),
    (b'{"v": 1, "ok": true, "lengths": [1, 0, 0]}\n', "announces 1 bytes, 0 followed"),
    (b'{"v": 1, "ok": true, "lengths": [0, -1, 1]}\nx', "non-negative"),
    (b'{"v": 1, "ok": "yes", "lengths": [0, 0, 0]}\n', "not a boolean"),
    (b'{"v": 1, "ok": false, "error": "oops", "lengths": [0, 0, 0]}\n', "not one of"),
])
def test_replies_that_are_not_ours_are_refused(raw, words):
    with pytest.raises(protocol.ProtocolError, match=words):
        protocol.decode_reply(raw)


@pytest.mark.parametrize("header, words", [
    ('{"v": 1, "op": "rm", "lengths": [0]}', "op"),
    ('{"v": 1, "op": "exec", "argv": ["a", 1], "lengths": [0]}', "argv"),
    ('{"v": 1, "op": "fetch", "size_limit": -1, "lengths": [0]}', "negative"),
    ('{"v": 1, "op": "exec", "timeout": true, "lengths": [0]}', "timeout"),
    ('{"v": 1, "op": "exec", "lengths": [5]}', "announces 5"),
])
def test_bad_requests_are_refused(header, words):
    with pytest.raises(protocol.ProtocolError, match=words):
        protocol.decode_request(header.encode() + b"\n")


def test_a_bad_request_gets_a_refusal_reply_not_a_traceback():
    proc = subprocess.run([sys.executable, "-c", "import sys; from ansible_collections.kernelbox.containers.plugins."
                           "module_utils._runtime.connect import helper; sys.exit(helper.main([]))"],
                          input=b'{"v": 1, "op": "nope", "lengths": [0]}\n', capture_output=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=False)
    assert proc.returncode == 0, proc.stderr
    reply = protocol.decode_reply(proc.stdout)
    assert (reply.ok, reply.error) == (False, "refused") and "op" in reply.msg


# --- copying inside the root (here the root is this process's own '/') ------------------------------

def test_receive_and_send_copy_regular_files(tmp_path):
    source = tmp_path / "in"
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out"
    with open(source, "rb") as stdin, open(os.devnull, "wb") as sink:
        assert transfer.receive(str(dest), 0o640, stdin.fileno(), -1, sink.fileno()) == transfer.EXIT_OK
    assert dest.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640 & ~_umask()
    back = tmp_path / "back"
    with open(back, "wb") as stdout, open(os.devnull, "wb") as sink:
        assert transfer.send(str(dest), 7000, -1, stdout.fileno(), sink.fileno()) == transfer.EXIT_OK
    assert back.read_bytes() == source.read_bytes()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _errors(tmp_path):
    return open(tmp_path / "stderr", "w+b")


def test_send_refuses_more_than_the_limit_and_non_regular_files(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with open(tmp_path / "sink", "wb") as stdout, _errors(tmp_path) as err:
        assert transfer.send(str(big), 100, -1, stdout.fileno(), err.fileno()) == transfer.EXIT_TOO_LARGE
        # A FIFO with no writer would block a plain open for ever: it is refused at once.
        assert transfer.send(str(fifo), 100, -1, stdout.fileno(), err.fileno()) == transfer.EXIT_REFUSED
        assert transfer.send(str(tmp_path), 100, -1, stdout.fileno(), err.fileno()) == transfer.EXIT_REFUSED
        assert transfer.send(str(tmp_path / "none"), 100, -1, stdout.fileno(), err.fileno()) == transfer.EXIT_MISSING
        err.seek(0)
        text = err.read().decode()
    assert "larger than the limit of 100 bytes" in text and "a FIFO" in text and "a directory" in text


def test_magic_links_in_the_path_are_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret")
    with open(secret, "rb") as held:
        link = tmp_path / "link"
        os.symlink("/proc/self/fd/%d" % held.fileno(), link)
        with open(tmp_path / "sink", "wb") as stdout, _errors(tmp_path) as err:
            assert transfer.send(str(link), 100, -1, stdout.fileno(), err.fileno()) == transfer.EXIT_REFUSED
        assert (tmp_path / "sink").read_bytes() == b""


def test_read_in_root_stays_in_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "etc" / "passwd")          # absolute: resolved inside root, not on the host
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        assert transfer.read_in_root(fd, "/etc/passwd") is None
        (root / "passwd.real").write_text("root:x:0:0::/root:/bin/sh\n")
        os.unlink(root / "etc" / "passwd")
        os.symlink("../passwd.real", root / "etc" / "passwd")
        assert transfer.read_in_root(fd, "/etc/passwd") == b"root:x:0:0::/root:/bin/sh\n"
        (root / "big").write_bytes(b"x" * 11)
        assert transfer.read_in_root(fd, "big", limit=10) is None
        os.mkfifo(root / "fifo")
        assert transfer.read_in_root(fd, "fifo") is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("uid, home", [(0, "/root"), (1000, "/home/app"), (5, None), (7, None)])
def test_home_of(uid, home):
    passwd = ("root:x:0:0:root:/root:/bin/bash\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n"
              "app2:x:1000:1000::/elsewhere:/bin/sh\nrel:x:7:7::relative:/bin/sh\n")
    assert transfer.home_of(passwd, uid) == home


# --- the helper's staging area ------------------------------------------------------------------

def test_staged_paths_are_only_files_directly_in_the_staging_directory(tmp_path):
    layout = state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))
    path = helper.serve(protocol.Request(op="stage"), layout).staged
    assert os.path.dirname(path) == helper.staging_dir(layout) and os.path.exists(path)
    assert stat.S_IMODE(os.stat(helper.staging_dir(layout)).st_mode) == 0o700
    for other in ("/etc/passwd", helper.staging_dir(layout) + "/../x", helper.staging_dir(layout) + "/x", None):
        reply = helper.serve(protocol.Request(op="discard", src=other), layout)
        assert not reply.ok and "not a staged file" in reply.msg
    assert helper.serve(protocol.Request(op="discard", src=path), layout).ok and not os.path.exists(path)


def test_a_missing_container_is_named(tmp_path):
    layout = state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))
    reply = helper.serve(protocol.Request(op="exec", container="kbt-none", argv=["true"]), layout)
    assert (reply.ok, reply.error) == (False, "no-container") and "no container named kbt-none" in reply.msg
    reply = helper.serve(protocol.Request(op="exec", container="../etc", argv=["true"]), layout)
    assert (reply.ok, reply.error) == (False, "failed") and "not a valid container name" in reply.msg


# --- the code copy: entries, identity, cache -------------------------------------------------------

def test_the_copy_has_every_entry_and_leaves_current_alone_when_asked(tmp_path):
    layout = state.Layout(str(tmp_path / "run"), str(tmp_path / "lib"))
    code = materialise.materialise(layout, point_current=False)
    assert materialise.complete(code)
    assert not os.path.lexists(os.path.join(materialise.runtime_root(layout), "current"))
    entry = os.path.join(code, session_lib.HELPER_SCRIPT)
    usage = subprocess.run([sys.executable, "-I", "-S", entry, "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
    assert session_lib.RUNTIME_ROOT == materialise.runtime_root()
    assert session_lib.HELPER_SCRIPT in [entry.script for entry in materialise.ENTRIES]


def test_the_zip_installs_the_same_digest(tmp_path):
    """What the controller sends installs, through the host's own materialise, under the controller's digest."""
    digest, payload = session_lib.code_zip()
    bundle = tmp_path / "code.zip"
    bundle.write_bytes(payload)
    script = ("import sys; sys.path.insert(0, %r); from ansible_collections.kernelbox.containers.plugins.module_utils."
              "_runtime.supervise import materialise as m; from ansible_collections.kernelbox.containers.plugins."
              "module_utils._runtime import state; print(m.materialise(state.Layout(%r, %r), point_current=False))"
              % (str(bundle), str(tmp_path / "run"), str(tmp_path / "lib")))
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert os.path.basename(proc.stdout.strip()) == digest == materialise.code_digest(materialise.code_files())


def test_code_digest_is_cached_by_source_key(tmp_path, monkeypatch):
    first = session_lib.code_digest(str(tmp_path))
    assert os.listdir(tmp_path) == ["kernelbox-code-%s" % session_lib._source_key()]

    def no_walk():
        raise AssertionError("the cache was not used")
    monkeypatch.setattr(session_lib, "_code_files", no_walk)
    assert session_lib.code_digest(str(tmp_path)) == first


def test_source_key_changes_with_any_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = session_lib._source_key(str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    assert session_lib._source_key(str(tmp_path)) != before


# --- the session, against a fake hop ---------------------------------------------------------------

class FakeHop(session_lib.Hop):
    def __init__(self, replies, local=False):
        self.replies = list(replies)
        self.local = local
        self.name = "host1"
        self.commands = []
        self.moved = []

    def run(self, command, stdin):
        self.commands.append((command, stdin))
        answer = self.replies.pop(0)
        if isinstance(answer, protocol.Reply):
            return 0, protocol.encode_reply(answer), b""
        return answer

    def put(self, local, remote):
        self.moved.append(("put", local, remote))

    def fetch(self, remote, local):
        self.moved.append(("fetch", remote, local))
        with open(local, "wb") as handle:
            handle.write(b"staged content")


def _session(hop):
    return session_lib.Session(hop, "web", "/usr/bin/python3", "0123456789abcdef")


def test_a_host_without_the_helper_gets_it_installed_then_the_request_is_repeated(monkeypatch):
    monkeypatch.setattr(session_lib, "code_zip", lambda: ("0123456789abcdef", b"ZIP"))
    hop = FakeHop([(0, session_lib.MISSING, b""), (0, b"/var/lib/kernelbox/runtime/0123456789abcdef\n", b""),
                   protocol.Reply(ok=True, rc=0, stdout=b"hi")])
    reply = _session(hop).exec(["/bin/sh", "-c", "echo hi"], None, None, None, 100)
    assert reply.stdout == b"hi"
    assert len(hop.commands) == 3 and hop.commands[1][1] == b"ZIP" and "materialise" in hop.commands[1][0]
    assert hop.commands[0] == hop.commands[2]
    assert "/var/lib/kernelbox/runtime/0123456789abcdef/kernelbox-connection.py" in hop.commands[0][0]


@pytest.mark.parametrize("answer, words", [
    ((127, b"", b"sh: 1: exec: /usr/bin/python3: not found"), "set kernelbox_host_python"),
    ((1, b"", b"Traceback ..."), r"the helper failed on host1 \(rc 1\)"),
    ((0, b"garbage\n", b""), "answered something else"),
    (protocol.Reply(ok=False, error="no-container", msg="no container named web"), "kernelbox: no container named web"),
    (protocol.Reply(ok=False, error="not-running", msg="container web is not running"), "is not running"),
])
def test_helper_failures_are_connection_failures(answer, words):
    with pytest.raises(AnsibleConnectionFailure, match=words):
        _session(FakeHop([answer])).exec(["true"], None, None, None, 100)


def test_put_inline_staged_and_local(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"s" * 10)
    large.write_bytes(b"l" * 100)
    hop = FakeHop([protocol.Reply(ok=True, rc=0)])
    _session(hop).put(str(small), "/tmp/x", None, inline_limit=50)
    sent = protocol.decode_request(hop.commands[0][1])
    assert (sent.op, sent.src, sent.payload, sent.dest) == ("put", None, b"s" * 10, "/tmp/x")

    hop = FakeHop([protocol.Reply(ok=True, staged="/var/lib/kernelbox/connection/staged-1"),
                   protocol.Reply(ok=True, rc=0)])
    _session(hop).put(str(large), "/tmp/y", None, inline_limit=50)
    assert hop.moved == [("put", str(large), "/var/lib/kernelbox/connection/staged-1")]
    sent = protocol.decode_request(hop.commands[1][1])
    assert (sent.src, sent.payload) == ("/var/lib/kernelbox/connection/staged-1", b"")

    hop = FakeHop([protocol.Reply(ok=True, rc=0)], local=True)
    _session(hop).put(str(large), "/tmp/z", None, inline_limit=50)
    assert protocol.decode_request(hop.commands[0][1]).src == str(large)

    with pytest.raises(AnsibleError, match="failed to put .* Permission denied"):
        _session(FakeHop([protocol.Reply(ok=True, rc=3, stderr=b"/x: Permission denied")])).put(
            str(small), "/x", None, inline_limit=50)
    with pytest.raises(AnsibleFileNotFound):
        _session(FakeHop([])).put(str(tmp_path / "none"), "/x", None, inline_limit=50)


def test_fetch_inline_staged_and_errors(tmp_path):
    out = tmp_path / "out"
    _session(FakeHop([protocol.Reply(ok=True, rc=0, data=b"inline", size=6)])).fetch("/etc/x", str(out), None, 100, 50)
    assert out.read_bytes() == b"inline"
    hop = FakeHop([protocol.Reply(ok=True, rc=0, staged="/var/lib/kernelbox/connection/staged-2", size=99),
                   protocol.Reply(ok=True)])
    _session(hop).fetch("/etc/x", str(out), None, 100, 50)
    assert out.read_bytes() == b"staged content"
    assert protocol.decode_request(hop.commands[1][1]) == protocol.Request(
        op="discard", container="web", src="/var/lib/kernelbox/connection/staged-2")
    with pytest.raises(AnsibleFileNotFound, match="No such file"):
        _session(FakeHop([protocol.Reply(ok=True, rc=2, stderr=b"/etc/x: No such file or directory")])).fetch(
            "/etc/x", str(out), None, 100, 50)
    with pytest.raises(AnsibleError, match="kernelbox_fetch_limit"):
        _session(FakeHop([protocol.Reply(ok=True, rc=4, stderr=b"larger")])).fetch("/etc/x", str(out), None, 100, 50)


# --- the container_hosts filter ----------------------------------------------------------------------

def _info(*containers):
    return {"containers": list(containers)}


def test_container_hosts_reaches_each_container_the_way_its_host_is_reached():
    from ansible_collections.kernelbox.containers.plugins.filter.container_hosts import container_hosts
    network = [{"name": "lo", "addresses": ["127.0.0.1/8", "::1/128"]},
               {"name": "eth0", "addresses": ["fe80::1/64", "10.88.0.5/24"]}]
    hostvars = {
        "localhost": {"ansible_connection": "local", "kernelbox_info": _info(
            {"name": "web", "running": True, "network": network}, {"name": "old", "running": False})},
        "node1": {"ansible_host": "192.0.2.10", "ansible_user": "admin", "ansible_port": 2222,
                  "ansible_ssh_private_key_file": "/k", "ansible_ssh_common_args": "-o X=1",
                  "kernelbox_info": _info({"name": "db", "running": True, "network": None})},
    }
    entries = container_hosts(["localhost", "node1"], hostvars)
    assert entries == [
        {"name": "web@localhost", "container": "web", "host": "localhost", "address": "10.88.0.5",
         "kernelbox_host": "localhost", "kernelbox_host_user": "root", "kernelbox_host_port": None,
         "kernelbox_host_ssh_options": {}},
        {"name": "db@node1", "container": "db", "host": "node1", "address": None,
         "kernelbox_host": "192.0.2.10", "kernelbox_host_user": "admin", "kernelbox_host_port": 2222,
         "kernelbox_host_ssh_options": {"private_key_file": "/k", "ssh_common_args": "-o X=1"}},
    ]
    assert container_hosts(["node1"], hostvars, name_format="{host}-{container}")[0]["name"] == "node1-db"


def test_container_hosts_says_what_is_missing():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.kernelbox.containers.plugins.filter.container_hosts import container_hosts
    with pytest.raises(AnsibleFilterError, match="no container_info result in 'kernelbox_info'"):
        container_hosts(["a"], {"a": {}})
    with pytest.raises(AnsibleFilterError, match="list of inventory hosts"):
        container_hosts("a", {})
