"""encode_dataset: the items asked for, in order, each as the network describes it alone; the mining cache's loader
keeps its worker processes from one round to the next, and they end when released."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from tests.models.test_module import make


class RecordingImages(Dataset):
    """Image i is a uint8 picture made from i alone; each process that loads one leaves a file named by its pid."""

    def __init__(self, n: int, folder: Path):
        self.n, self.folder = n, folder

    def __len__(self) -> int:
        return self.n

    def image(self, i: int) -> torch.Tensor:
        return torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(i), dtype=torch.uint8)

    def __getitem__(self, i: int):
        (self.folder / str(os.getpid())).touch()
        return self.image(i), i


def loader_pids(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.iterdir()} - {os.getpid()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def module():
    m = make(aux_weight=0.0).eval()
    m.encode_workers, m.encode_batch_size = 2, 3
    return m


def test_the_items_asked_for_come_back_in_their_order(module, tmp_path):
    images = RecordingImages(20, tmp_path)
    asked = [17, 2, 9, 9, 0, 11, 5]
    with torch.no_grad():
        expected = torch.cat([module(images.image(i)[None]) for i in asked])  # one image at a time, no loader
    for keep in (False, True):
        got = module.encode_dataset(images, indices=asked, keep_workers=keep)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    module.release_encode_workers()
    assert module.encode_dataset(images).shape == (20, module.head.out_dim)  # no indices: every item


def test_kept_workers_serve_every_round_and_end_when_released(module, tmp_path):
    images = RecordingImages(30, tmp_path)
    for r in range(3):
        module.encode_dataset(images, indices=range(r * 10, r * 10 + 10), keep_workers=True)
    kept = loader_pids(tmp_path)
    assert len(kept) == 2  # the same two workers for the three rounds
    assert all(alive(pid) for pid in kept)
    held = module._kept_loader  # something else still holds the loader (a traceback, a debugger)
    module.release_encode_workers()
    assert not any(alive(pid) for pid in kept)  # ended now, not when the last reference goes
    del held


def test_without_keeping_each_call_starts_its_own_workers(module, tmp_path):
    images = RecordingImages(30, tmp_path)
    for r in range(3):
        module.encode_dataset(images, indices=range(r * 10, r * 10 + 10))
    assert len(loader_pids(tmp_path)) == 6


def test_another_dataset_gets_new_workers_and_the_old_ones_end(module, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    module.encode_dataset(RecordingImages(6, tmp_path / "a"), indices=range(6), keep_workers=True)
    first = loader_pids(tmp_path / "a")
    module.encode_dataset(RecordingImages(6, tmp_path / "b"), indices=range(6), keep_workers=True)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in first)
    assert len(loader_pids(tmp_path / "b")) == 2 and not first & loader_pids(tmp_path / "b")
    module.release_encode_workers()


def test_a_failed_pass_leaves_the_module_in_the_mode_it_had(module, tmp_path):
    class Broken(RecordingImages):
        def __getitem__(self, i):
            if i == 4:
                raise OSError("corrupt image")
            return super().__getitem__(i)

    module.encode_workers = 0
    module.train()
    with pytest.raises(OSError, match="corrupt image"):
        module.encode_dataset(Broken(8, tmp_path))
    assert module.training


def test_encode_images_takes_one_path_as_one_image(module, tmp_path):
    """A path alone was taken as a sequence of one-letter paths ('/', 't', ...)."""
    from PIL import Image

    from vpr.api import encode_images

    path = tmp_path / "one.jpg"
    Image.fromarray(RecordingImages(1, tmp_path).image(0).permute(1, 2, 0).numpy()).save(path)
    module.encode_workers = 0
    module.encode_batch_size = 5
    alone = encode_images(module, str(path), (16, 16))
    assert alone.shape == (1, module.head.out_dim)
    torch.testing.assert_close(alone, encode_images(module, [path], (16, 16), batch_size=3))
    assert module.encode_batch_size == 5  # the module's own setting (its mining cache pass) is not changed
