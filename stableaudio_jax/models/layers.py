"""Building blocks shared by the models: weight-normalised 1-D convolutions and SnakeBeta.

Layout conventions (see docs/design.md):
  * activations are channels-last, ``[batch, time, channels]``;
  * convolution kernels are stored ``[kernel, in, out]`` for both plain and transposed convolutions;
  * every parameter carries logical axis names, mapped to mesh axes by the rules in ``parallel.sharding``.

Weight normalisation keeps the PyTorch parametrisation ``W = g * v / ||v||`` as two trainable parameters so a
converted Stable Audio VAE can be fine-tuned and a fresh one trained the way the reference trains it. The norm is
taken per *output* channel for a convolution and per *input* channel for a transposed convolution, exactly as
``torch.nn.utils.weight_norm(dim=0)`` does on PyTorch's ``[out, in, k]`` and ``[in, out, k]`` weights.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from stableaudio_jax.models import lora

Dtype = Any

# Logical axis names of convolution parameters and activations.
KERNEL = "conv_kernel"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
CHANNELS = "channels"


def torch_default_kernel_init(fan_in_axis: int, fan_out_axis: int):
    """PyTorch's default conv init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=fan_in_axis,
                                            out_axis=fan_out_axis)


def torch_default_bias_init(fan_in: int):
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _weight_norm(v: jax.Array, g: jax.Array, norm_axes: tuple[int, ...], g_axis: int) -> jax.Array:
    """W = g * v / ||v||, the norm over every axis but ``g_axis`` (no epsilon, as in PyTorch)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=norm_axes, keepdims=True))
    shape = [1] * v.ndim
    shape[g_axis] = g.shape[0]
    return v * (g.reshape(shape) / norm)


class _WNConvBase(nn.Module):
    """Shared parameter creation for the two weight-normalised convolutions."""

    features: int
    kernel_size: int
    stride: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    # Which kernel axis weight norm keeps (1 = input channels, 2 = output channels) and PyTorch's fan-in axis.
    g_axis: ClassVar[int] = 2
    fan_in_axis: ClassVar[int] = 1

    def _weight(self, in_features: int) -> jax.Array:
        shape = (self.kernel_size, in_features, self.features)
        fan_out_axis = 2 if self.fan_in_axis == 1 else 1
        v = self.param("weight_v",
                       nn.with_logical_partitioning(torch_default_kernel_init(self.fan_in_axis, fan_out_axis),
                                                    (KERNEL, CONV_IN, CONV_OUT)),
                       shape, self.param_dtype)
        norm_axes = tuple(a for a in range(3) if a != self.g_axis)
        g_name = CONV_OUT if self.g_axis == 2 else CONV_IN
        # g starts at ||v|| so that W == v at initialisation, as torch's weight_norm does.
        g = self.param("weight_g",
                       nn.with_logical_partitioning(
                           lambda _, v_: jnp.sqrt(jnp.sum(jnp.square(v_), axis=norm_axes)), (g_name,)),
                       v)
        return _weight_norm(v, g, norm_axes, self.g_axis).astype(self.dtype)

    def _bias(self, y: jax.Array, fan_in: int) -> jax.Array:
        if not self.use_bias:
            return y
        b = self.param("bias", nn.with_logical_partitioning(torch_default_bias_init(fan_in), (CONV_OUT,)),
                       (self.features,), self.param_dtype)
        return y + b.astype(self.dtype)


class WNConv1d(_WNConvBase):
    """Weight-normalised ``torch.nn.Conv1d`` equivalent on ``[B, T, C]`` inputs.

    ``padding`` is PyTorch's symmetric zero padding; ``None`` means "same" for stride 1
    (``dilation * (kernel_size - 1) // 2``).
    """

    dilation: int = 1
    padding: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        w = self._weight(in_features)
        pad = self.dilation * (self.kernel_size - 1) // 2 if self.padding is None else self.padding
        y = lax.conv_general_dilated(
            x.astype(self.dtype), w, window_strides=(self.stride,), padding=[(pad, pad)],
            rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"), precision=self.precision)
        return self._bias(y, in_features * self.kernel_size)


class WNConvTranspose1d(_WNConvBase):
    """Weight-normalised ``torch.nn.ConvTranspose1d`` (output_padding 0) on ``[B, T, C]`` inputs.

    Output length ``(T - 1) * stride - 2 * padding + kernel_size``. Implemented as the gradient of a convolution:
    dilate the input by ``stride``, pad by ``kernel_size - 1 - padding`` and correlate with the flipped kernel.
    Weight norm keeps ``g`` per *input* channel, as torch does for transposed convolutions.
    """

    padding: int = 0
    g_axis: ClassVar[int] = 1
    fan_in_axis: ClassVar[int] = 2  # torch computes fan-in of a transposed conv from its out-channel dim

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self._weight(x.shape[-1])
        edge = self.kernel_size - 1 - self.padding
        if edge < 0:
            raise ValueError(f"WNConvTranspose1d: padding {self.padding} exceeds kernel_size - 1 "
                             f"({self.kernel_size - 1}); expected 0 <= padding < kernel_size")
        y = lax.conv_general_dilated(
            x.astype(self.dtype), w[::-1], window_strides=(1,), padding=[(edge, edge)],
            lhs_dilation=(self.stride,), dimension_numbers=("NWC", "WIO", "NWC"), precision=self.precision)
        return self._bias(y, self.features * self.kernel_size)


def snake_beta(x: jax.Array, log_alpha: jax.Array, log_beta: jax.Array) -> jax.Array:
    """SnakeBeta with log-scale parameters: x + 1/(e^beta + 1e-9) * sin^2(e^alpha * x), computed in float32."""
    x32 = x.astype(jnp.float32)
    alpha = jnp.exp(log_alpha.astype(jnp.float32))
    inv_beta = 1.0 / (jnp.exp(log_beta.astype(jnp.float32)) + 1e-9)
    return (x32 + inv_beta * jnp.square(jnp.sin(alpha * x32))).astype(x.dtype)


class SnakeBeta(nn.Module):
    """BigVGAN's SnakeBeta activation over the last (channel) axis, alpha/beta stored in log scale, init 0."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        init = nn.with_logical_partitioning(nn.initializers.zeros_init(), (CHANNELS,))
        log_alpha = self.param("alpha", init, (channels,), self.param_dtype)
        log_beta = self.param("beta", init, (channels,), self.param_dtype)
        return snake_beta(x, log_alpha, log_beta)


class Snake1d(nn.Module):
    """DAC's Snake (Stable Audio 1.0's VAE): x + 1/(alpha + 1e-9) * sin^2(alpha * x), alpha per channel in linear
    scale, initialised to 1; computed in float32."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.ones_init(), (CHANNELS,))
        alpha = self.param("alpha", init, (x.shape[-1],), self.param_dtype).astype(jnp.float32)
        x32 = x.astype(jnp.float32)
        return (x32 + jnp.square(jnp.sin(alpha * x32)) / (alpha + 1e-9)).astype(x.dtype)


def _merged_sizes(shape: tuple[int, ...], axes: tuple[str, ...]) -> list[int]:
    """``shape`` with runs of adjacent axes merged where that keeps the kernel's sharding: an axis whose logical
    name the active rules do not map to a mesh axis joins the axis before it. Without rules (one device) the
    whole shape merges into one axis."""
    rules: dict = {}
    for name, mesh_axes in nn.get_logical_axis_rules() or ():
        rules.setdefault(name, mesh_axes)
    sizes: list[int] = []
    for size, name in zip(shape, axes):
        if sizes and rules.get(name) is None:
            sizes[-1] *= size
        else:
            sizes.append(size)
    return sizes


class DenseGeneral(nn.Module):
    """A linear map contracting the last ``in_dims`` input axes into ``features`` (a tuple of output dims).

    Unlike ``flax.linen.DenseGeneral`` the kernel is created in its full shape ``in_shape + features``, so its
    logical axis names (``axes``: one per kernel dim) hold at init *and* when Linen re-checks shapes at apply time
    under active sharding rules.
    """

    features: tuple[int, ...]
    axes: tuple[str, ...]
    in_dims: int = 1
    use_bias: bool = False
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = tuple(self.features)
        shape = tuple(x.shape[x.ndim - self.in_dims:]) + features
        if len(self.axes) != len(shape):
            raise ValueError(f"DenseGeneral {self.name}: {len(self.axes)} axis names {self.axes} for a kernel of "
                             f"shape {shape}")
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes), shape,
                            self.param_dtype)
        # Adjacent kernel axes are merged where the sharding rules allow (an unsharded axis joins the one before
        # it), so that the matmul has as few axes as possible: XLA's CPU backend differentiates a [K] x [K, N]
        # GEMM ~10 % faster than the same product over several axes; sharded axes stay separate.
        ins = _merged_sizes(shape[:self.in_dims], self.axes[:self.in_dims])
        outs = _merged_sizes(features, self.axes[self.in_dims:])
        lead = x.shape[:x.ndim - self.in_dims]
        contract = (tuple(range(len(lead), len(lead) + len(ins))), tuple(range(len(ins))))
        y = lax.dot_general(x.astype(self.dtype).reshape(*lead, *ins), kernel.astype(self.dtype).reshape(*ins, *outs),
                            (contract, ((), ())), precision=self.precision).reshape(*lead, *features)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(self.bias_init, self.axes[self.in_dims:]),
                              features, self.param_dtype)
            y = y + bias.astype(self.dtype)
        return lora.adapted(self, x.astype(self.dtype).reshape(*lead, int(np.prod(ins))), y,
                            kernel.reshape(int(np.prod(ins)), int(np.prod(outs))))


class WNConv2d(nn.Module):
    """Weight-normalised ``torch.nn.Conv2d`` on NHWC inputs: kernel ``weight_v [kh, kw, in, out]``, ``weight_g``
    per output channel, bias; symmetric zero ``padding`` per spatial axis, ``dilation`` per axis."""

    features: int
    kernel_size: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        shape = (kh, kw, cin, self.features)
        v = self.param("weight_v", nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=2, out_axis=3),
            (KERNEL, "conv_kernel_w", CONV_IN, CONV_OUT)), shape, self.param_dtype)
        g = self.param("weight_g", nn.with_logical_partitioning(
            lambda _, v_: jnp.sqrt(jnp.sum(jnp.square(v_), axis=(0, 1, 2))), (CONV_OUT,)), v)
        b = self.param("bias", nn.with_logical_partitioning(torch_default_bias_init(cin * kh * kw), (CONV_OUT,)),
                       (self.features,), self.param_dtype)
        w = _weight_norm(v, g, (0, 1, 2), 3).astype(self.dtype)
        (ph, pw), (dh, dw) = self.padding, self.dilation
        y = lax.conv_general_dilated(x.astype(self.dtype), w, (1, 1), [(ph, ph), (pw, pw)], rhs_dilation=(dh, dw),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b.astype(self.dtype)


def module_from_config(cls: type, model_config: Any, kind: str, dtype: Any = jnp.float32,
                       param_dtype: Any = jnp.float32, **converted: Any) -> nn.Module:
    """``cls`` from a ``config.model`` section whose ``type`` must be ``kind`` (absent: taken as it) and whose other
    keys must be fields of ``cls``; ``converted`` overrides values after the checks (e.g. lists → tuples)."""
    cfg = dict(model_config)
    found = cfg.pop("type", kind)
    if found != kind:
        raise ValueError(f"config.model.type is {found!r}; expected {kind!r}")
    known = set(cls.__dataclass_fields__) - {"parent", "name", "dtype", "param_dtype"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"config.model has unknown keys {unknown}; expected a subset of {sorted(known)}")
    return cls(**(cfg | converted), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
