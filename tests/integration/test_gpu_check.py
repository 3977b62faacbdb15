"""bench/gpu_check.py's dry run: on a machine without CUDA it runs every section's code path on the CPU
at tiny sizes, so the script a GPU loan depends on cannot rot between loans."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from genlib.models import MODELS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs its full GPU check, not a dry run")
def test_gpu_check_dry_run_runs_every_section_on_the_cpu(ray_local, digits_domain_network, tmp_path, capsys,
                                                         monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up there
    spec.loader.exec_module(gpu_check)

    status = gpu_check.main(["--out", str(tmp_path / "out")])  # joins the session's Ray instance
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    sections = report["sections"]
    assert status == 0, {name: s.get("error") for name, s in sections.items() if s["status"] != "ok"}
    assert "dry run of the same code paths on the CPU" in out and "7 of 7 sections ok" in out
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert list(sections) == ["machine", "loop", "ray", "knn", "inception", "sampling", "evaluate"]

    loop = sections["loop"]["rows"]
    assert {(r["family"], r["precision"]) for r in loop} == {(f, p) for f in MODELS.names() for p in ("fp32", "bf16")}
    assert all(r["images_per_second"] > 0 and r["nonfinite_step"] is None for r in loop)
    assert all(r["within_tolerance"] for r in loop if r["precision"] == "fp32")
    (ray_row,) = sections["ray"]["rows"]
    assert ray_row["family"] == "vae" and ray_row["epochs"] == 1 and ray_row["images_per_second"] > 0
    assert sections["knn"]["identical_indices"] is True
    assert sections["inception"]["feature_dims"] == 2048
    through = sections["inception"]["evaluation_workers"]
    assert through["2 Ray workers_images_per_second"] > 0 and through["largest_relative_difference"] < 1e-5
    sampled = {r["family"]: r for r in sections["sampling"]["rows"]}
    assert {"pixelcnn", "gated-pixelcnn", "pixelrnn"} <= set(sampled)
    assert all(row["identical"] is True for row in sampled.values()), sampled  # every cached sampler = its naive one
    assert sections["evaluate"]["eval_device"] == "cpu" and "fid_domain" in sections["evaluate"]["metrics"]
