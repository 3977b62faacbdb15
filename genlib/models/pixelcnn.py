"""Autoregressive image models with exact likelihood: PixelCNN [1], Gated PixelCNN [2] and the
Row LSTM and Diagonal BiLSTM of PixelRNN [1].

Each sub-pixel is a softmax over the dataset's ``levels``, conditioned on every sub-pixel before
it in raster order (rows top to bottom, pixels left to right, channels R → G → B), so
``log_prob`` is the exact discrete log-likelihood and bits/dim compare directly with the VAE's
bounds. Sampling draws one sub-pixel at a time. Every family here also has a cached sampler in
the spirit of [3]: the plain PixelCNN keeps every layer's activations and computes each layer at
the one position that just became computable; the Gated PixelCNN computes its vertical stacks
once per row and its horizontal stacks once per position; the PixelRNN layers keep their
recurrent states and advance them one position (the Diagonal BiLSTM's right-to-left direction
one row) at a time. The naive and cached samplers consume the same random numbers in the same
order and compute the same logits up to float rounding (about 1e-7 in fp32: with TF32 convolutions
on a GPU a near-tie could go the other way), so they draw the same images; ``complete`` uses the
cached one too.

[1] van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016.
[2] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016.
[3] Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", ICLR
    workshop 2017.

NOTE: [1] uses 7×7 mask-A then 3×3 mask-B residual blocks with 1×1 bottlenecks; here each
residual block is one 3×3 mask-B conv, which is enough for 8×8–32×32 images.
NOTE: class conditioning adds a learned per-class bias to every layer (the h = W·y term of [2]).
NOTE: the PixelRNN layers have residual connections between layers (a plain sum, without the
1×1 convolutions of [1]); the Row LSTM's input-to-state convolution is a masked 1×k, as in [1];
the recurrences run in Python, one row (Row LSTM) or one diagonal (Diagonal BiLSTM) at a time.
The Diagonal BiLSTM's departures from [1] are noted on its classes below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import ANY, ConfigValueError, ModelConfig, at_least, checked, name, odd_at_least, one_of
from genlib.models.base import COMPLETE, LOG_PROB, MODELS, SAMPLE, Batch, GenerativeModel, TrainingContext, to_unit
from genlib.models.layers import (
    MaskedConv2d,
    bits_per_dim,
    categorical_log_likelihood,
    channel_groups,
    noise_device,
)


class PixelHead:
    """The 1×1 output head shared by every model here (and PixelVAE's decoder): features → C·L logits,
    mask B. Mixed into a GenerativeModel (needs ``shape`` and ``levels``)."""

    def build_head(self, hidden: int, width: int) -> None:
        c = self.shape[0]
        self.head1 = MaskedConv2d(hidden, width, 1, "B", c)
        self.head2 = MaskedConv2d(width, c * self.levels, 1, "B", c)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, hidden, H, W) features → logits (B, C, L, H, W)."""
        out = self.head2(F.relu(self.head1(F.relu(features))))
        return out.view(len(out), self.shape[0], self.levels, *out.shape[2:])


class AutoregressiveModel(PixelHead, GenerativeModel):
    """Training, exact likelihood, sampling and completion shared by the pixel-by-pixel models.

    Subclasses implement ``logits(x, labels) -> (B, C, L, H, W)``; a subclass with a cached
    sampler also implements ``start_cache`` and ``position_logits``.
    """

    capabilities = frozenset({SAMPLE, LOG_PROB, COMPLETE})
    log_prob_exact = True

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per image in nats, (B,)."""
        return -categorical_log_likelihood(self.logits(x, self.class_labels(labels, len(x))), x)

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
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
        use_cache = hasattr(self, "start_cache") if cached is None else cached
        if use_cache and not hasattr(self, "start_cache"):
            raise ValueError(f"{type(self).__name__} has no cached sampler; use cached=False")
        if use_cache:
            cache = self.start_cache(len(x), labels)
            return raster_sample(x, observed, self.levels, generator,
                                 lambda i, j: self.position_logits(cache, x, i, j))
        return raster_sample(x, observed, self.levels, generator, lambda i, j: self.logits(x, labels)[..., i, j])


def raster_sample(x: torch.Tensor, observed: torch.Tensor | None, levels: int, generator: torch.Generator | None,
                  position_logits, greedy: bool = False) -> torch.Tensor:
    """Fill ``x`` (B, C, H, W) uint8 in place, one sub-pixel at a time in raster order (rows, pixels,
    channels R → G → B), from ``position_logits(i, j) -> (B, C, L)``, the logits at (i, j) given
    ``x`` as it is when called. Pixels where ``observed`` (B, H, W) is True keep their values.
    Every sampler draws the same Gumbel noise in the same order, so the same generator gives the
    same images whichever way the (equal up to rounding) logits are computed; ``greedy`` takes the
    most likely level."""
    b, c_n, h_n, w_n = x.shape
    for i in range(h_n):
        for j in range(w_n):
            for c in range(c_n):
                logits = position_logits(i, j)[:, c]  # (B, L)
                if not greedy:
                    u = torch.rand(b, levels, generator=generator,
                                   device=noise_device(generator)).clamp_(1e-12, 1 - 1e-7)
                    logits = logits + (-(-u.log()).log()).to(logits.device)
                drawn = logits.argmax(-1).to(torch.uint8)
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

    def biases(self, labels, cond) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The (vertical, horizontal) biases: the class embedding (B, 2h, 1, 1) and a conditioning map
        (B, 4h, H, W) such as PixelVAE's latent, added before the gates; 0 where there are none."""
        bv = bh = 0.0
        if self.class_bias is not None:
            bv, bh = self.class_bias(labels)[:, :, None, None].chunk(2, dim=1)
        if cond is not None:
            cv, ch = cond.chunk(2, dim=1)
            bv, bh = bv + cv, bh + ch
        return bv, bh

    def forward(self, v, h, labels, cond=None):
        v_pre = self.v_conv(F.pad(v, (self.p, self.p, self.p, 0)))  # rows i-p..i: (B, 2h, H, W)
        h_pre = F.conv2d(F.pad(h, (self.p, 0, 0, 0)), self.h_conv.weight * self.h_mask, self.h_conv.bias)
        # The vertical stack reaches the horizontal one shifted down a row, so it holds rows < i only.
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])
        bv, bh = self.biases(labels, cond)
        v_out, h_gated = _gate(v_pre + bv), _gate(h_pre + bh)
        h_out = h if self.residual is None else self.residual(h_gated) + (0 if self.first else h)
        return v_out, h_out, self.skip(h_gated)


def gated_skips(layers: nn.ModuleList, u: torch.Tensor, labels, conds=None) -> torch.Tensor:
    """The summed skip outputs (B, hidden, H, W) of a stack of GatedLayers on images ``u`` in [-1, 1];
    ``conds``: one conditioning map per layer, or None."""
    v = h = u
    skips = 0
    for n, layer in enumerate(layers):
        v, h, skip = layer(v, h, labels, None if conds is None else conds[n])
        skips = skips + skip
    return skips


class GatedCache:
    """Incremental evaluation of a stack of GatedLayers for raster sampling.

    At the start of each row i the vertical stacks of row i-1 are computed for every layer (the
    row above is complete by then); at each position only the horizontal stacks run, on the
    1×(p+1) window of the row so far. Both need each layer's inputs, kept as maps."""

    def __init__(self, layers: nn.ModuleList, n: int, shape, device, labels, conds=None):
        c, h, w = shape
        self.layers, self.shape = layers, shape
        self.p = layers[0].p
        chans = [c] + [layer.hidden for layer in layers]
        # Vertical inputs with p zero rows on top; horizontal inputs with p zero columns on the left.
        self.v = [torch.zeros(n, ch, h + self.p, w, device=device) for ch in chans]
        self.h = [torch.zeros(n, ch, h, w + self.p, device=device) for ch in chans]
        self.biases = [layer.biases(labels, None if conds is None else conds[k]) for k, layer in enumerate(layers)]
        self.v_to_h: list[torch.Tensor] = []  # per layer: the vertical stack's contribution to row i, (B, 2h, W)
        self.row = -1

    def _start_row(self, u: torch.Tensor, i: int) -> None:
        p, (_, _, w) = self.p, self.shape
        self.v_to_h = []
        if i > 0:
            self.v[0][:, :, i - 1 + p] = u[:, :, i - 1]
        for k, layer in enumerate(self.layers):
            if i == 0:  # the zero row above the image
                pre = torch.zeros(len(u), 2 * layer.hidden, 1, w, device=u.device)
            else:
                rows = self.v[k][:, :, i - 1:i + p]  # rows i-1-p .. i-1 of this layer's input
                pre = layer.v_conv(F.pad(rows, (p, p, 0, 0)))  # (B, 2h, 1, W)
                bv = _row(self.biases[k][0], i - 1)
                self.v[k + 1][:, :, i - 1 + p] = _gate(pre[:, :, 0] + bv)
            self.v_to_h.append(layer.v_to_h(pre)[:, :, 0])
        self.row = i

    def skips_at(self, u: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The summed skip outputs (B, hidden) at (i, j), given ``u`` (B, C, H, W) as drawn so far."""
        if self.row != i:
            self._start_row(u, i)
        p = self.p
        self.h[0][:, :, i, p:] = u[:, :, i]
        skips = 0
        for k, layer in enumerate(self.layers):
            window = self.h[k][:, :, i, j:j + p + 1]  # (B, in, p+1): pixels j-p .. j
            weight = (layer.h_conv.weight * layer.h_mask)[:, :, 0]
            pre = torch.einsum("bcw,ocw->bo", window, weight) + layer.h_conv.bias + self.v_to_h[k][:, :, j]
            gated = _gate(pre + _at(self.biases[k][1], i, j))
            if layer.residual is not None:  # the last layer's horizontal output feeds nothing
                h_in = self.h[k][:, :, i, j + p]
                self.h[k + 1][:, :, i, j + p] = layer.residual.at(gated[:, :, None, None], 0, 0) + \
                    (0 if layer.first else h_in)
            skips = skips + layer.skip.at(gated[:, :, None, None], 0, 0)
        return skips


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
        return self.head_logits(gated_skips(self.layers, to_unit(x, self.levels), labels))

    def start_cache(self, n: int, labels) -> GatedCache:
        return GatedCache(self.layers, n, self.shape, self.device, labels)

    def position_logits(self, cache: GatedCache, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        skips = cache.skips_at(to_unit(x, self.levels), i, j)
        return self.head_logits(skips[:, :, None, None])[..., 0, 0]  # (B, C, L)


# --------------------------------------------------------------------------- PixelRNN

LAYERS = ("row", "diagonal-bilstm")


@dataclass(frozen=True)
class PixelRNNConfig(ModelConfig):
    family: str = checked("pixelrnn", name())
    layer: str = checked("row", one_of(*LAYERS))  # row (Row LSTM) or diagonal-bilstm (Diagonal BiLSTM)
    hidden: int = checked(32, at_least(1))  # channels of the LSTM state
    layers: int = checked(2, at_least(1))  # LSTM layers after the mask-A input layer
    kernel: int = checked(3, odd_at_least(1))  # Row LSTM only: width of its input-to-state and state-to-state convolutions
    first_kernel: int = checked(7, odd_at_least(1))  # kernel of the mask-A input layer
    head: int = checked(64, at_least(1))  # channels of the 1×1 output head

    def check(self) -> None:
        # A 1×1 mask-A input sees nothing of the current row, and the diagonal layers' 1×1 input-to-state
        # adds nothing to it: the pixels to the left would never be seen.
        if self.layer == "diagonal-bilstm" and self.first_kernel < 3:
            raise ConfigValueError("first_kernel", self.first_kernel,
                                   "≥ 3 with layer: diagonal-bilstm (a 1×1 mask-A input sees no pixel of the current row)")


def _lstm_update(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from pre-activations (…, 4h, …) laid out i, f, o, g: (state, cell)."""
    i_gate, f_gate, o_gate, update = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f_gate) * cell + torch.sigmoid(i_gate) * torch.tanh(update)
    return torch.sigmoid(o_gate) * torch.tanh(cell), cell


class RowLSTM(nn.Module):
    """Row LSTM [1]: an LSTM that runs down the image one row at a time; the input-to-state
    convolution is a masked 1×k over the current row, the state-to-state one a 1-D convolution
    over the previous row's hidden state (a triangular receptive field above each pixel)."""

    def __init__(self, hidden: int, kernel: int, data_channels: int):
        super().__init__()
        self.p, self.hidden = kernel // 2, hidden
        self.input_to_state = nn.Conv2d(hidden, 4 * hidden, (1, kernel), padding=(0, self.p))
        mask = torch.zeros_like(self.input_to_state.weight)  # (4h, h, 1, k)
        mask[:, :, 0, :self.p] = 1  # the pixels to the left
        gate_groups = channel_groups(hidden, data_channels).repeat(4)
        in_g = channel_groups(hidden, data_channels)
        mask[:, :, 0, self.p] = (in_g[None, :] <= gate_groups[:, None]).float()  # the pixel itself: mask B
        self.register_buffer("mask", mask, persistent=False)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, kernel, padding=self.p)

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """The states (B, h, H, W) of input features ``x``; ``u``, the image, is the Diagonal BiLSTM's
        and unused here (the two layers share one interface)."""
        b, ch, h, w = x.shape
        gates_in = F.conv2d(x, self.input_to_state.weight * self.mask, self.input_to_state.bias,
                            padding=(0, self.p))  # (B, 4h, H, W)
        state = cell = x.new_zeros(b, ch, w)
        rows = []
        for i in range(h):
            state, cell = _lstm_update(gates_in[:, :, i] + self.state_to_state(state), cell)
            rows.append(state)
        return torch.stack(rows, dim=2)  # (B, h, H, W)

    # -- cached sampling: the state and cell of the row above, and of the row so far ---------

    def start(self, n: int, w: int, device) -> dict:
        zeros = lambda: torch.zeros(n, self.hidden, w, device=device)  # noqa: E731
        return {"state": zeros(), "cell": zeros(), "above": zeros(), "above_cell": zeros(), "s2s": None,
                "inputs": torch.zeros(n, self.hidden, w + 2 * self.p, device=device)}  # row i's inputs, padded p

    def start_row(self, cache: dict, i: int, u_above: torch.Tensor | None) -> None:
        if i > 0:
            cache["above"], cache["above_cell"] = cache["state"].clone(), cache["cell"].clone()
        cache["s2s"] = self.state_to_state(cache["above"])  # (B, 4h, W)

    def at(self, cache: dict, inputs: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The state (B, h) at (i, j) from this layer's input there (B, h)."""
        cache["inputs"][:, :, j + self.p] = inputs
        window = cache["inputs"][:, :, j:j + 2 * self.p + 1]
        weight = (self.input_to_state.weight * self.mask)[:, :, 0]
        gates = torch.einsum("bcw,ocw->bo", window, weight) + self.input_to_state.bias + cache["s2s"][:, :, j]
        state, cell = _lstm_update(gates, cache["above_cell"][:, :, j])
        cache["state"][:, :, j], cache["cell"][:, :, j] = state, cell
        return state


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM [1]: the map is skewed (row i shifted right by i) so that
    each column of the skewed map is a diagonal of the image, and an LSTM runs over those columns
    left to right. Input-to-state is a masked 1×1 convolution; state-to-state a 2×1 convolution over
    the previous column, so the state at (i, j) combines the states at (i, j-1) and (i-1, j): its
    receptive field is the whole upper-left quadrant.

    NOTE: positions of the skewed map outside the image have their state and cell reset to zero, so
    every row starts from a zero state, as it does in the cached sampler; [1] leaves them running.

    ``extra``: input channels beyond the state's, seen unmasked (the right-to-left direction's image)."""

    def __init__(self, hidden: int, data_channels: int, masked: bool = True, extra: int = 0):
        super().__init__()
        self.hidden = hidden
        if masked:
            self.input_to_state = MaskedConv2d(hidden + extra, 4 * hidden, 1, "B", data_channels,
                                               out_groups=channel_groups(hidden, data_channels).repeat(4))
        else:
            self.input_to_state = nn.Conv2d(hidden + extra, 4 * hidden, 1)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 2)  # over (row i-1, row i) of a column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ch = self.hidden
        gates_in = self.input_to_state(x)  # (B, 4h, H, W)
        cols = w + h - 1
        shift = torch.arange(h, device=x.device)[:, None]
        skewed = gates_in.new_zeros(b, 4 * ch, h, cols)  # gates_in's dtype: bfloat16 under autocast
        skewed.scatter_(3, (shift + torch.arange(w, device=x.device)).expand(b, 4 * ch, h, w), gates_in)
        k = torch.arange(cols, device=x.device)
        inside = ((k >= shift) & (k < shift + w)).to(gates_in.dtype)  # (H, cols)
        state = cell = gates_in.new_zeros(b, ch, h)
        states = []
        for col in range(cols):
            state, cell = _lstm_update(skewed[:, :, :, col] + self.state_to_state(F.pad(state, (1, 0))), cell)
            state, cell = state * inside[:, col], cell * inside[:, col]
            states.append(state)
        out = torch.stack(states, dim=3)  # (B, h, H, cols)
        return out.gather(3, (shift + torch.arange(w, device=x.device)).expand(b, ch, h, w))  # unskewed

    def step(self, inputs: torch.Tensor, above: torch.Tensor, before: torch.Tensor,
             before_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(state, cell) at one position from its input (B, h) and the states of the positions above
        and before it along the row (B, h) each, and the cell before it."""
        weight = self.input_to_state.weight
        if isinstance(self.input_to_state, MaskedConv2d):
            weight = weight * self.input_to_state.mask
        gates = inputs @ weight[:, :, 0, 0].T + self.input_to_state.bias
        s2s = self.state_to_state.weight
        gates = gates + above @ s2s[:, :, 0].T + before @ s2s[:, :, 1].T + self.state_to_state.bias
        return _lstm_update(gates, before_cell)


class DiagonalBiLSTM(nn.Module):
    """Diagonal BiLSTM [1]: one DiagonalLSTM left to right, one on the mirrored map (right to left)
    whose output is shifted down a row before the two are added, so that no pixel sees a later one
    of its own row: every pixel sees the whole context above it and to its left.

    NOTE: the right-to-left direction also reads the image ``u`` itself, unmasked (its output only
    reaches the row below, where every pixel of the row is known). Without it, the last pixels of
    a row reach the left part of the next row only through the mask-A input convolution (the
    pixel at (i, j) is in no feature of row i at or before column j), a blind spot of [1]."""

    def __init__(self, hidden: int, data_channels: int):
        super().__init__()
        self.hidden = hidden
        self.left = DiagonalLSTM(hidden, data_channels)
        self.right = DiagonalLSTM(hidden, data_channels, masked=False, extra=data_channels)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        right = self.right(torch.cat([x, u], dim=1).flip(3)).flip(3)
        return self.left(x) + F.pad(right, (0, 0, 1, 0))[:, :, :-1]

    # -- cached sampling: the left direction runs one position at a time; the right one sweeps
    # each row once it is complete, right to left, and reaches the row below ------------------

    def start(self, n: int, w: int, device) -> dict:
        zeros = lambda: torch.zeros(n, self.hidden, w, device=device)  # noqa: E731
        return {"state": zeros(), "cell": zeros(), "above": zeros(), "right": zeros(), "right_above": zeros(),
                "inputs": zeros()}

    def start_row(self, cache: dict, i: int, u_above: torch.Tensor | None) -> None:
        """Before row i: the right-to-left sweep of row i-1, whose image row is ``u_above`` (B, C, W)."""
        if i == 0:
            return
        cache["above"] = cache["state"].clone()
        inputs = torch.cat([cache["inputs"], u_above], dim=1)
        w = cache["state"].shape[2]
        state = cell = torch.zeros_like(cache["state"][:, :, 0])
        right = torch.zeros_like(cache["right"])
        for j in reversed(range(w)):  # row i-1, right to left, from row i-2's right states
            state, cell = self.right.step(inputs[:, :, j], cache["right_above"][:, :, j], state, cell)
            right[:, :, j] = state
        cache["right_above"] = cache["right"] = right
        cache["cell"] = torch.zeros_like(cache["cell"])

    def at(self, cache: dict, inputs: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The output (B, h) at (i, j) from this layer's input there (B, h)."""
        cache["inputs"][:, :, j] = inputs
        zero = torch.zeros_like(inputs)
        before, before_cell = (cache["state"][:, :, j - 1], cache["cell"][:, :, j - 1]) if j > 0 else (zero, zero)
        state, cell = self.left.step(inputs, cache["above"][:, :, j], before, before_cell)
        cache["state"][:, :, j], cache["cell"][:, :, j] = state, cell
        return state + (cache["right"][:, :, j] if i > 0 else zero)


@MODELS.register("pixelrnn")
class PixelRNN(AutoregressiveModel):
    config_class = PixelRNNConfig

    def __init__(self, config: PixelRNNConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c = self.shape[0]
        self.conv_in = MaskedConv2d(c, config.hidden, config.first_kernel, "A", c)
        if config.layer == "row":
            self.lstms = nn.ModuleList(RowLSTM(config.hidden, config.kernel, c) for _ in range(config.layers))
        else:
            self.lstms = nn.ModuleList(DiagonalBiLSTM(config.hidden, c) for _ in range(config.layers))
        self.build_head(config.hidden, config.head)

    def logits(self, x, labels):
        u = to_unit(x, self.levels)
        h = self.conv_in(u)
        for lstm in self.lstms:
            h = h + lstm(h, u)
        return self.head_logits(h)

    # -- cached sampler: recurrent states instead of re-running the image ----------------------

    def start_cache(self, n: int, labels) -> dict:
        c, h, w = self.shape
        p_in = self.config.first_kernel // 2
        return {"x": torch.zeros(n, c, h + 2 * p_in, w + 2 * p_in, device=self.device), "row": -1,
                "lstms": [lstm.start(n, w, self.device) for lstm in self.lstms]}

    def position_logits(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Logits (B, C, L) at (i, j): every layer's recurrence advanced by this one position."""
        p_in = self.config.first_kernel // 2
        cache["x"][:, :, p_in:p_in + x.shape[2], p_in:p_in + x.shape[3]] = to_unit(x, self.levels)
        if cache["row"] != i:
            u_above = cache["x"][:, :, p_in + i - 1, p_in:p_in + x.shape[3]] if i > 0 else None
            for lstm, state in zip(self.lstms, cache["lstms"]):
                lstm.start_row(state, i, u_above)
            cache["row"] = i
        h = self.conv_in.at(cache["x"], i, j)
        for lstm, state in zip(self.lstms, cache["lstms"]):
            h = h + lstm.at(state, h, i, j)
        return self.head_logits(h[:, :, None, None])[..., 0, 0]


def _gate(pre: torch.Tensor) -> torch.Tensor:
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _row(bias: torch.Tensor | float, i: int) -> torch.Tensor | float:
    """Row i (B, ch, W) of a bias that is 0, per image (B, ch, 1, 1) or a map (B, ch, H, W)."""
    return bias if isinstance(bias, float) else bias[:, :, min(i, bias.shape[2] - 1)]


def _at(bias: torch.Tensor | float, i: int, j: int) -> torch.Tensor | float:
    """The bias at (i, j), (B, ch), for a bias that is 0, per image (B, ch, 1, 1) or a map (B, ch, H, W)."""
    return bias if isinstance(bias, float) else bias[:, :, min(i, bias.shape[2] - 1), min(j, bias.shape[3] - 1)]


def _add(h: torch.Tensor, bias: torch.Tensor | None, spatial: bool = False) -> torch.Tensor:
    if bias is None:
        return h
    return h + (bias[:, :, None, None] if spatial else bias)
