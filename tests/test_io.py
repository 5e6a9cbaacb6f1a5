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


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("tar.gz", "is a gzip archive, not a checkpoint: unpack it (tar xzf"),
        ("tar", "is a tar archive"),
        ("zip", "is a zip archive"),
    ],
)
def test_an_archive_of_weights_is_named_an_archive_with_the_command_that_unpacks_it(tmp_path, kind, says):
    """The released weights come packed (weight_image_retrieval.tar.gz unpacks to pretrained/.../*.pth.tar): the
    archive given in place of the file inside was called "truncated ... or not saved by torch". The archives
    are written with tarfile / zipfile around a real torch file, which itself still loads."""
    import tarfile
    import zipfile

    import torch

    from vpr.errors import ConfigError
    from vpr.io import read_weights_only

    inner = tmp_path / "pretrained" / "model_best.pth.tar"
    inner.parent.mkdir()
    torch.save({"state_dict": {"pool.centroids": torch.ones(2, 3)}}, inner)
    archive = tmp_path / f"weights.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            z.write(inner, "pretrained/model_best.pth.tar")
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(inner, "pretrained/model_best.pth.tar")
    with pytest.raises(ConfigError) as refused:
        read_weights_only(archive, f"ckpt_path={archive}")
    assert str(refused.value).startswith(f"ckpt_path={archive} {says}")
    assert torch.equal(read_weights_only(inner, "ckpt_path")["state_dict"]["pool.centroids"], torch.ones(2, 3))


def test_a_checkpoint_of_zero_bytes_is_called_unreadable_not_a_tar_archive(tmp_path):
    """A file of zero bytes (a download that reserved the file's size and was cut short, a crash that kept a file's
    size but not its data) passes tarfile's test as an empty tar: it was refused as "a tar archive ... unpack it
    (tar xf)", not as the unreadable file it is."""
    from vpr.errors import ConfigError
    from vpr.io import read_weights_only

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(bytes(4096))
    with pytest.raises(ConfigError) as refused:
        read_weights_only(ckpt, f"ckpt_path={ckpt}")
    assert "archive" not in str(refused.value)
    assert str(refused.value).startswith(f"ckpt_path={ckpt} is not a readable checkpoint: truncated")
