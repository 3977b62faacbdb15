"""Family-agnostic training on Ray Train: ``loop`` runs in each worker, ``launch`` in the driver."""
