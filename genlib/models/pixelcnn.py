"""Autoregressive image models with exact likelihood: PixelCNN [1], Gated PixelCNN [2] and the
Row LSTM of PixelRNN [1].

Each sub-pixel is a softmax over the dataset's ``levels``, conditioned on every sub-pixel before
it in raster order (rows top to bottom, pixels left to right, channels R → G → B), so
``log_prob`` is the exact discrete log-likelihood and bits/dim compare directly with the VAE's
bounds. Sampling draws one sub-pixel at a time. The plain PixelCNN also has a cached sampler in
the spirit of [3]: every layer's activations are kept, and each step computes each layer at the
one position that just became computable instead of re-running the network on the whole image.
Both samplers consume the same random numbers in the same order, so they draw the same images.

[1] van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016.
[2] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016.
[3] Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", ICLR
    workshop 2017.

NOTE: [1] uses 7×7 mask-A then 3×3 mask-B residual blocks with 1×1 bottlenecks; here each
residual block is one 3×3 mask-B conv, which is enough for 8×8–32×32 images.
NOTE: class conditioning adds a learned per-class bias to every layer (the h = W·y term of [2]).
NOTE: the Gated PixelCNN and the Row LSTM sample with the naive sampler only; caching their
stacks and recurrent states is open.
NOTE: the Row LSTM here has residual connections between layers and a 1×k masked
input-to-state convolution, as in [1]; the row recurrence runs in Python, one row at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import ANY, ModelConfig, at_least, checked, name, odd_at_least
from genlib.models.base import COMPLETE, LOG_PROB, MODELS, Batch, GenerativeModel, to_unit
from genlib.models.layers import (
    MaskedConv2d,
    bits_per_dim,
    categorical_log_likelihood,
    channel_groups,
    noise_device,
)


class AutoregressiveModel(GenerativeModel):
    """Training, exact likelihood, sampling and completion shared by the pixel-by-pixel models.

    Subclasses implement ``logits(x, labels) -> (B, C, L, H, W)``; a subclass with a cached
    sampler also implements ``start_cache`` and ``position_logits``.
    """

    capabilities = frozenset({LOG_PROB, COMPLETE})
    log_prob_exact = True

    def build_head(self, hidden: int, width: int) -> None:
        """The 1×1 output head shared by every model here: features → C·L logits, mask B."""
        c = self.shape[0]
        self.head1 = MaskedConv2d(hidden, width, 1, "B", c)
        self.head2 = MaskedConv2d(width, c * self.levels, 1, "B", c)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, hidden, H, W) features → logits (B, C, L, H, W)."""
        out = self.head2(F.relu(self.head1(F.relu(features))))
        return out.view(len(out), self.shape[0], self.levels, *out.shape[2:])

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per image in nats, (B,)."""
        return -categorical_log_likelihood(self.logits(x, self.class_labels(labels, len(x))), x)

    def training_step(self, batch: Batch, optimizers, step: int) -> dict[str, float]:
        opt = optimizers["model"]
        loss = self.run(batch.x, batch.labels).mean()
        self.optimize(opt, loss)
        return {"loss": loss.item(), "bpd": bits_per_dim(loss.item(), self.dims)}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        loss = self(batch.x, batch.labels).mean().item()
        return {"loss": loss, "bpd": bits_per_dim(loss, self.dims)}

    @torch.no_grad()
    def log_prob(self, x, labels=None, k: int = 1) -> torch.Tensor:
        return -self(x, labels)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, cached: bool | None = None) -> torch.Tensor:
        x = torch.zeros(n, *self.shape, dtype=torch.uint8, device=self.device)
        return self._generate(x, None, self.class_labels(labels, n, default=True), generator, cached)

    @torch.no_grad()
    def complete(self, x, mask, labels=None, generator=None, cached: bool | None = None) -> torch.Tensor:
        """Keep the pixels where ``mask`` (B, H, W) or (H, W) is True; sample the others.

        Pixels are drawn in raster order, each conditioned on every pixel before it, observed or
        drawn — the completion of [1], which sees the context above and to the left."""
        observed = mask.to(torch.bool).expand(len(x), *self.shape[1:]).to(self.device)
        return self._generate(x.clone().to(self.device), observed,
                              self.class_labels(labels, len(x), default=True), generator, cached)

    def _generate(self, x, observed, labels, generator, cached) -> torch.Tensor:
        c_n, h_n, w_n = self.shape
        use_cache = hasattr(self, "start_cache") if cached is None else cached
        if use_cache and not hasattr(self, "start_cache"):
            raise ValueError(f"{type(self).__name__} has no cached sampler; use cached=False")
        cache = self.start_cache(len(x), labels) if use_cache else None
        for i in range(h_n):
            for j in range(w_n):
                for c in range(c_n):
                    if cache is not None:
                        logits = self.position_logits(cache, x, i, j)[:, c]  # (B, L)
                    else:
                        logits = self.logits(x, labels)[:, c, :, i, j]
                    # Gumbel-max with noise drawn in the same order by both samplers.
                    u = torch.rand(len(x), self.levels, generator=generator,
                                   device=noise_device(generator)).clamp_(1e-12, 1 - 1e-7)
                    drawn = (logits + (-(-u.log()).log()).to(logits.device)).argmax(-1).to(torch.uint8)
                    if observed is not None:
                        drawn = torch.where(observed[:, i, j], x[:, c, i, j], drawn)
                    x[:, c, i, j] = drawn
        return x


# --------------------------------------------------------------------------- PixelCNN


@dataclass(frozen=True)
class PixelCNNConfig(ModelConfig):
    family: str = checked("pixelcnn", name())
    hidden: int = checked(64, at_least(1))  # channels of the masked residual stack
    layers: int = checked(6, at_least(1))  # mask-B residual layers after the mask-A input layer
    kernel: int = checked(3, odd_at_least(1))  # kernel of the mask-B layers
    first_kernel: int = checked(7, odd_at_least(1))  # kernel of the mask-A input layer
    head: int = checked(128, at_least(1))  # channels of the 1×1 output head
    conditional: bool = checked(False, ANY)  # class-conditional (needs a labelled dataset)


@MODELS.register("pixelcnn")
class PixelCNN(AutoregressiveModel):
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c = self.shape[0]
        self.conv_in = MaskedConv2d(c, config.hidden, config.first_kernel, "A", c)
        self.stack = nn.ModuleList(MaskedConv2d(config.hidden, config.hidden, config.kernel, "B", c)
                                   for _ in range(config.layers))
        self.build_head(config.hidden, config.head)
        self.class_bias = (nn.Embedding(num_classes, config.hidden * (config.layers + 1))
                           if self.conditional else None)

    def _biases(self, labels) -> list[torch.Tensor | None]:
        if labels is None:
            return [None] * (len(self.stack) + 1)
        return list(self.class_bias(labels).chunk(len(self.stack) + 1, dim=1))  # each (B, hidden)

    def logits(self, x, labels):
        biases = self._biases(labels)
        h = _add(self.conv_in(to_unit(x, self.levels)), biases[0], spatial=True)
        for conv, bias in zip(self.stack, biases[1:]):
            h = _add(h + conv(F.relu(h)), bias, spatial=True)
        return self.head_logits(h)

    # -- cached sampler [3] -----------------------------------------------------------------

    def start_cache(self, n: int, labels) -> dict:
        c, h, w = self.shape
        p_in, p = self.config.first_kernel // 2, self.config.kernel // 2
        zeros = lambda ch, pad: torch.zeros(n, ch, h + 2 * pad, w + 2 * pad, device=self.device)  # noqa: E731
        return {"x": zeros(c, p_in), "acts": [zeros(self.config.hidden, p) for _ in self.stack],
                "biases": self._biases(labels)}

    def position_logits(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Logits (B, C, L) at (i, j), computing every layer at that one position."""
        p_in, p = self.config.first_kernel // 2, self.config.kernel // 2
        biases = cache["biases"]
        # The whole image so far (cheap next to the convolutions): drawn sub-pixels included.
        cache["x"][:, :, p_in:p_in + x.shape[2], p_in:p_in + x.shape[3]] = to_unit(x, self.levels)
        h = _add(self.conv_in.at(cache["x"], i, j), biases[0])
        for conv, acts, bias in zip(self.stack, cache["acts"], biases[1:]):
            acts[:, :, i + p, j + p] = F.relu(h)
            h = _add(h + conv.at(acts, i, j), bias)
        return self.head_logits(h[:, :, None, None])[..., 0, 0]  # (B, C, L)


# --------------------------------------------------------------------------- Gated PixelCNN


@dataclass(frozen=True)
class GatedPixelCNNConfig(ModelConfig):
    family: str = checked("gated-pixelcnn", name())
    hidden: int = checked(64, at_least(1))  # channels of each stack
    layers: int = checked(8, at_least(1))  # gated layers (the first one is the mask-A layer)
    kernel: int = checked(5, odd_at_least(1))  # the vertical stack sees a (k//2+1)×k window, the horizontal one 1×(k//2+1)
    head: int = checked(128, at_least(1))  # channels of the 1×1 output head
    conditional: bool = checked(False, ANY)  # class-conditional (needs a labelled dataset)


class GatedLayer(nn.Module):
    """One layer of [2]: a vertical stack (rows above) feeding a horizontal stack (the row so far),
    gated activations tanh ⊙ σ, a residual connection in the horizontal stack and a skip output."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, data_channels: int, first: bool,
                 last: bool, num_classes: int | None):
        super().__init__()
        self.p, self.hidden, self.first = kernel // 2, hidden, first
        gate_groups = channel_groups(hidden, data_channels).repeat(2)  # tanh half, σ half
        self.v_conv = nn.Conv2d(in_channels, 2 * hidden, (self.p + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * hidden, (1, self.p + 1))
        mask = torch.ones_like(self.h_conv.weight)
        in_g = channel_groups(in_channels, data_channels)
        centre = in_g[None, :] < gate_groups[:, None] if first else in_g[None, :] <= gate_groups[:, None]
        mask[:, :, 0, -1] = centre.float()  # the current pixel: colour groups only
        self.register_buffer("h_mask", mask, persistent=False)
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        # The last layer's horizontal output feeds nothing but its skip (unused weights break DDP).
        self.residual = None if last else MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        self.skip = MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        self.class_bias = nn.Embedding(num_classes, 4 * hidden) if num_classes else None

    def forward(self, v, h, labels):
        v_pre = self.v_conv(F.pad(v, (self.p, self.p, self.p, 0)))  # rows i-p..i: (B, 2h, H, W)
        h_pre = F.conv2d(F.pad(h, (self.p, 0, 0, 0)), self.h_conv.weight * self.h_mask, self.h_conv.bias)
        # The vertical stack reaches the horizontal one shifted down a row, so it holds rows < i only.
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])
        if self.class_bias is not None:
            bv, bh = self.class_bias(labels)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bv, h_pre + bh
        v_out, h_gated = _gate(v_pre), _gate(h_pre)
        h_out = h if self.residual is None else self.residual(h_gated) + (0 if self.first else h)
        return v_out, h_out, self.skip(h_gated)


@MODELS.register("gated-pixelcnn")
class GatedPixelCNN(AutoregressiveModel):
    config_class = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c = self.shape[0]
        classes = num_classes if self.conditional else None
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else config.hidden, config.hidden, config.kernel, c,
                       first=i == 0, last=i == config.layers - 1, num_classes=classes)
            for i in range(config.layers))
        self.build_head(config.hidden, config.head)

    def logits(self, x, labels):
        v = h = to_unit(x, self.levels)
        skips = 0
        for layer in self.layers:
            v, h, skip = layer(v, h, labels)
            skips = skips + skip
        return self.head_logits(skips)


# --------------------------------------------------------------------------- PixelRNN (Row LSTM)


@dataclass(frozen=True)
class PixelRNNConfig(ModelConfig):
    family: str = checked("pixelrnn", name())
    hidden: int = checked(32, at_least(1))  # channels of the LSTM state
    layers: int = checked(2, at_least(1))  # Row LSTM layers after the mask-A input layer
    kernel: int = checked(3, odd_at_least(1))  # width of the input-to-state and state-to-state convolutions
    first_kernel: int = checked(7, odd_at_least(1))  # kernel of the mask-A input layer
    head: int = checked(64, at_least(1))  # channels of the 1×1 output head


class RowLSTM(nn.Module):
    """Row LSTM [1]: an LSTM that runs down the image one row at a time; the input-to-state
    convolution is a masked 1×k over the current row, the state-to-state one a 1-D convolution
    over the previous row's hidden state (a triangular receptive field above each pixel)."""

    def __init__(self, hidden: int, kernel: int, data_channels: int):
        super().__init__()
        self.p = kernel // 2
        self.input_to_state = nn.Conv2d(hidden, 4 * hidden, (1, kernel), padding=(0, self.p))
        mask = torch.zeros_like(self.input_to_state.weight)  # (4h, h, 1, k)
        mask[:, :, 0, :self.p] = 1  # the pixels to the left
        gate_groups = channel_groups(hidden, data_channels).repeat(4)
        in_g = channel_groups(hidden, data_channels)
        mask[:, :, 0, self.p] = (in_g[None, :] <= gate_groups[:, None]).float()  # the pixel itself: mask B
        self.register_buffer("mask", mask, persistent=False)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, kernel, padding=self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        gates_in = F.conv2d(x, self.input_to_state.weight * self.mask, self.input_to_state.bias,
                            padding=(0, self.p))  # (B, 4h, H, W)
        state = cell = x.new_zeros(b, ch, w)
        rows = []
        for i in range(h):
            i_gate, f_gate, o_gate, update = (gates_in[:, :, i] + self.state_to_state(state)).chunk(4, dim=1)
            cell = torch.sigmoid(f_gate) * cell + torch.sigmoid(i_gate) * torch.tanh(update)
            state = torch.sigmoid(o_gate) * torch.tanh(cell)
            rows.append(state)
        return torch.stack(rows, dim=2)  # (B, h, H, W)


@MODELS.register("pixelrnn")
class PixelRNN(AutoregressiveModel):
    config_class = PixelRNNConfig

    def __init__(self, config: PixelRNNConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c = self.shape[0]
        self.conv_in = MaskedConv2d(c, config.hidden, config.first_kernel, "A", c)
        self.lstms = nn.ModuleList(RowLSTM(config.hidden, config.kernel, c) for _ in range(config.layers))
        self.build_head(config.hidden, config.head)

    def logits(self, x, labels):
        h = self.conv_in(to_unit(x, self.levels))
        for lstm in self.lstms:
            h = h + lstm(h)
        return self.head_logits(h)


def _gate(pre: torch.Tensor) -> torch.Tensor:
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _add(h: torch.Tensor, bias: torch.Tensor | None, spatial: bool = False) -> torch.Tensor:
    if bias is None:
        return h
    return h + (bias[:, :, None, None] if spatial else bias)
