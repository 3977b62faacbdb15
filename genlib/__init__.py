"""genlib: train, evaluate and audit generative image models.

Data flow: ``genlib.data`` prepares immutable dataset versions, ``genlib.train`` runs a family
on Ray Train, ``genlib.evaluate`` scores models (pure code over arrays), ``genlib.stages`` runs
each of these as an MLflow run and records it through ``genlib.tracking`` (the only module that
talks to MLflow, and the schema of what is recorded), and ``flows/`` chains the stages with
Prefect. The README's Layout section gives the layer order.
"""

import os

__version__ = "0.1.0"

# genlib runs offline on people's data: none of the libraries it drives phones home unless the
# user says so. Set on import, before any of them is imported (MLflow starts its telemetry client
# when it is first imported), and inherited by the MLflow servers, Ray workers and Prefect
# servers genlib starts; a user's own setting of any of these wins.
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow's usage data, client and tracking server
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray's usage stats
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # Prefect's server analytics
}
for _key, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_key, _value)
