"""discrete_rae.io: atomic writes (text / bytes / JSON), what they do on failure, and the digests."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading

import pytest

from discrete_rae import io


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    io.write_json(target, {"x": 1.5})
    assert json.loads(target.read_text()) == {"x": 1.5} and target.read_text().endswith("\n")
    io.write_text(tmp_path / "b.txt", "héllo\n")
    io.write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "c.bin"]


def test_a_failing_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def boom(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        io.atomic_write(target, boom)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC  # names the target
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_missing_folder_is_an_error_naming_the_target(tmp_path):
    target = tmp_path / "no" / "such" / "x.txt"
    with pytest.raises(FileNotFoundError) as info:
        io.write_text(target, "x")
    assert info.value.filename == str(target) and not (tmp_path / "no").exists()


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    io.write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlink_is_followed(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    io.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_digests_match_hashlib(tmp_path):
    data = os.urandom(3 * 1024 + 7)
    (tmp_path / "f").write_bytes(data)
    assert io.sha256_file(tmp_path / "f", block=1024) == hashlib.sha256(data).hexdigest() == io.sha256_bytes(data)
    assert io.sha256_text("é") == hashlib.sha256("é".encode()).hexdigest()
