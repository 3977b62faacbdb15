"""Run by test_cluster.py in its own process: a simulated two-node Ray cluster
(``ray.cluster_utils.Cluster``, one CPU per node) trains with one worker on each node, reweighting
its training set as it trains, and loses a worker."""

import json
import os
import sys

import ray
from ray.cluster_utils import Cluster

from genlib.data.prepare import prepare
from genlib.presets import load_config
from genlib.stages.train import train


def main(out: str, storage: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    # The VAE reweights its own training set before epoch 3 (train.reweight_every=2); the worker dies
    # after epoch 3, so epoch 4 must draw from the weights epoch 3's checkpoint kept.
    overrides = ["train.batch_size=128", "model.hidden=8", "eval.n_samples=16", "train.epochs=4",
                 "train.num_workers=2", "train.max_failures=1", "train.select_by=last", "train.reweight_every=2"]
    cfg = load_config("digits-quick", overrides)
    dataset = prepare(cfg.data).path
    report = {}
    try:
        train(cfg, dataset)
    except ValueError as err:  # two nodes and no shared storage named: refused before training
        report["refused"] = str(err)
    os.environ["GENLIB_CHAOS_KILL_AT_EPOCH"] = "3"  # one worker dies on the first attempt
    cfg = load_config("digits-quick", [*overrides, f"train.storage_path={storage}"])
    result = train(cfg, dataset)
    placement = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    report.update(run_id=result.run_id, epoch=result.epoch, nodes=len(placement))
    with open(out, "w") as f:
        json.dump(report, f)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
