"""Data kinds: what one item of a dataset version is, and what a family trains on.

* ``images``: one image, optionally labelled (every family but the image-to-image ones);
* ``paired``: an aligned pair — an image of domain A and the image of domain B it corresponds to
  (edges → the photo, a blurred digit → the digit): pix2pix;
* ``unpaired``: two image sets, domain A and domain B, of any sizes and with no correspondence
  (horses, zebras): CycleGAN.

A two-domain version holds each domain as a complete ``images`` version of its own (``a/``, ``b/``),
so everything that scores images against a dataset (reference features, FID, memorization) works
on a domain as it does on any version.
"""

from __future__ import annotations

IMAGES, PAIRED, UNPAIRED = "images", "paired", "unpaired"
KINDS = (IMAGES, PAIRED, UNPAIRED)
DOMAINS = ("a", "b")
# A translation direction: (the domain translated from, the domain translated to).
DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}


def check_direction(direction: str) -> tuple[str, str]:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown translation direction {direction!r}; known: {sorted(DIRECTIONS)}")
    return DIRECTIONS[direction]
