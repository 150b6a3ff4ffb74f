"""DAMO-YOLO GiraffeNeckV2 (RepGFPN) with CSPStage / BasicBlock_3x3_Reverse, deploy form."""

from __future__ import annotations

from dataclasses import dataclass

from app.inference._arch_backbone import BRANCH_STD, mobile_v3_block
from app.inference._onnx_graph import Act, GraphBuilder, Tensor

# Expansion of the neck's MobileV3Block (ops.py) in the v0.3.0 nano release (later 3.0);
# BasicBlock_3x3_Reverse then always built it with squeeze-excite (use_se=True).
NECK_DW_EXP_RATIO = 2.2


@dataclass(frozen=True)
class NeckSpec:
    """GiraffeNeckV2 config (`spp=False` and block BasicBlock_3x3_Reverse in every variant)."""

    depth: float
    hidden_ratio: float
    in_channels: tuple[int, int, int]
    out_channels: tuple[int, int, int]
    act: Act
    depthwise: bool = False


def _down(g: GraphBuilder, x: Tensor, act: Act, depthwise: bool) -> Tensor:
    """Stride-2 3x3 'bu_conv': ConvBNAct, or (nano) DepthwiseConv = dw3x3+act then 1x1+act."""
    if depthwise:
        x = g.conv(x, x.channels, 3, 2, groups=x.channels, act=act)
        return g.conv(x, x.channels, 1, act=act)
    return g.conv(x, x.channels, 3, 2, act=act)


def _basic_block_reverse(g: GraphBuilder, x: Tensor, spec: NeckSpec) -> Tensor:
    """BasicBlock_3x3_Reverse: RepConv 3x3 to hidden (fused) + act, 3x3 back + act, + x."""
    if spec.depthwise:  # the nano neck swaps it for a MobileV3Block (see NECK_DW_EXP_RATIO)
        return mobile_v3_block(g, x, x.channels, 1, NECK_DW_EXP_RATIO, spec.act, use_se=True)
    hidden = int(x.channels * spec.hidden_ratio)
    y = g.conv(x, hidden, 3, act=spec.act)
    y = g.conv(y, x.channels, 3, act=spec.act, out_std=BRANCH_STD)
    return g.add(x, y)


def _csp_stage(g: GraphBuilder, x: Tensor, out: int, spec: NeckSpec) -> Tensor:
    """CSPStage: two 1x1 splits, n blocks on one, concat of every block output, 1x1 fuse."""
    first = out // 2
    y1 = g.conv(x, first, 1, act=spec.act)
    y2 = g.conv(x, out - first, 1, act=spec.act)
    outs = [y1]
    # round() is Python's (half to even), as in the official code: depth 1.5 -> 4 blocks.
    for _ in range(round(3 * spec.depth)):
        y2 = _basic_block_reverse(g, y2, spec)
        outs.append(y2)
    return g.conv(g.concat(outs), out, 1, act=spec.act)


def build_neck(g: GraphBuilder, feats: list[Tensor], spec: NeckSpec) -> list[Tensor]:
    """Fuse backbone maps [x2 (s8), x1 (s16), x0 (s32)] into neck outputs for s8, s16, s32."""
    x2, x1, x0 = feats
    cin, cout, act, dw = spec.in_channels, spec.out_channels, spec.act, spec.depthwise
    x3 = _csp_stage(g, g.concat([x0, _down(g, x1, act, dw)]), cin[2], spec)
    x4 = _csp_stage(g, g.concat([x1, _down(g, x2, act, dw), g.upsample2(x3)]), cin[1], spec)
    x5 = _csp_stage(g, g.concat([x2, g.upsample2(x4)]), cout[0], spec)
    x7 = _csp_stage(g, g.concat([x4, _down(g, x5, act, dw)]), cout[1], spec)
    x6 = _csp_stage(g, g.concat([x3, _down(g, x4, act, dw), _down(g, x7, act, dw)]), cout[2], spec)
    return [x5, x7, x6]
