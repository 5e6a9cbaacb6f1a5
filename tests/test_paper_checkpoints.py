"""Checkpoints of the paper code (``encoder``, its attention modules, ``pool``, saved with ``torch.save`` beside
numpy scalars) load as weights only, build the attention that reproduces that code's forward pass and give the
descriptor of that forward pass; they evaluate through eval.py like the same weights loaded natively and start a
training through init_weights; a file that does not fit is refused clearly.

The files are written here from the paper code's module definitions (layer names and shapes read from its
networks/deattention_model.py, bam.py, cbam.py and get_model.py; SE as the common SELayer ``fc`` = Linear, ReLU,
Linear without biases), and the expected descriptors come from a functional rewrite of that code's forward passes
(reflect padding, conv -> ReLU -> BatchNorm order, BAM's H x H channel pooling and Mc * Ms, features * mask) and a
NetVLAD written as a loop over clusters: nothing below goes through the project's mapping.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from tests.conftest import compose_script, run_script, the_error_line

K, C, HIDDEN = 8, 512, 32  # clusters, VGG16 conv5_3 channels, C / 16
SIZE = (64, 80)  # a 4 x 5 feature map: H <= W < 2H (BAM's pooling window) and reflect padding 3 < 4 works


def _conv(name, out, inp, k, bias=True):
    return {f"{name}.weight": (out, inp, k, k), **({f"{name}.bias": (out,)} if bias else {})}


def _bn(name, n):
    return {f"{name}.{p}": (n,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()
    }


def _mask_head(p):
    """The paper code's mask head (its DeAttention and its CRN): every layer it builds, used or not."""
    return (
        _conv(f"{p}.crn_downsample.0", C, C, 3)
        | _bn(f"{p}.crn_downsample.2", C)
        | _conv(f"{p}.crn_conv1.0", 32, C, 3)
        | _bn(f"{p}.crn_conv1.2", 32)
        | _conv(f"{p}.crn_conv2.0", 32, C, 5)
        | _bn(f"{p}.crn_conv2.2", 32)
        | _conv(f"{p}.crn_conv3.0", 20, C, 7)
        | _bn(f"{p}.crn_conv3.2", 20)
        | _conv(f"{p}.crn_conv4.0", 1, 84, 1)
        | _bn(f"{p}.crn_conv4.2", 1)
        | {f"{p}.crn_upsample.0.weight": (1, 1, 2, 2), f"{p}.crn_upsample.0.bias": (1,)}
        | _bn(f"{p}.crn_upsample.2", C)
    )


PAPER_KEYS = {
    "deattention": _mask_head("deattention"),
    "crn_attention": _mask_head("crn_attention"),
    "senet_attention": {"senet_attention.fc.0.weight": (HIDDEN, C), "senet_attention.fc.2.weight": (C, HIDDEN)},
    "bam_attention": (
        {
            "bam_attention.channel_att.gate_c.gate_c_fc_0.weight": (HIDDEN, C),
            "bam_attention.channel_att.gate_c.gate_c_fc_0.bias": (HIDDEN,),
        }
        | _bn("bam_attention.channel_att.gate_c.gate_c_bn_1", HIDDEN)
        | {
            "bam_attention.channel_att.gate_c.gate_c_fc_final.weight": (C, HIDDEN),
            "bam_attention.channel_att.gate_c.gate_c_fc_final.bias": (C,),
        }
        | _conv("bam_attention.spatial_att.gate_s.gate_s_conv_reduce0", HIDDEN, C, 1)
        | _bn("bam_attention.spatial_att.gate_s.gate_s_bn_reduce0", HIDDEN)
        | _conv("bam_attention.spatial_att.gate_s.gate_s_conv_di_0", HIDDEN, HIDDEN, 3)
        | _bn("bam_attention.spatial_att.gate_s.gate_s_bn_di_0", HIDDEN)
        | _conv("bam_attention.spatial_att.gate_s.gate_s_conv_di_1", HIDDEN, HIDDEN, 3)
        | _bn("bam_attention.spatial_att.gate_s.gate_s_bn_di_1", HIDDEN)
        | _conv("bam_attention.spatial_att.gate_s.gate_s_conv_final", 1, HIDDEN, 1)
    ),
    "cbam_attention": (
        {
            "cbam_attention.ChannelGate.mlp.1.weight": (HIDDEN, C),
            "cbam_attention.ChannelGate.mlp.1.bias": (HIDDEN,),
            "cbam_attention.ChannelGate.mlp.3.weight": (C, HIDDEN),
            "cbam_attention.ChannelGate.mlp.3.bias": (C,),
        }
        | _conv("cbam_attention.SpatialGate.spatial.conv", 1, 2, 7, bias=False)
        | _bn("cbam_attention.SpatialGate.spatial.bn", 1)
    ),
}


def paper_state_dict(modules, seed=0, parallel=False):
    g = torch.Generator().manual_seed(seed)
    encoder = torchvision.models.vgg16(weights=None).features[:-2].state_dict()
    enc, pool = ("encoder.module.", "pool.module.") if parallel else ("encoder.", "pool.")
    sd = {enc + k: torch.randn(v.shape, generator=g) * (2.0 / max(1, v[0].numel())) ** 0.5 for k, v in encoder.items()}
    for name in modules:
        for key, shape in PAPER_KEYS[name].items():
            if key.endswith("num_batches_tracked"):
                sd[key] = torch.tensor(1000)
            elif key.endswith("running_var"):
                sd[key] = 0.5 + torch.rand(shape, generator=g)
            elif len(shape) >= 2:  # conv / linear weights: He scale so that activations stay O(1)
                fan_in = int(np.prod(shape[1:]))
                sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
            else:
                sd[key] = 0.3 * torch.randn(shape, generator=g)
    sd[pool + "conv.weight"] = torch.randn(K, C, 1, 1, generator=g)
    sd[pool + "centroids"] = torch.randn(K, C, generator=g)
    return sd


def save_paper_file(path, sd):
    """As the paper code's tasks/train.py saves: a dict with numpy scalars beside the state dict."""
    torch.save(
        {
            "epoch": 3,
            "state_dict": sd,
            "recalls": {1: np.float64(0.8), 5: np.float64(0.9)},
            "best_score": np.float64(0.9),
            "optimizer": {"state": {}, "param_groups": []},
            "parallel": False,
        },
        path,
    )


# -- the paper code's forward pass, rewritten functionally ---------------------------------------------------------


def _bn_eval(x, t, p):
    return F.batch_norm(
        x, t[f"{p}.running_mean"], t[f"{p}.running_var"], t[f"{p}.weight"], t[f"{p}.bias"], training=False, eps=1e-5
    )


def ref_mask(x, t, p):
    xn = F.normalize(x, p=2, dim=1)
    outs = []
    for i, k in ((1, 3), (2, 5), (3, 7)):
        y = F.conv2d(
            F.pad(xn, [k // 2] * 4, mode="reflect"), t[f"{p}.crn_conv{i}.0.weight"], t[f"{p}.crn_conv{i}.0.bias"]
        )
        outs.append(_bn_eval(F.relu(y), t, f"{p}.crn_conv{i}.2"))
    m = F.conv2d(torch.cat(outs, 1), t[f"{p}.crn_conv4.0.weight"], t[f"{p}.crn_conv4.0.bias"])
    return torch.sigmoid(_bn_eval(F.relu(m), t, f"{p}.crn_conv4.2"))


def ref_attention(name, x, t):
    if name == "deattention":
        return x * ref_mask(x, t, "deattention")
    if name == "crn_attention":
        return F.normalize(x, p=2, dim=1) * ref_mask(x, t, "crn_attention")
    if name == "senet_attention":
        y = F.relu(x.mean((2, 3)) @ t["senet_attention.fc.0.weight"].T) @ t["senet_attention.fc.2.weight"].T
        return x * torch.sigmoid(y)[:, :, None, None]
    if name == "bam_attention":
        p = "bam_attention.channel_att.gate_c."
        h = x.shape[2]
        c = F.avg_pool2d(x, h, stride=h).flatten(1)  # the code's H x H window
        c = F.relu(
            F.batch_norm(
                c @ t[p + "gate_c_fc_0.weight"].T + t[p + "gate_c_fc_0.bias"],
                t[p + "gate_c_bn_1.running_mean"],
                t[p + "gate_c_bn_1.running_var"],
                t[p + "gate_c_bn_1.weight"],
                t[p + "gate_c_bn_1.bias"],
                training=False,
            )
        )
        c = c @ t[p + "gate_c_fc_final.weight"].T + t[p + "gate_c_fc_final.bias"]
        q = "bam_attention.spatial_att.gate_s.gate_s_"
        s = F.relu(_bn_eval(F.conv2d(x, t[q + "conv_reduce0.weight"], t[q + "conv_reduce0.bias"]), t, q + "bn_reduce0"))
        for i in range(2):
            s = F.conv2d(s, t[f"{q}conv_di_{i}.weight"], t[f"{q}conv_di_{i}.bias"], padding=4, dilation=4)
            s = F.relu(_bn_eval(s, t, f"{q}bn_di_{i}"))
        s = F.conv2d(s, t[q + "conv_final.weight"], t[q + "conv_final.bias"])
        return (1 + torch.sigmoid(c[:, :, None, None] * s)) * x
    if name == "cbam_attention":
        p = "cbam_attention.ChannelGate.mlp."

        def mlp(v):
            return F.relu(v @ t[p + "1.weight"].T + t[p + "1.bias"]) @ t[p + "3.weight"].T + t[p + "3.bias"]

        x = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        s = _bn_eval(
            F.conv2d(pooled, t["cbam_attention.SpatialGate.spatial.conv.weight"], padding=3),
            t,
            "cbam_attention.SpatialGate.spatial.bn",
        )
        return x * torch.sigmoid(s)
    raise AssertionError(name)


def ref_netvlad(x, conv_w, centroids):
    """NetVLAD v1 written as a loop over clusters (normalise, soft-assign, residuals, intra + global norm)."""
    x = F.normalize(x, p=2, dim=1).flatten(2)  # (B, C, N)
    assign = torch.softmax(torch.einsum("kc,bcn->bkn", conv_w[:, :, 0, 0], x), dim=1)
    parts = []
    for k in range(centroids.shape[0]):
        residual = x - centroids[k][None, :, None]
        parts.append(F.normalize((residual * assign[:, k : k + 1]).sum(-1), dim=1))
    return F.normalize(torch.cat(parts, 1), dim=1)


def ref_descriptor(sd, modules, images):
    plain = {k.replace("encoder.module.", "encoder.").replace("pool.module.", "pool."): v for k, v in sd.items()}
    encoder = torchvision.models.vgg16(weights=None).features[:-2].eval()
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in plain.items() if k.startswith("encoder.")})
    x = encoder(images)
    for name in modules:  # de-attention first, then the other attention (the code's forward order)
        x = ref_attention(name, x, plain)
    return ref_netvlad(x, plain["pool.conv.weight"], plain["pool.centroids"])


# -- the project's side ------------------------------------------------------------------------------------------


def eval_cfg(*overrides):
    return compose_script("eval", "backbone=vgg16", "backbone.pretrained=false", "paths.output_dir=.", *overrides)


def loaded_network(path, overrides=()):
    """What eval.py builds for a checkpoint file: read, settings from the file, build, load strictly."""
    from vpr.build import build_module
    from vpr.checkpoints import load_network_weights, network_from_checkpoint, read_checkpoint

    state, stored = read_checkpoint(str(path))
    cfg = network_from_checkpoint(eval_cfg(*overrides), state, stored, str(path), list(overrides))
    module = build_module(cfg, with_training=False).eval()
    load_network_weights(module, state, str(path))
    return module, cfg


CASES = [
    ["deattention"],
    ["senet_attention"],
    ["deattention", "senet_attention"],
    ["bam_attention"],
    ["cbam_attention"],
    ["crn_attention"],
]


@pytest.mark.parametrize("modules", CASES, ids=["+".join(m) for m in CASES])
def test_paper_file_gives_the_descriptor_of_the_paper_forward_pass(tmp_path, modules):
    sd = paper_state_dict(modules)
    save_paper_file(tmp_path / "model_best.pth.tar", sd)
    module, _ = loaded_network(tmp_path / "model_best.pth.tar")
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref_descriptor(sd, modules, images)
        got = module(images)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        features = module.backbone(images)
        att = module.attention(features)
        reference = features
        for name in modules:
            reference = ref_attention(name, reference, sd)
        # the attention's output itself (the descriptor alone cannot tell a mask on the features from none)
        torch.testing.assert_close(att.features, reference, rtol=1e-4, atol=1e-5)


def test_the_paper_settings_are_what_reproduces_it(tmp_path):
    """BAM's settings are the code's (product, H x H pooling): the project's defaults give another descriptor."""
    sd = paper_state_dict(["bam_attention"])
    save_paper_file(tmp_path / "bam.pth.tar", sd)
    module, cfg = loaded_network(tmp_path / "bam.pth.tar")
    assert cfg.attention.combine == "product" and cfg.attention.channel_pool == "square"
    assert cfg.attention.reduction == C // HIDDEN and cfg.model.num_clusters == K
    defaults, _ = loaded_network(tmp_path / "bam.pth.tar", ["attention=bam"])  # the user's choice wins: sum, mean
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float((module(images) - defaults(images)).abs().max()) > 1e-4


@pytest.mark.parametrize("modules", [["deattention", "senet_attention"], ["crn_attention"]], ids=["deatt", "crn"])
def test_early_files_with_crm_names_load_as_the_paper_codes_loader_renames_them(tmp_path, modules):
    """The paper code's loader renames crm to crn in every key (its early files had the mask head's layers as
    crm_conv*, crm_attention): such a file gives the descriptor of the same tensors under crn names."""
    sd = paper_state_dict(modules)
    early = {k.replace("crn", "crm"): v for k, v in sd.items()}
    assert any("crm" in k for k in early) and not any("crn" in k for k in early)
    save_paper_file(tmp_path / "early.pth.tar", early)
    module, _ = loaded_network(tmp_path / "early.pth.tar")
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(module(images), ref_descriptor(sd, modules, images), rtol=1e-4, atol=1e-5)


def test_data_parallel_keys_and_unused_layers(tmp_path):
    modules = ["deattention", "senet_attention"]
    sd = paper_state_dict(modules, parallel=True)
    save_paper_file(tmp_path / "dp.pth.tar", sd)
    module, _ = loaded_network(tmp_path / "dp.pth.tar")
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(module(images), ref_descriptor(sd, modules, images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "mutate, says",
    [
        (
            lambda sd: sd.__setitem__("deattention.crn_conv1.0.weight", torch.zeros(32, 256, 3, 3)),
            "deattention.crn_conv1.0.weight (this network's attention.stages.0.branches.0.conv.weight) has shape "
            "(32, 256, 3, 3)",
        ),
        (
            lambda sd: sd.__setitem__("senet_attention.fc.0.bias", torch.zeros(4)),
            "not in this network: senet_attention.fc.0.bias (this network's attention.stages.1.excitation.0.bias)",
        ),
        (lambda sd: sd.__setitem__("deattention.crn_conv9.0.weight", torch.zeros(1)), "deattention.crn_conv9.0.weight"),
        (lambda sd: sd.__setitem__("ch_eca_attention.conv.weight", torch.zeros(1, 1, 3)), "ECA"),
        (lambda sd: sd.__setitem__("decoder.weight", torch.zeros(1)), "decoder"),
        (lambda sd: sd.pop("senet_attention.fc.2.weight"), "excitation.2.weight"),
    ],
    ids=["wrong-shape", "bias-the-network-lacks", "foreign-layer", "module-not-built", "foreign-module", "missing-key"],
)
def test_a_paper_file_that_does_not_fit_is_refused(tmp_path, mutate, says):
    from vpr.errors import ConfigError

    sd = paper_state_dict(["deattention", "senet_attention"])
    mutate(sd)
    save_paper_file(tmp_path / "bad.pth.tar", sd)
    with pytest.raises(ConfigError, match="bad.pth.tar") as err:
        loaded_network(tmp_path / "bad.pth.tar")
    assert says in str(err.value)


def test_ckpt_format_refuses_another_layout(tmp_path):
    from vpr.checkpoints import load_weights_only
    from vpr.errors import ConfigError

    save_paper_file(tmp_path / "paper.pth.tar", paper_state_dict(["deattention"]))
    for fmt, says in (("lightning", "not a checkpoint of train.py"), ("netvlad_baseline", "use ckpt_format=paper")):
        with pytest.raises(ConfigError, match=says):
            load_weights_only(str(tmp_path / "paper.pth.tar"), ckpt_format=fmt)
    assert load_weights_only(str(tmp_path / "paper.pth.tar"), ckpt_format="paper")["released"].layout == "paper"
    with pytest.raises(ConfigError, match="ckpt_format=nonsense"):
        load_weights_only(str(tmp_path / "paper.pth.tar"), ckpt_format="nonsense")


# Where each of the paper code's layers lives in the project's network (written from the two codes, by hand).
NATIVE_NAMES = {
    "deattention.crn_conv1.0": "attention.stages.0.branches.0.conv",
    "deattention.crn_conv1.2": "attention.stages.0.branches.0.bn",
    "deattention.crn_conv2.0": "attention.stages.0.branches.1.conv",
    "deattention.crn_conv2.2": "attention.stages.0.branches.1.bn",
    "deattention.crn_conv3.0": "attention.stages.0.branches.2.conv",
    "deattention.crn_conv3.2": "attention.stages.0.branches.2.bn",
    "deattention.crn_conv4.0": "attention.stages.0.fuse",
    "deattention.crn_conv4.2": "attention.stages.0.fuse_bn",
    "senet_attention.fc.0": "attention.stages.1.excitation.0",
    "senet_attention.fc.2": "attention.stages.1.excitation.2",
}
FINAL_MODEL = ["attention=deattention_se", "attention.modules.0.apply=features"]


def test_paper_file_evaluates_like_the_native_checkpoint_and_starts_a_training(data_dir, tmp_path):
    from vpr.build import build_module

    modules = ["deattention", "senet_attention"]
    sd = paper_state_dict(modules)
    save_paper_file(tmp_path / "model_best.pth.tar", sd)
    native = build_module(
        eval_cfg("attention=deattention_se", "attention.modules.0.apply=features", f"model.num_clusters={K}"),
        with_training=False,
    )
    own = native.state_dict()
    copied = {}
    for key, value in sd.items():
        top, _, suffix = key.partition(".")
        if top == "encoder":
            copied["backbone.features." + suffix] = value
        elif top == "pool":
            copied["head." + suffix] = value
        else:
            layer, _, param = key.rpartition(".")
            if layer in NATIVE_NAMES:
                copied[f"{NATIVE_NAMES[layer]}.{param}"] = value
    copied["head.initialised"] = torch.tensor(True)
    assert set(copied) == set(own)
    native.load_state_dict(copied)
    torch.save({"state_dict": native.state_dict()}, tmp_path / "native.ckpt")
    common = [
        "backbone=vgg16",
        "backbone.pretrained=false",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "data.num_workers=0",
        "data.image_size=[64,80]",
    ]
    results, logs = {}, {}
    for name, extra in (("model_best.pth.tar", []), ("native.ckpt", [*FINAL_MODEL, f"model.num_clusters={K}"])):
        proc = run_script(
            "eval.py",
            *common,
            *extra,
            f"ckpt_path={tmp_path / name}",
            f"hydra.run.dir={tmp_path / name}.run",
            tmp=tmp_path,
        )
        results[name] = json.loads((tmp_path / f"{name}.run" / "results.json").read_text())["recall_at"]
        logs[name] = proc.stdout + proc.stderr
    assert "the paper code's layout" in logs["model_best.pth.tar"] and "apply: features" in logs["model_best.pth.tar"]
    assert results["model_best.pth.tar"] == results["native.ckpt"]
    proc = run_script(
        "train.py",
        "experiment=city_deattention_stml",
        *common,
        f"model.num_clusters={K}",
        f"init_weights={tmp_path / 'model_best.pth.tar'}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "logger=none",
        "test_after_training=false",
        "mining.refresh_every_queries=8",
        f"hydra.run.dir={tmp_path / 'train'}",
        tmp=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "the paper code's layout" in log
    kept = log.split("kept their initialisation:")[-1].splitlines()[0]
    assert "attention" not in kept and "backbone" not in kept and "head" not in kept, kept
    assert (tmp_path / "train" / "checkpoints" / "last.ckpt").is_file()


def test_bad_paper_file_is_one_error_line(data_dir, tmp_path):
    sd = paper_state_dict(["deattention"])
    sd["deattention.crn_conv4.0.weight"] = torch.zeros(1, 80, 1, 1)
    save_paper_file(tmp_path / "bad.pth.tar", sd)
    proc = run_script(
        "eval.py",
        "backbone=vgg16",
        "backbone.pretrained=false",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path / 'bad.pth.tar'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp=tmp_path,
        check=False,
    )
    error = the_error_line(proc)
    assert "bad.pth.tar" in error and "fuse" in error


def test_netvlad_settings_a_released_file_overrules_are_said(tmp_path, caplog):
    """K and the NetVLAD version come from a released file's tensors: a command line asking for others is told
    they are not used (they were dropped without a word)."""
    import logging

    save_paper_file(tmp_path / "se.pth.tar", paper_state_dict(["senet_attention"]))
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        _, cfg = loaded_network(tmp_path / "se.pth.tar", ["model.num_clusters=32", "head.version=v2"])
    assert cfg.model.num_clusters == K and cfg.head.version == "v1"
    assert (
        f"model.num_clusters=32 (the file's: {K}); head.version=v2 (the file's: v1) on the command line not used"
        in (caplog.text)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        loaded_network(tmp_path / "se.pth.tar", [f"model.num_clusters={K}"])  # the file's own: nothing to say
    assert "not used" not in caplog.text
