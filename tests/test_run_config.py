"""A run's config.yaml (what ckpt_path=last, eval.py and the report read a run's settings from) is written whole or
not at all."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vpr.run import save_run_config


class Interrupted(BaseException):
    """A kill in the middle of a write (not an Exception: nothing may catch it on the way)."""


class _CutShort:
    """A file whose first write stores a third of its text, then the process "dies"."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 3])
        self.f.flush()
        raise Interrupted


def test_a_write_cut_short_leaves_the_previous_config_whole(tmp_path: Path, monkeypatch):
    previous = "seed: 0\nvariant: se\ndata:\n  name: city\n"
    (tmp_path / "config.yaml").write_text(previous)
    cfg = OmegaConf.create({"seed": 1, "variant": "baseline", "data": {"name": "city", "image_size": [48, 64]}})

    real_open = io.open

    def cut_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _CutShort(f) if "w" in str(mode) and str(file).startswith(str(tmp_path)) else f

    monkeypatch.setattr(io, "open", cut_open)
    monkeypatch.setattr(builtins, "open", cut_open)
    with pytest.raises(Interrupted):
        save_run_config(cfg, tmp_path)
    monkeypatch.undo()

    assert (tmp_path / "config.yaml").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no half-written file left beside it
    save_run_config(cfg, tmp_path)
    assert OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml")) == {
        "seed": 1,
        "variant": "baseline",
        "data": {"name": "city", "image_size": [48, 64]},
    }
