"""genlib: train, evaluate and audit generative image models.

Data flow: ``genlib.data`` prepares immutable dataset versions, ``genlib.train`` runs a family
on Ray Train, ``genlib.evaluate`` scores checkpoints, ``genlib.tracking`` records it all in
MLflow, and ``flows/`` chains the stages with Prefect.
"""

__version__ = "0.1.0"
