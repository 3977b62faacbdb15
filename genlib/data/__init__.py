"""Dataset sources, versioned preparation, and torch datasets over prepared versions."""
