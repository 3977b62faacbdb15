"""A tiny config for every registered model family (the contract tests require one each), and the data
kind each is tested on."""

from genlib.data.kinds import IMAGES, PAIRED, UNPAIRED
from genlib.models import MODELS

TINY = {
    "vae": {"latent_dim": 4, "hidden": 8},
    "pixelcnn": {"hidden": 16, "layers": 2, "head": 16},
    "gated-pixelcnn": {"hidden": 16, "layers": 2, "head": 16, "kernel": 3},
    "categorical": {},
    "mixture": {"components": 5},
    "gan": {"hidden": 16, "latent_dim": 16},
    "beta-vae": {"latent_dim": 4, "hidden": 8},
    "pixelrnn": {"hidden": 8, "layers": 1, "head": 16},
    "aae": {"latent_dim": 4, "hidden": 8, "disc_hidden": 16},
    "pixelvae": {"latent_dim": 4, "hidden": 8, "layers": 2, "head": 16, "kl_warmup": 10},
    # 4×4 for one batch of 64, then 8×8 fades in over two batches
    "progan": {"latent_dim": 16, "channel_base": 128, "max_channels": 32, "fade_images": 128, "stable_images": 64},
    "stylegan": {"latent_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "max_channels": 32,
                 "gp_weight": 1.0, "penalty_every": 4},
    "biggan": {"latent_dim": 8, "embed_dim": 8, "hidden": 8, "attention_resolution": 0},
    # translators: at 8×8 a PatchGAN of one stride-2 layer leaves 2×2 patches
    "pix2pix": {"generator_channels": 8, "discriminator_channels": 8, "d_layers": 1},
    "cyclegan": {"generator_channels": 4, "res_blocks": 1, "discriminator_channels": 8, "d_layers": 1, "pool_size": 8},
}
# Variants that must honour the contract too (label-conditional models need labels in batches).
VARIANTS = {
    "vae-conditional": ("vae", {**TINY["vae"], "conditional": True}),
    "pixelcnn-conditional": ("pixelcnn", {**TINY["pixelcnn"], "conditional": True}),
    "gated-pixelcnn-conditional": ("gated-pixelcnn", {**TINY["gated-pixelcnn"], "conditional": True}),
    "pixelrnn-diagonal": ("pixelrnn", {**TINY["pixelrnn"], "layer": "diagonal-bilstm"}),
    "aae-mixture-conditional": ("aae", {**TINY["aae"], "prior": "mixture", "conditional": True}),
    "gan-wgan-gp-conditional": ("gan", {**TINY["gan"], "loss": "wgan-gp", "n_critic": 2, "conditional": True}),
    "gan-dragan": ("gan", {**TINY["gan"], "loss": "lsgan", "penalty": "dragan"}),
}
ALL = {**{name: (name, cfg) for name, cfg in TINY.items()}, **VARIANTS}

# The source each data kind is tested on: the bundled digits, their outlines paired with them, plain and bold
# digits from disjoint halves (at 8×8 unless a test sizes them).
KIND_SOURCES = {IMAGES: "digits", PAIRED: "digits-edges", UNPAIRED: "digits-bold"}


def kind_of(variant: str) -> str:
    """The data kind a variant is tested on: images, else unpaired (the harder case) where the family takes it."""
    kinds = MODELS.get(ALL[variant][0]).data_kinds
    return IMAGES if IMAGES in kinds else UNPAIRED if UNPAIRED in kinds else PAIRED


IMAGE_VARIANTS = sorted(v for v in ALL if kind_of(v) == IMAGES)
TWO_DOMAIN_VARIANTS = sorted(v for v in ALL if kind_of(v) != IMAGES)
