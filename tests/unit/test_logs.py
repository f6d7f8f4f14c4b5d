# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The log pipe's supervisor side (logs.Sink) on a FIFO in a temporary directory: chunking, rotation by rename,
EOF, and the bounded copy for logs a container still holds itself."""
import errno
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs


@pytest.fixture
def fifo(tmp_path):
    path = str(tmp_path / "run" / logs.FIFO_NAME)
    logs.make_fifo(path)
    return path


def test_sink_moves_one_chunk_per_pump_and_rotates_by_rename(tmp_path, fifo):
    log = str(tmp_path / "lib" / "container.log")
    sink = logs.Sink(log, fifo, max_size=100 * 1024)
    writer = logs.open_for_container(fifo)
    try:
        os.write(writer, b"a" * (150 * 1024))
        assert sink.pump() and os.path.getsize(log) == logs.CHUNK  # one chunk per turn, never more
        inode = os.stat(log).st_ino
        sink.drain()
        assert not sink.pump() and not sink.ended  # empty, but the container still holds its end
        assert os.stat(log + logs.OLD_SUFFIX).st_ino == inode  # renamed, not copied
        assert os.path.getsize(log + logs.OLD_SUFFIX) + os.path.getsize(log) == 150 * 1024
        assert os.path.getsize(log) <= 100 * 1024
        sink.note("container exited")
        with open(log, "rb") as handle:
            assert handle.read().endswith(b"[kernelbox] container exited\n")
    finally:
        os.close(writer)
    assert not sink.pump() and sink.ended  # no writer left: EOF
    sink.close()


def test_the_container_end_is_a_pipe_it_cannot_truncate_or_seek(fifo):
    sink = logs.Sink("/dev/null", fifo, 0)
    writer = logs.open_for_container(fifo)
    try:
        for attempt, code in ((lambda: os.ftruncate(writer, 1 << 30), errno.EINVAL),
                              (lambda: os.pwrite(writer, b"x", 1 << 30), errno.ESPIPE),
                              (lambda: os.lseek(writer, 1 << 30, os.SEEK_SET), errno.ESPIPE)):
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == code
    finally:
        os.close(writer)
        sink.close()


def test_only_a_fifo_is_accepted(tmp_path):
    plain = tmp_path / "log.fifo"
    plain.write_text("")
    with pytest.raises(OSError) as info:
        logs.open_for_container(str(plain))
    assert info.value.errno == errno.EINVAL
    os.unlink(str(plain))
    os.symlink("/dev/null", str(plain))
    with pytest.raises(OSError) as info:
        logs.Sink(str(tmp_path / "log"), str(plain), 0)
    assert info.value.errno == errno.ELOOP


def test_legacy_rotation_copies_at_most_max_size(tmp_path):
    log = str(tmp_path / "container.log")
    with open(log, "wb") as handle:
        handle.write(b"head\n")
        handle.truncate(256 << 20)  # what a container holding the file itself can do
        handle.seek(0, os.SEEK_END)
        handle.write(b"last line\n")
    assert logs.rotate_legacy(log, 64 * 1024)
    old = log + logs.OLD_SUFFIX
    assert os.path.getsize(old) == 64 * 1024 and os.stat(old).st_blocks * 512 <= 128 * 1024
    assert logs.tail(log, 1)[0].endswith("last line") and os.path.getsize(log) == 0
