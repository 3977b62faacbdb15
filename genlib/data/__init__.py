"""Dataset sources, versioned preparation, and torch datasets over prepared versions."""

# Importing the package registers every source: the one-domain ones and the two-domain ones built on them.
from genlib.data import pairs, sources  # noqa: F401
