"""A tiny config for every registered model family (the contract tests require one each)."""

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
