"""DAMO-YOLO TinyNAS backbones (res, csp and mob flavours) in deploy form.

The stage lists come from the official MAE-NAS structure files
(`damo/base_models/backbones/nas_backbones/*.txt`); each entry is a `Stage`. Entry 0 is the
stem (`ConvKXBNRELU`, built as a Focus because every config sets `use_focus=True`), the rest
are `SuperResConvK1KX` / `SuperResConvKXKX` stages of `L` blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from app.inference._onnx_graph import Act, GraphBuilder, Tensor

BackboneKind = Literal["res", "csp", "mob"]

# Expansion of tinynas_mob's MobileV3Block as released with DAMO-YOLO-N in v0.3.0 (commits
# 483922c..f0a7c14), which is what the published 2.2 M / 3.0 GFLOPs describe. A later commit
# (e7e649f, "upgrade nano series model", for Ns/Nm/Nl) changed it to 3.5 + 0.5 per stage with
# make_divisible; built that way, the L20_N config measures 4.0 GFLOPs, 35 % over the table.
MOB_EXP_RATIO = 2.5
# Output std of a residual branch relative to its skip path (like a small BN gamma at the end
# of a trained branch): keeps the random network stable, so similar images give similar
# features instead of amplifying small differences block after block.
BRANCH_STD = 0.5


@dataclass(frozen=True)
class Stage:
    """One entry of a TinyNAS structure file."""

    cin: int
    cout: int
    k: int
    stride: int
    btn: int = 0  # bottleneck width ('btn'); unused by the stem and by mob blocks
    num_blocks: int = 1  # 'L'
    kxkx: bool = False  # SuperResConvKXKX (kxk first conv) instead of K1KX (1x1 first conv)


@dataclass(frozen=True)
class BackboneSpec:
    """A TinyNAS config: `kind` picks tinynas_res / tinynas_csp / tinynas_mob."""

    kind: BackboneKind
    stages: tuple[Stage, ...]
    act: Act
    out_indices: tuple[int, int, int]
    use_se: bool = False  # tinynas_mob only: squeeze-excite in every MobileV3Block


def focus(g: GraphBuilder, x: Tensor, stem: Stage, act: Act) -> Tensor:
    """Focus: space-to-depth (3 -> 12 channels, stride 2), then a stride-1 kxk conv."""
    return g.conv(g.focus_slices(x), stem.cout, stem.k, 1, act=act)


def spp_bottleneck(g: GraphBuilder, x: Tensor, out_channels: int) -> Tensor:
    """SPPBottleneck: 1x1 to C/2, parallel max pools 5/9/13, concat, 1x1 back.

    Its activation is SiLU in every variant (the module's default; backbones don't pass act).
    """
    hidden = g.conv(x, x.channels // 2, 1, act="silu")
    pooled = [g.maxpool(hidden, k) for k in (5, 9, 13)]
    return g.conv(g.concat([hidden, *pooled]), out_channels, 1, act="silu")


def res_conv_block(
    g: GraphBuilder, x: Tensor, out: int, btn: int, k: int, stride: int, act: Act, kxkx: bool
) -> Tensor:
    """ResConvBlock: conv1 (1x1 or kxk) + act, RepConv kxk (identity act, fused), residual."""
    h = g.conv(x, btn, k if kxkx else 1, 1, act=act)
    residual = stride != 2  # the official block only skips the residual when it downsamples
    h = g.conv(h, out, k, stride, act="identity", out_std=BRANCH_STD if residual else 1.0)
    if residual:  # the official block only skips the residual when it downsamples
        link = x if x.channels == out else g.conv(x, out, 1, act="identity")
        h = g.add(h, link)
    return g.activation(h, act)


def mobile_v3_block(
    g: GraphBuilder,
    x: Tensor,
    out: int,
    stride: int,
    exp_ratio: float,
    act: Act,
    use_se: bool,
) -> Tensor:
    """MobileV3Block: 1x1 expand + act, 5x5 depthwise (+ SE) + act, 1x1 project, residual.

    The expansion width is ceil(out * exp_ratio); `btn` and `k` from the structure file are
    ignored by the official block (it always uses a 5x5 depthwise). The residual is added
    only when the block keeps both stride and width.
    """
    branch = math.ceil(out * exp_ratio)
    h = g.conv(x, branch, 1, act=act)
    h = g.conv(h, branch, 5, stride, groups=branch, act="identity")
    if use_se:
        h = g.squeeze_excite(h)
    h = g.activation(h, act)
    residual = stride == 1 and x.channels == out
    h = g.conv(h, out, 1, act="identity", out_std=BRANCH_STD if residual else 1.0)
    if residual:
        h = g.add(h, x)
    return h


def _res_or_mob(g: GraphBuilder, x: Tensor, spec: BackboneSpec) -> list[Tensor]:
    """tinynas_res / tinynas_mob: stages in sequence, SPP after the last stage's first block."""
    feats = []
    x = focus(g, x, spec.stages[0], spec.act)
    last = len(spec.stages) - 1
    for idx, stage in enumerate(spec.stages[1:], start=1):
        for block in range(stage.num_blocks):
            stride = stage.stride if block == 0 else 1
            if spec.kind == "mob":
                x = mobile_v3_block(g, x, stage.cout, stride, MOB_EXP_RATIO, spec.act, spec.use_se)
            else:
                x = res_conv_block(
                    g, x, stage.cout, stage.btn, stage.k, stride, spec.act, stage.kxkx
                )
            if block == 0 and idx == last:
                x = spp_bottleneck(g, x, stage.cout)
        if idx in spec.out_indices:
            feats.append(x)
    return feats


def _csp_wrapper(
    g: GraphBuilder, x: Tensor, stems: tuple[Stage, ...], act: Act, with_spp: bool
) -> Tensor:
    """tinynas_csp CSPWrapper around one or two structure stages.

    The wrapper's own convs (downsampler, split, fuse) use ReLU: TinyNAS_csp does not pass its
    `act` to CSPWrapper, whose default is 'relu'. The inner ResConvBlocks use `act`; a stride-2
    stage contributes L-1 of them (the downsampler takes the place of its first block).
    """
    out_c = stems[-1].cout
    hidden = stems[0].cout // 2
    x = g.conv(x, hidden * 2, 3, 2, act="relu")
    if with_spp:
        x = spp_bottleneck(g, x, hidden * 2)
    blocks = [(s, s.num_blocks - 1 if s.stride == 2 else s.num_blocks) for s in stems]
    if sum(n for _, n in blocks) == 0:
        return x
    shortcut = g.conv(x, out_c // 2, 1, act="relu")
    y = g.conv(x, hidden, 1, act="relu")
    for stem, count in blocks:
        for _ in range(count):
            y = res_conv_block(g, y, stem.cout // 2, stem.btn, stem.k, 1, act, stem.kxkx)
    return g.conv(g.concat([y, shortcut]), out_c, 1, act="relu")


def _csp(g: GraphBuilder, x: Tensor, spec: BackboneSpec) -> list[Tensor]:
    """tinynas_csp: Focus, then wrappers around stages (1), (2), (3, 4), (5) with SPP in (5)."""
    s = spec.stages
    if len(s) != 6:
        raise ValueError("tinynas_csp expects a stem and five stages")
    x = focus(g, x, s[0], spec.act)
    feats = []
    for idx, group in enumerate(((s[1],), (s[2],), (s[3], s[4]), (s[5],)), start=1):
        x = _csp_wrapper(g, x, group, spec.act, with_spp=idx == 4)
        if idx in spec.out_indices:
            feats.append(x)
    return feats


def build_backbone(g: GraphBuilder, images: Tensor, spec: BackboneSpec) -> list[Tensor]:
    """Return the stride 8, 16, 32 feature maps."""
    feats = _csp(g, images, spec) if spec.kind == "csp" else _res_or_mob(g, images, spec)
    if len(feats) != 3:
        raise ValueError(f"backbone produced {len(feats)} feature maps, expected 3")
    return feats
