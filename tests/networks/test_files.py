"""The one atomic write: whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from networks.files import atomic_write, write_bytes, write_text


def test_writes_whole_files_with_ordinary_permissions(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a" / "b.txt", "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert write_bytes(path, b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_trace(tmp_path: Path) -> None:
    path = write_text(tmp_path / "keep.txt", "old")

    def half(tmp: Path) -> None:
        tmp.write_text("new, half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(path, half)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
