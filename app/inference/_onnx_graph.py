"""A small numpy + `onnx.helper` graph builder with seeded, calibrated random weights.

Every convolution is emitted in deploy form: a single `Conv` with bias, i.e. what a trained
network looks like after BatchNorm has been folded into the conv and RepConv branches have
been merged. Weights come from one `numpy.random.default_rng(seed)` stream in build order.

Weight scale (BatchNorm calibration): while the graph is built, the builder also runs it in
numpy on a small fixed calibration batch (`Tensor.value`). Each conv draws normal weights,
looks at the per-channel mean and std its raw output has on that batch, then rescales every
output channel to a target std and sets its bias to cancel the mean plus a small random
shift: exactly what folding a BatchNorm whose running statistics came from that data does.
So activations stay O(1) and spatially varying through the whole graph whatever the depth,
and the 0..255 input range is folded into the first conv. Filters are also made blind to
their input's mean level (`_blind_to_mean`), which keeps the random network from amplifying
small differences between images. Because the statistics come from floating-point sums, the
same seed gives identical bytes with the same numpy build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

Act = Literal["relu", "silu", "identity"]
Array = npt.NDArray[np.float32]

# Std of the folded-BN shift (beta) of a conv's output, relative to its output std.
_BETA_STD = 0.1
_EPS = 1e-5
# Smallest std a channel is assumed to have, as a fraction of its layer's RMS std.
_STD_FLOOR = 0.2


@dataclass(frozen=True, eq=False)
class Tensor:
    """A 4-D NCHW activation: its value name and its value on the calibration batch."""

    name: str
    value: Array

    @property
    def channels(self) -> int:
        return int(self.value.shape[1])


def _conv2d(x: Array, w: Array, stride: int, groups: int) -> Array:
    """Reference NCHW convolution with "same" padding (k - 1) // 2, no bias."""
    out_c, in_per_group, k, _ = w.shape
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    n, c, hp, wp = xp.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    if groups == 1:
        if k == 1:
            cols = xp[:, :, ::stride, ::stride].transpose(0, 2, 3, 1).reshape(-1, c)
        else:
            win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
            win = win[:, :, ::stride, ::stride][:, :, :ho, :wo]  # [n, c, ho, wo, k, k]
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        out = cols @ w.reshape(out_c, -1).T
        return np.ascontiguousarray(out.reshape(n, ho, wo, out_c).transpose(0, 3, 1, 2))
    if groups == c == out_c and in_per_group == 1:  # depthwise
        acc = np.zeros((n, c, ho, wo), np.float32)
        for i in range(k):
            for j in range(k):
                patch = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
                acc += patch * w[:, 0, i, j][None, :, None, None]
        return acc
    raise NotImplementedError("only dense and depthwise convolutions are supported")


def _blind_to_mean(weight: Array, x: Array) -> Array:
    """Make each filter orthogonal to the input's per-channel mean (as a constant patch).

    Random filters over non-negative (post-activation) inputs otherwise respond mostly to
    the inputs' constant level; centring that away and rescaling, as the folded BN does,
    would then amplify the small input-dependent remainder layer after layer, a chaotic
    network whose outputs swing wildly between similar images. Trained filters respond to
    structure, not level, and so do these.
    """
    out_c, in_per_group, k, _ = weight.shape
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    if in_per_group == 1 and out_c == mean.shape[0]:  # depthwise: zero-sum spatial filters
        centred: Array = weight - weight.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
        return centred
    patch = np.broadcast_to(mean[:, None, None], (in_per_group, k, k)).ravel()
    norm = float(np.linalg.norm(patch))
    if norm == 0.0:
        return weight
    unit = (patch / norm).astype(np.float32)
    flat = weight.reshape(out_c, -1)
    flat -= (flat @ unit)[:, None] * unit[None, :]
    return flat.reshape(weight.shape)


class GraphBuilder:
    """Accumulates nodes and initializers; one instance builds one model."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counters: dict[str, int] = {}
        self._shared: dict[tuple[str, bytes], str] = {}

    def fresh(self, prefix: str) -> str:
        """A new unique value/node name `prefix_<n>`."""
        index = self._counters.get(prefix, 0)
        self._counters[prefix] = index + 1
        return f"{prefix}_{index}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        """Add `array` as an initializer; identical small constants are shared."""
        small = array.size <= 16
        key = (f"{array.dtype}{array.shape}", array.tobytes())
        if small and key in self._shared:
            return self._shared[key]
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        if small:
            self._shared[key] = name
        return name

    def op(
        self, op_type: str, inputs: list[str], *, output: str | None = None, **attrs: Any
    ) -> str:
        """Append one single-output node and return its output name."""
        out = output or self.fresh(op_type.lower())
        node = helper.make_node(op_type, inputs, [out], name=self.fresh(op_type), **attrs)
        self.nodes.append(node)
        return out

    # --- layers ---------------------------------------------------------------------------

    def conv(
        self,
        x: Tensor,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        act: Act = "relu",
        out_std: float = 1.0,
        bias: float | None = None,
        zero_sum: bool = False,
    ) -> Tensor:
        """Conv with folded BN ("same" padding) followed by `act`.

        Each output channel is scaled to std `out_std` on the calibration batch and centred
        on a small random shift, or on exactly `bias` when given (e.g. a detection prior).
        `zero_sum` makes every kxk filter slice sum to zero, so the output ignores any
        spatially constant shift of any input channel (image-to-image level drift).
        """
        if zero_sum and kernel == 1:
            raise ValueError("a zero-sum 1x1 filter is all zeros")
        shape = (out_channels, x.channels // groups, kernel, kernel)
        weight = self.rng.standard_normal(shape, dtype=np.float32)
        if zero_sum:
            weight -= weight.mean(axis=(2, 3), keepdims=True)
        else:
            weight = _blind_to_mean(weight, x.value)
        raw = _conv2d(x.value, weight, stride, groups)
        mean = raw.mean(axis=(0, 2, 3), dtype=np.float64)
        std = raw.std(axis=(0, 2, 3), dtype=np.float64)
        # A channel nearly constant on the calibration batch (e.g. a depthwise filter over a
        # dead channel) must not be blown up: floor its std at a fraction of the layer's.
        floor = _STD_FLOOR * float(np.sqrt(np.mean(std * std))) + _EPS
        scale = (out_std / np.maximum(std, floor)).astype(np.float32)
        if bias is None:
            shift = self.rng.standard_normal(out_channels) * (_BETA_STD * out_std)
        else:
            shift = np.full(out_channels, bias)
        bias_value = (shift - mean * scale).astype(np.float32)
        weight *= scale[:, None, None, None]
        value = raw * scale[None, :, None, None] + bias_value[None, :, None, None]
        pad = (kernel - 1) // 2
        y = self.op(
            "Conv",
            [x.name, self.constant("w", weight), self.constant("b", bias_value)],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )
        return self.activation(Tensor(y, value), act)

    def activation(self, x: Tensor, act: Act) -> Tensor:
        """ReLU, or SiLU as x * sigmoid(x) (how DAMO-YOLO exports it), or nothing."""
        if act == "identity":
            return x
        if act == "relu":
            return Tensor(self.op("Relu", [x.name]), np.maximum(x.value, 0.0))
        y = self.op("Mul", [x.name, self.op("Sigmoid", [x.name])])
        return Tensor(y, cast(Array, x.value / (1.0 + np.exp(-x.value))))

    def squeeze_excite(self, x: Tensor, reduction: int = 4) -> Tensor:
        """SEModule: global average pool, Linear C -> C/4 + ReLU, Linear back, hard sigmoid,
        channel-wise rescale. The bias-free Linears run as 1x1 convs on the [b, C, 1, 1]
        pooled map: the same parameters and MACs, and no reshapes around the batch axis."""
        pooled = Tensor(self.op("GlobalAveragePool", [x.name]), x.value.mean((2, 3), keepdims=True))
        hidden = self._linear_1x1(pooled, x.channels // reduction)
        hidden = Tensor(self.op("Relu", [hidden.name]), np.maximum(hidden.value, 0.0))
        logits = self._linear_1x1(hidden, x.channels)
        # relu6(z + 3) / 6 is exactly HardSigmoid(alpha=1/6, beta=0.5)
        gate = self.op("HardSigmoid", [logits.name], alpha=1.0 / 6.0, beta=0.5)
        gate_value = np.clip(logits.value / 6.0 + 0.5, 0.0, 1.0)
        return Tensor(self.op("Mul", [x.name, gate]), x.value * gate_value)

    def _linear_1x1(self, x: Tensor, out_channels: int) -> Tensor:
        """Bias-free 1x1 conv with outputs of unit root mean square on the calibration batch."""
        weight = self.rng.standard_normal((out_channels, x.channels, 1, 1), dtype=np.float32)
        raw = _conv2d(x.value, weight, 1, 1)
        weight *= np.float32(1.0 / max(math.sqrt(float(np.mean(raw * raw))), _EPS))
        y = self.op("Conv", [x.name, self.constant("w", weight)], kernel_shape=[1, 1])
        return Tensor(y, _conv2d(x.value, weight, 1, 1))

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise sum (a residual link)."""
        return Tensor(self.op("Add", [a.name, b.name]), a.value + b.value)

    def concat(self, parts: list[Tensor]) -> Tensor:
        """Channel concatenation."""
        value = np.concatenate([p.value for p in parts], axis=1)
        return Tensor(self.op("Concat", [p.name for p in parts], axis=1), value)

    def maxpool(self, x: Tensor, kernel: int) -> Tensor:
        """Stride-1 "same" max pool (SPP)."""
        pad = kernel // 2
        y = self.op(
            "MaxPool", [x.name], kernel_shape=[kernel, kernel], strides=[1, 1], pads=[pad] * 4
        )
        padded = np.pad(x.value, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
        win = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
        return Tensor(y, win.max(axis=(-2, -1)))

    def upsample2(self, x: Tensor) -> Tensor:
        """nn.Upsample(scale_factor=2, mode="nearest") as torch exports it."""
        scales = self.constant("scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
        y = self.op(
            "Resize",
            [x.name, "", scales],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        return Tensor(y, x.value.repeat(2, axis=2).repeat(2, axis=3))

    def focus_slices(self, x: Tensor) -> Tensor:
        """DAMO-YOLO Focus space-to-depth: concat of the four pixel-parity sub-images.

        Order (top-left, bottom-left, top-right, bottom-right) follows the official module,
        and it is exported the same way, as four strided Slices.
        """
        axes = self.constant("axes", np.array([2, 3], dtype=np.int64))
        steps = self.constant("steps", np.array([2, 2], dtype=np.int64))
        ends = self.constant("ends", np.array([2**62, 2**62], dtype=np.int64))
        parts = []
        for row, col in ((0, 0), (1, 0), (0, 1), (1, 1)):
            starts = self.constant("starts", np.array([row, col], dtype=np.int64))
            part = self.op("Slice", [x.name, starts, ends, axes, steps])
            parts.append(Tensor(part, np.ascontiguousarray(x.value[:, :, row::2, col::2])))
        return self.concat(parts)
