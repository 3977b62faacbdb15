"""genlib: train, evaluate and audit generative image models.

Data flow: ``genlib.data`` prepares immutable dataset versions, ``genlib.train`` runs a family
on Ray Train, ``genlib.evaluate`` scores models (pure code over arrays), ``genlib.stages`` runs
each of these as an MLflow run and records it through ``genlib.tracking`` (the only module that
talks to MLflow, and the schema of what is recorded), and ``flows/`` chains the stages with
Prefect. The README's Layout section gives the layer order.
"""

__version__ = "0.1.0"
