"""Stages: the only code that opens, tags, ends or fails an MLflow run.

Each stage calls the pure code below it (``genlib.train``, ``genlib.evaluate``) and records what
it returns through ``genlib.tracking``, whose schema names every tag, artifact and headline
metric. Flows call stages; the CLI calls flows or stages.

* ``train``: a training run (Ray Train), resumed after a crash in the same MLflow run;
* ``evaluate``: an evaluation run with its HTML report;
* ``reweight``: a DB-VAE reweighting run with its weights file;
* ``pipeline``: a pipeline's parent run, and its summary (leaderboard, registry, report).
"""
