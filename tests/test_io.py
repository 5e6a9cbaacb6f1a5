import json
import os
from pathlib import Path

import pytest

from vpr.io import atomic_path, write_json_atomic


def test_write_json_atomic_roundtrip_and_permissions(tmp_path):
    p = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="reads which file a descriptor names from /proc")
def test_contents_are_synced_before_the_rename_and_the_rename_after(tmp_path, monkeypatch):
    import vpr.io as io

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        io.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1]
    )
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": 1})
    (kind, synced), replaced, (kind2, folder) = events
    assert kind == "fsync" and Path(synced).parent == tmp_path and synced != str(target)  # the temporary file
    assert replaced == ("replace", str(target))
    assert kind2 == "fsync" and folder == str(tmp_path)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux reads the umask from /proc")
def test_the_umask_is_read_without_changing_it(tmp_path, monkeypatch):
    import vpr.io as io

    real_umask = os.umask
    old = real_umask(0o027)
    try:

        def no_umask(mask):
            raise AssertionError("os.umask changed the process's umask, which other threads share")

        monkeypatch.setattr(io.os, "umask", no_umask)
        p = write_json_atomic(tmp_path / "r.json", {})
    finally:
        monkeypatch.undo()
        real_umask(old)
    assert (p.stat().st_mode & 0o777) == 0o640
