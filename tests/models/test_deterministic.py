"""trainer.deterministic=true on CUDA with a layer torch has no deterministic CUDA backward for is refused before
any work, naming the layer; elsewhere it passes."""

from __future__ import annotations

import pytest
import torch

from vpr.build import check_deterministic
from vpr.errors import ConfigError
from vpr.models.attention.crn import CRN
from vpr.models.attention.deattention import DeAttention


def test_the_marked_layers_are_the_ones_torch_refuses():
    """The markers stand for ops torch lists as throwing under deterministic mode on CUDA (its documentation)."""
    doc = torch.use_deterministic_algorithms.__doc__
    split = doc.index("The following normally-nondeterministic operations will throw")
    throwing, acting = doc[split:], doc[:split]
    assert "ReflectionPad2d" in throwing and "interpolate" in throwing
    assert "ReplicationPad2d" in acting  # replicate padding, the fallback on small maps, has a deterministic kernel


@pytest.mark.parametrize("make", [lambda: DeAttention(16), lambda: CRN(16)])
def test_refused_on_cuda_with_the_layer_named(make):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), make())
    with pytest.raises(ConfigError, match=r"trainer.deterministic=true: .*trainer.deterministic=warn"):
        check_deterministic(True, net, cuda=True)
    check_deterministic(True, net, cuda=False)  # CPU kernels are deterministic
    check_deterministic("warn", net, cuda=True)
    check_deterministic(False, net, cuda=True)


def test_plain_networks_pass():
    check_deterministic(True, torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()), cuda=True)


def graph_ops(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    names, todo, seen = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return names


def test_the_marked_modules_run_those_ops():
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    assert any("ReflectionPad" in n for n in graph_ops(DeAttention(16)(x).weights))
    assert any("UpsampleBilinear" in n for n in graph_ops(CRN(16)(x).weights))
