"""The GPU code path's memory format (channels-last weights and images) computes the same descriptors and the
same gradients as the plain path (run here on the CPU in float32)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_script


def train_config(*overrides: str, output_dir: object = "."):
    """The city_baseline training config (K=8, no logger) with ``overrides``."""
    return compose_script(
        "train",
        "experiment=city_baseline",
        "model.num_clusters=8",
        "logger=none",
        f"paths.output_dir={output_dir}",
        *overrides,
    )


def build(channels_last: bool):
    from vpr.build import build_module

    cfg = train_config("attention=deattention", "guidance=none", f"model.channels_last={str(channels_last).lower()}")
    module = build_module(cfg, with_training=False)
    module.apply_memory_format()
    return module


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_channels_last_gives_the_plain_descriptors_and_gradients(train):
    plain, fast = build(False), build(True)
    conv = next(m for m in fast.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    # The loaders' uint8 pixels go to the GPU path (normalised inside describe); the plain path gets the floats
    # normalised here by the formula, as a loader normalising in its workers would give them.
    pixels = torch.randint(0, 256, (3, 3, 64, 80), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    images = ((pixels.double() / 255 - mean) / std).float()
    plain.train(train)
    fast.train(train)
    seen = []
    fast.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    d0, m0 = plain.describe(images)
    d1, m1 = fast.describe(pixels)
    (x,) = seen  # what the GPU path's backbone received: normalised floats, channels-last
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    torch.testing.assert_close(d1, d0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m1, m0, atol=1e-5, rtol=1e-4)
    if train:
        d0.sum().backward()
        d1.sum().backward()
        for (name, p0), (_, p1) in zip(plain.named_parameters(), fast.named_parameters()):
            if p0.grad is not None:
                torch.testing.assert_close(p1.grad, p0.grad, atol=1e-4, rtol=1e-3, msg=name)


def build_compiled(backend: str):
    from vpr.build import build_module

    cfg = train_config(
        "attention=deattention", "guidance=none", "model.compile=true", f"model.compile_backend={backend}"
    )
    return build_module(cfg, with_training=False)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_network_gives_the_plain_descriptors_and_keeps_its_keys(backend):
    plain = build(False)
    fast = build_compiled(backend)
    fast.load_state_dict(plain.state_dict())
    fast.apply_memory_format()
    fast.apply_memory_format()  # compiles once
    assert fast.backbone._compiled_call_impl is not None and plain.backbone._compiled_call_impl is None
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    plain.eval()
    fast.eval()
    images = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d0, m0 = plain.describe(images)
        d1, m1 = fast.describe(images)
    torch.testing.assert_close(d1, d0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m1, m0, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("value", ["''", "max-autotun", "yes"])
def test_compile_setting_is_checked(value):
    from vpr.build import build_module

    cfg = train_config(f"model.compile={value}")
    with pytest.raises(ValueError, match="model.compile=.*choose false, true or a torch.compile mode"):
        build_module(cfg, with_training=False)


def test_sync_batchnorm_auto_follows_the_batchnorm_layers_that_train():
    from vpr.build import resolve_sync_batchnorm
    from vpr.errors import ConfigError

    def network(bn_frozen: bool):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        if bn_frozen:  # a module that keeps its BatchNorm in eval mode, as frozen stages do
            plain_train = net.train

            def train(mode=True):
                plain_train(mode)
                net[1].eval()
                return net

            net.train = train
        return net

    vgg_like = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert resolve_sync_batchnorm("auto", network(False), cuda=True) is True
    assert resolve_sync_batchnorm("auto", network(False), cuda=False) is False  # SyncBatchNorm needs CUDA
    assert resolve_sync_batchnorm("auto", network(True), cuda=True) is False
    assert resolve_sync_batchnorm("auto", vgg_like, cuda=True) is False
    assert resolve_sync_batchnorm(True, vgg_like, cuda=False) is True
    net = network(False).eval()
    resolve_sync_batchnorm("auto", net, cuda=True)
    assert not net.training  # the mode is restored
    with pytest.raises(ConfigError, match="trainer.sync_batchnorm"):
        resolve_sync_batchnorm("yes", net, cuda=True)


def test_sync_batchnorm_auto_on_the_projects_networks():
    """The city recipe keeps the ResNet's BatchNorms in eval mode (model.freeze_batchnorm); without it they train,
    and the de-attention head's own BatchNorms train either way."""
    from vpr.build import batchnorm_trains, build_module

    def module(*overrides):
        return build_module(train_config(*overrides), with_training=False)

    assert not batchnorm_trains(module())
    assert batchnorm_trains(module("model.freeze_batchnorm=false"))
    assert batchnorm_trains(module("attention=deattention", "guidance=none"))


@pytest.mark.parametrize("cuda", [False, True])
def test_build_trainer_passes_the_resolved_sync_batchnorm(monkeypatch, tmp_path, cuda):
    """strategy=ddp's sync_batchnorm=auto reaches Lightning as the resolved bool (SyncBatchNorm layer sync or none)."""
    import vpr.build as build

    cfg = train_config("strategy=ddp", "trainer=cpu", "model.freeze_batchnorm=false", output_dir=tmp_path)
    module = build.build_module(cfg, with_training=False)
    monkeypatch.setattr(
        build,
        "resolve_sync_batchnorm",
        lambda setting, m, _cuda, real=build.resolve_sync_batchnorm: real(setting, m, cuda),
    )
    trainer = build.build_trainer(cfg, module=module)
    assert (trainer.strategy._layer_sync is not None) is cuda


@pytest.mark.parametrize("compile_setting", ["false", "true"])
def test_compiled_runs_evaluate_under_no_grad(tmp_path, compile_setting):
    """model.compile: validation and test run under no_grad like the mining cache (one compiled graph for all)."""
    import vpr.build as build

    cfg = train_config("trainer=cpu", f"model.compile={compile_setting}", output_dir=tmp_path)
    trainer = build.build_trainer(cfg, module=build.build_module(cfg, with_training=False))
    assert trainer.test_loop.inference_mode is trainer.validate_loop.inference_mode is (compile_setting == "false")
