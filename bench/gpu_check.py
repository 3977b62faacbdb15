"""One prepared GPU check: every CUDA path genlib has, run and measured in one call.

Written for the rare, brief loan of a GPU machine, so that one command covers everything:

* ``machine``: GPU name, memory and compute capability, driver, CUDA, cuDNN, torch, Ray, genlib commit.
* ``loop``: every registered family trains ``--steps`` optimizer steps on upsampled real digits at 28×28
  and 32×32 (the translators: each digit's outline → the digit), through the training loop's own epoch function (``genlib.train.loop._train_epoch``: the
  batch transfer, bf16 autocast, the steps), in fp32 and bf16: images/s after warm-up and peak GPU memory.
  For fp32 the same seed, weights and batches also train on the CPU, and the validation loss after
  ``ref_steps`` steps is compared (relative difference; cuDNN's TF32 convolutions and, in the VAE
  and GAN, noise drawn from the device's own random generator make it differ from zero: the tolerance
  is 5 %, or three times the difference two CPU runs with other noise seeds show, if larger).
* ``ray``: families through the real Ray Train job (``genlib.train.launch.fit``: worker placement with
  ``train.gpus_per_worker=1``, the NCCL process group, device placement, checkpoints), fp32, and one
  family in bf16: the metrics the worker reported and the wall time. (The dry run: one VAE job, fp32.)
* ``knn``: the exact k-NN engine on the GPU against its CPU result (identical neighbours), then the time
  of a 10k × 1M × 256 search on the GPU.
* ``inception``: the FID Inception-v3 network (random weights: speed does not depend on them) at batch
  200 on 299×299 inputs: images/s; then 20k 28×28 images through the evaluation's feature extraction
  (``genlib.evaluate.workers``), in this process and on a Ray Data pool of 2 actors sharing the GPU.
* ``sampling``: 64 samples from every autoregressive family, with the cache where the family has one
  and without: seconds each, and whether the two are identical.
* ``evaluate``: the evaluate stage end to end (``eval.device=auto``: sampling, features and neighbour
  search on the GPU) on the checkpoint the ``ray`` section trained, into a local MLflow store.

Without CUDA it runs the same code paths on the CPU at tiny sizes and says so (``"dry_run": true``);
``tests/integration/test_gpu_check.py`` runs that dry run in the suite, so the script cannot rot.
Everything printed also goes to ``OUT/gpu_check.json`` (``gpu_check-<sections>.json`` for a subset),
rewritten after each section (a run cut short keeps what it measured). A section that fails is recorded with its traceback and the next one runs; the
exit status is 1 if any failed.

    python bench/gpu_check.py --out bench/results                 # every section: gpu_check.json
    python bench/gpu_check.py --out bench/results --sections machine loop ray          # or in two calls,
    python bench/gpu_check.py --out bench/results --sections knn inception sampling evaluate   # one file each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

SECTIONS = ("machine", "loop", "ray", "knn", "inception", "sampling", "evaluate")
# The loop section builds each family at its defaults (the papers' widths); in the dry run, the families whose
# defaults take seconds per step on the CPU run narrower.
DRY_SIZES = {"progan": ["model.latent_dim=32", "model.channel_base=128", "model.max_channels=32"],
             "stylegan": ["model.latent_dim=32", "model.w_dim=32", "model.mapping_layers=2", "model.channel_base=128",
                          "model.max_channels=32"],
             "biggan": ["model.latent_dim=16", "model.embed_dim=16", "model.hidden=16", "model.attention_resolution=0"],
             "pix2pix": ["model.generator_channels=8", "model.discriminator_channels=8", "model.d_layers=1"],
             "cyclegan": ["model.generator_channels=8", "model.res_blocks=2", "model.discriminator_channels=8",
                          "model.d_layers=1"]}
LOSS_TOLERANCE = 0.05  # relative, or 3× the spread that other noise alone gives on the CPU, if larger


@dataclass
class Plan:
    """What to run: full sizes with CUDA, tiny ones for the CPU dry run."""
    cuda: bool
    families: list[str]
    ray_families: list[str]
    sizes: tuple[int, ...] = (28, 32)
    steps: int = 300
    ref_steps: int = 20
    warmup: int = 10
    batch: int = 64
    ray_epochs: int = 3
    knn_check: tuple[int, int, int] = (2_000, 100_000, 256)  # queries × references × dims, against the CPU
    knn_timed: tuple[int, int, int] = (10_000, 1_000_000, 256)
    inception_batch: int = 200
    inception_passes: int = 5
    workers_images: int = 20_000  # images the inception section extracts through the evaluation's workers
    samples: int = 64
    n_generated: int = 1000
    iwae_k: int | None = None  # None: the preset's
    real_digits: bool = False  # the ray and evaluate sections on the bundled 8×8 digits instead of upsampled ones
    ray_bf16: bool = True  # also one Ray Train job in bf16
    checkpoints: dict = field(default_factory=dict)  # family → a trained checkpoint (ray → evaluate)

    @classmethod
    def make(cls, cuda: bool, families: list[str], steps: int | None) -> Plan:
        if cuda:
            return cls(True, families, families, steps=steps or 300)
        # One Ray Train job (the loop section covers bf16 autocast), a VAE: DDP-wrapped, with a likelihood bound.
        ray_families = ["vae"] if "vae" in families else families[:1]
        return cls(False, families, ray_families, sizes=(8,), steps=steps or 3, ref_steps=2, warmup=1, batch=8,
                   ray_epochs=1, knn_check=(50, 500, 16), knn_timed=(100, 2_000, 16), inception_batch=2,
                   inception_passes=1, workers_images=8, samples=4, n_generated=60, iwae_k=2, ray_bf16=False, real_digits=True)

    @property
    def device(self):
        import torch

        return torch.device("cuda" if self.cuda else "cpu")


# ----------------------------------------------------------------------------------------------- sections

def machine(plan: Plan) -> dict:
    import ray
    import torch

    from genlib.tracking import git_sha

    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "ray": ray.__version__, "genlib_commit": git_sha()}
    if plan.cuda:
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "compute_capability": f"{props.major}.{props.minor}", "gpus": torch.cuda.device_count(),
                 "driver": _nvidia_smi("driver_version")}
    return info


def loop(plan: Plan) -> dict:
    """Every family × size × precision through the loop's epoch function on the device."""
    import torch

    rows = []
    for size in plan.sizes:
        x, y = digits(size)
        batches = [(x[i:i + plan.batch], y[i:i + plan.batch], torch.arange(i, i + plan.batch))
                   for i in range(0, len(x) - plan.batch + 1, plan.batch)]
        held = batches[-1]  # scored, never trained on
        images = [batches[i % (len(batches) - 1)] for i in range(plan.warmup + plan.steps)], held
        pairs = [(*b, _outlines(b[0])) for b in images[0]], (*held, _outlines(held[0]))  # for the translators
        for family in plan.families:
            unfit = _unfit(family, size, narrow=not plan.cuda)
            if unfit:  # progan grows by doubling from 4×4: not 28×28
                rows.append({"family": family, "size": size, "skipped": unfit})
                _say(rows[-1])
                continue
            train, held = pairs if _translator(family) else images
            for precision in ("fp32", "bf16"):
                narrow = not plan.cuda
                row = {"family": family, "size": size, "precision": precision,
                       **_steps(family, size, plan.device, precision, train, held, plan.warmup, narrow=narrow)}
                if precision == "fp32":
                    ref = train[:plan.ref_steps]
                    here = _steps(family, size, plan.device, precision, ref, held, 0, narrow=narrow)["val_loss"]
                    cpu = _steps(family, size, torch.device("cpu"), precision, ref, held, 0, narrow=narrow)["val_loss"]
                    # The VAE's and the GAN's noise differs between devices: two CPU runs with other
                    # noise seeds measure how far that alone moves the loss.
                    other = _steps(family, size, torch.device("cpu"), precision, ref, held, 0, noise_seed=7,
                                   narrow=narrow)["val_loss"]
                    noise = abs(other - cpu) / max(abs(cpu), 1e-12)
                    row |= {"ref_steps": len(ref), "val_loss_device": here, "val_loss_cpu": cpu,
                            "relative_difference": abs(here - cpu) / max(abs(cpu), 1e-12),
                            "noise_difference_cpu": noise, "tolerance": max(LOSS_TOLERANCE, 3 * noise)}
                    row["within_tolerance"] = row["relative_difference"] <= row["tolerance"]
                rows.append(row)
                _say(row)
    bad = [f"{r['family']} {r['size']}" for r in rows if r.get("within_tolerance") is False]
    if bad:
        raise AssertionError(f"fp32 losses on {plan.device.type} differ from the CPU's by more than "
                             f"{LOSS_TOLERANCE:.0%}: {bad}; rows: {rows}")
    return {"rows": rows, "loss_tolerance": LOSS_TOLERANCE}


def _family_config(family: str, narrow: bool):
    """The digits preset with ``family`` at its defaults (narrower in the dry run: ``DRY_SIZES``)."""
    from genlib.presets import load_config

    return load_config("digits", [f"model.family={family}", *(DRY_SIZES.get(family, []) if narrow else [])])


def _translator(family: str) -> bool:
    from genlib.models import MODELS

    return "images" not in MODELS.get(family).data_kinds


def _outlines(x):
    """The translators' inputs: each uint8 (N, 1, H, W) digit's outline (``genlib.data.pairs.outline``)."""
    import torch

    from genlib.data.pairs import outline

    return torch.from_numpy(outline(x.permute(0, 2, 3, 1).numpy(), 256)).permute(0, 3, 1, 2).contiguous()


def _build(family: str, size: int, narrow: bool):
    """``family`` at its (dry-run) config for grey ``size``² images of 256 levels (a translator: from the same)."""
    from genlib.models import build_model

    source = ((1, size, size), 256) if _translator(family) else None
    return build_model(_family_config(family, narrow).model, (1, size, size), 256, 10, source)


def _unfit(family: str, size: int, narrow: bool) -> str | None:
    """Why ``family`` cannot train on ``size``×``size`` images (its own error), or None."""
    try:
        _build(family, size, narrow)
    except ValueError as err:
        return str(err)
    return None


def _steps(family: str, size: int, device, precision: str, batches: list, held: tuple, warmup: int,
           noise_seed: int = 1, narrow: bool = False) -> dict:
    import torch

    from genlib.models.base import Batch, TrainingContext
    from genlib.train.loop import _train_epoch

    cfg = _family_config(family, narrow)
    torch.manual_seed(cfg.train.seed)
    model = _build(family, size, narrow).to(device)  # the same initial weights anywhere
    torch.manual_seed(cfg.train.seed + noise_seed)  # the noise of training steps (CUDA's generator too)
    optimizers = model.configure_optimizers(cfg.train)
    model.train()
    _train_epoch(model, batches[:warmup], optimizers, TrainingContext(), device, None, precision)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    metrics, _, bad_step = _train_epoch(model, batches[warmup:], optimizers, TrainingContext(warmup), device, None,
                                        precision)
    _sync(device)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        val = model.validation_step(Batch.from_loader(held).to(device))
    out = {"steps": len(batches) - warmup, "images_per_second": (len(batches) - warmup) * len(held[0]) / seconds,
           "train_loss": metrics.get("loss"), "val_loss": val["loss"], "nonfinite_step": bad_step}
    if device.type == "cuda":
        out["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def ray_jobs(plan: Plan) -> dict:
    """Families through the real Ray Train job: fp32 each, and bf16 for the first (with CUDA)."""
    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.train import launch
    from genlib.train.hooks import TrainHooks

    data = (["data.source=digits"] if plan.real_digits else
            ["data.source=npz", f"data.path={digits_npz(plan.sizes[0])}", "data.levels=256"])
    rows = []
    runs = [(family, "fp32") for family in plan.ray_families] + [(plan.ray_families[0], "bf16")] * plan.ray_bf16
    for family, precision in runs:
        cfg = load_config("digits", [f"model.family={family}", *data, f"train.epochs={plan.ray_epochs}",
                                     f"train.batch_size={plan.batch}", "train.num_workers=1",
                                     f"train.gpus_per_worker={1 if plan.cuda else 0}", "train.cpus_per_worker=1",
                                     f"train.precision={precision}", f"train.checkpoint_every={plan.ray_epochs}",
                                     f"train.sample_every={plan.ray_epochs}"])
        dataset = prepare(cfg.data).path
        started = time.perf_counter()
        result = launch.fit(cfg, dataset, TrainHooks(), f"gpu-check-{family}-{precision}")
        launch.check_finite(result, cfg)
        wall = time.perf_counter() - started
        checkpoint, metrics = launch.select_checkpoint(result, "last")
        if precision == "fp32":
            local = Path(tempfile.mkdtemp(prefix="gpu-check-ckpt-")) / family
            launch.download(checkpoint, local)
            plan.checkpoints[family] = (cfg, str(local), str(dataset))
        row = {"family": family, "precision": precision, "epochs": int(metrics["epoch"]), "wall_seconds": wall,
               "images_per_second": metrics["images_per_second"], "train_loss": metrics["train_loss"],
               "val_loss": metrics["val_loss"], "gpus_per_worker": cfg.train.gpus_per_worker}
        rows.append(row)
        _say(row)
    return {"rows": rows}


def knn(plan: Plan) -> dict:
    import numpy as np
    import torch

    from genlib.evaluate.knn import nearest_neighbours

    rng = np.random.default_rng(0)
    nq, nr, d = plan.knn_check
    q, r = rng.standard_normal((nq, d), dtype=np.float32), rng.standard_normal((nr, d), dtype=np.float32)
    started = time.perf_counter()
    cpu = nearest_neighbours(q, r, k=2, device="cpu")
    cpu_seconds = time.perf_counter() - started
    on_device = nearest_neighbours(q, r, k=2, device=plan.device)
    differ = cpu.indices != on_device.indices
    gap = np.abs(cpu.distances - on_device.distances)
    out = {"check_shape": plan.knn_check, "cpu_seconds": cpu_seconds,
           "identical_indices": bool(not differ.any()), "differing_neighbours": int(differ.sum()),
           "max_distance_difference": float(gap.max())}
    # A neighbour may differ only where two references tie to rounding (the distances still agree).
    if differ.any() and not np.allclose(cpu.distances[differ], on_device.distances[differ], rtol=1e-5, atol=1e-6):
        raise AssertionError(f"k-NN on {plan.device.type} found other neighbours than on the CPU: {out}")
    nq, nr, d = plan.knn_timed
    q = torch.randn(nq, d, generator=torch.Generator().manual_seed(1)).numpy()
    r = torch.randn(nr, d, generator=torch.Generator().manual_seed(2)).numpy()
    nearest_neighbours(q[:64], r[:4096], k=2, device=plan.device)  # warm-up: kernels, allocator
    _sync(plan.device)
    started = time.perf_counter()
    nearest_neighbours(q, r, k=2, device=plan.device)
    _sync(plan.device)
    out |= {"timed_shape": plan.knn_timed, "timed_seconds": time.perf_counter() - started}
    _say(out)
    return out


def inception(plan: Plan) -> dict:
    import torch

    from genlib.evaluate.inception import INPUT_SIZE, FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3().eval().requires_grad_(False).to(plan.device)
    x = torch.rand(plan.inception_batch, 3, INPUT_SIZE, INPUT_SIZE, device=plan.device) * 2 - 1
    with torch.no_grad():
        net(x)  # warm-up
        _sync(plan.device)
        if plan.cuda:
            torch.cuda.reset_peak_memory_stats(plan.device)
        started = time.perf_counter()
        for _ in range(plan.inception_passes):
            features = net(x)
        _sync(plan.device)
    seconds = time.perf_counter() - started
    out = {"batch": plan.inception_batch, "passes": plan.inception_passes, "feature_dims": int(features.shape[1]),
           "images_per_second": plan.inception_batch * plan.inception_passes / seconds}
    if plan.cuda:
        out["peak_memory_mib"] = torch.cuda.max_memory_allocated(plan.device) / 2**20
    out["evaluation_workers"] = _extraction_through_workers(plan, net.cpu())
    _say(out)
    return out


def _extraction_through_workers(plan: Plan, net) -> dict:
    """Features of uint8 28×28 grey images as the evaluation extracts them (``genlib.evaluate.workers``):
    in this process on the device, and on a Ray Data pool of 2 actors sharing it (0.5 GPU each; on the
    CPU, one core each): images/s (the pool's start included), and whether the two agree."""
    import numpy as np

    import genlib.evaluate.workers as workers_module
    from genlib.evaluate.extractor import Extractor
    from genlib.evaluate.inception import preprocess
    from genlib.evaluate.workers import Workers

    workers_module.RAY_POOL_SECONDS = 0  # the pool path is what is measured, even where this process would win

    def encode(images):
        return net(preprocess(images, 256))

    images = np.random.default_rng(0).integers(0, 256, (plan.workers_images, 1, 28, 28), dtype=np.uint8)
    out = {"images": plan.workers_images}
    for label, workers in (("here", Workers(1, batch_size=plan.inception_batch, device=plan.device)),
                           ("2 Ray workers", Workers(2, 0.5 if plan.cuda else 0.0, plan.inception_batch))):
        extractor = Extractor("inception-random", "random-weights", 2048, encode, {}, net).to(
            plan.device if label == "here" else "cpu")
        if label == "here":
            workers.features(extractor, images[:plan.inception_batch])  # warm-up (Ray's pool starts in the timing,
            #                                                              as an evaluation pays it per extraction)
        started = time.perf_counter()
        features = workers.features(extractor, images)
        out[f"{label}_images_per_second"] = len(images) / (time.perf_counter() - started)
        out[f"{label}_features"] = features
    here, spread = out.pop("here_features"), out.pop("2 Ray workers_features")
    out["largest_relative_difference"] = float(np.abs(here - spread).max() / max(np.abs(here).max(), 1e-12))
    return out


def sampling(plan: Plan) -> dict:
    import torch

    from genlib.models import MODELS, build_model
    from genlib.models.pixelcnn import AutoregressiveModel
    from genlib.presets import load_config

    size, rows = plan.sizes[0], []
    for family in plan.families:
        if not issubclass(MODELS.get(family), AutoregressiveModel):
            continue
        cfg = load_config("digits", [f"model.family={family}"])
        torch.manual_seed(0)
        model = build_model(cfg.model, (1, size, size), 256, 10).to(plan.device).eval()
        row, images = {"family": family, "size": size, "n": plan.samples}, {}
        _ieee_fp32()  # the naive sampler's convolutions and the cache's einsums in full fp32 alike
        for cached in (False, True):
            if cached and not hasattr(model, "start_cache"):
                row["cached_seconds"] = "no cached sampler"
                continue
            generator = torch.Generator(device=plan.device).manual_seed(1)
            _sync(plan.device)
            started = time.perf_counter()
            images[cached] = model.sample(plan.samples, generator=generator, cached=cached).cpu()
            _sync(plan.device)
            row["cached_seconds" if cached else "naive_seconds"] = time.perf_counter() - started
        if len(images) == 2:
            row["identical"] = bool(torch.equal(images[False], images[True]))
        rows.append(row)
        _say(row)
    if not rows:
        raise AssertionError(f"no autoregressive family among {plan.families}")
    return {"rows": rows}


def evaluate(plan: Plan) -> dict:
    from genlib.presets import config_from_dict
    from genlib.stages.evaluate import evaluate as evaluate_stage
    from genlib.tracking import Tracker

    if not plan.checkpoints:  # run on its own (--sections evaluate): train one model first
        ray_jobs(Plan(**{**asdict(plan), "ray_families": plan.ray_families[:1], "ray_bf16": False,
                         "checkpoints": plan.checkpoints}))
    family, (cfg, checkpoint, dataset) = next(iter(plan.checkpoints.items()))
    settings = cfg.to_dict()
    settings["eval"] |= {"device": "auto", "n_generated": plan.n_generated,
                         **({"iwae_k": plan.iwae_k} if plan.iwae_k else {})}
    cfg = config_from_dict(settings)
    tracker = Tracker(f"sqlite:///{Path(os.environ['GENLIB_HOME']) / 'mlflow.db'}")
    started = time.perf_counter()
    result = evaluate_stage(cfg, checkpoint, dataset, tracker)
    seconds = time.perf_counter() - started
    params = tracker.client.get_run(result.run_id).data.params
    out = {"family": family, "wall_seconds": seconds, "eval_device": params.get("eval.device"),
           "metrics": {k: v for k, v in sorted(result.metrics.items())}}
    if out["eval_device"] != plan.device.type:
        raise AssertionError(f"the evaluation ran on {out['eval_device']}, not on {plan.device.type}")
    _say({k: v for k, v in out.items() if k != "metrics"})
    return out


RUNNERS = {"machine": machine, "loop": loop, "ray": ray_jobs, "knn": knn, "inception": inception,
           "sampling": sampling, "evaluate": evaluate}


# ------------------------------------------------------------------------------------------------ data

def digits(size: int):
    """sklearn's real 8×8 digits, bilinearly upsampled to ``size``² with 256 levels: uint8 (N, 1, s, s), labels."""
    import torch

    from genlib.config import DataConfig
    from genlib.data.sources import digits as digits_source

    data = digits_source(DataConfig(source="digits", image_size=size, levels=256))
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order], torch.from_numpy(data.labels)[order]


def digits_npz(size: int) -> Path:
    import numpy as np

    x, y = digits(size)
    path = Path(os.environ["GENLIB_HOME"]) / f"digits-{size}.npz"
    np.savez(path, images=x[:, 0].numpy(), labels=y.numpy())
    return path


# --------------------------------------------------------------------------------------------- helpers

def _ieee_fp32() -> None:
    """No TF32 in cuDNN convolutions (torch's default allows it), so that two samplers computing the
    same logits by different routes draw the same samples."""
    import torch

    torch.backends.cudnn.allow_tf32 = False


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _nvidia_smi(field_name: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def _say(row: dict) -> None:
    print("  " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()), flush=True)


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def _write(path: Path, report: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2, default=str))
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per family (default 300; dry run 3)")
    parser.add_argument("--families", nargs="*", help="default: every registered family")
    parser.add_argument("--sections", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-gpu-check-"))

    import torch

    from genlib.models import MODELS

    plan = Plan.make(torch.cuda.is_available(), args.families or MODELS.names(), args.steps)
    report = {"dry_run": not plan.cuda, "device": plan.device.type,
              "plan": {k: v for k, v in asdict(plan).items() if k != "checkpoints"}, "sections": {}}
    print(f"genlib GPU check on {plan.device.type}" + ("" if plan.cuda else
          ": no CUDA here, so a dry run of the same code paths on the CPU at tiny sizes"), flush=True)
    # One file per set of sections, so that two calls (see the docstring) do not overwrite each other.
    path = args.out / ("gpu_check.json" if args.sections == list(SECTIONS) else f"gpu_check-{'-'.join(args.sections)}.json")
    for name in args.sections:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            result, status = RUNNERS[name](plan), "ok"
        except Exception:  # noqa: BLE001 - recorded, and the next section still runs
            result, status = {"error": traceback.format_exc(limit=8)}, "failed"
            print(result["error"], file=sys.stderr, flush=True)
        report["sections"][name] = {"status": status, "seconds": time.perf_counter() - started, **result}
        _write(path, report)
    failed = [name for name, section in report["sections"].items() if section["status"] != "ok"]
    print(f"\n{len(args.sections) - len(failed)} of {len(args.sections)} sections ok"
          + (f"; failed: {failed}" if failed else "") + f"; everything above is in {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
