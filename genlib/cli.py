"""The ``genlib`` command.

    genlib pipeline PRESET [--section.key=value ...]   prepare → train → evaluate, one parent MLflow run
    genlib prepare  PRESET [...]                        write (or find) the dataset version
    genlib train    PRESET [--dataset DIR] [--weights W] train the preset's family on Ray Train
    genlib reweight --vae-run RUN_ID [--dataset DIR] [--reweight.method=knn ...]   DB-VAE sampling weights
    genlib evaluate --run RUN_ID [...]                  score a training run's checkpoint, with an HTML report
    genlib evaluate PRESET --checkpoint DIR --dataset DIR [...]
    genlib runs [--stage evaluate|train|all] [--dataset digits] [--sort fid]   evaluations (a leaderboard) or trainings
    genlib sample --run RUN_ID | --model models:/NAME@ALIAS [-n 64] -o grid.png|samples.npz
    genlib translate --run RUN_ID | --model models:/NAME@ALIAS --input DIR|file.npz -o DIR|out.npz [--direction a2b]
    genlib presets                                      list the presets
    genlib ui [--port 5000]                             MLflow UI on genlib's tracking store
    genlib server [--host 0.0.0.0] [--port 5000]        MLflow tracking server that other nodes log to

Overrides are dotted config keys: ``--train.epochs=3`` or ``--train.epochs 3``.
"""

from __future__ import annotations

import argparse
import os
import sys

from genlib import paths
from genlib.config import command_line_overrides


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = command_line_overrides(rest)
    except ValueError as err:
        parser.error(str(err))
    if getattr(args, "ray_address", None):
        os.environ["RAY_ADDRESS"] = args.ray_address
    try:
        return args.handler(args, overrides)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"genlib: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"genlib: {err or 'interrupted'}", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlib", description="Train, evaluate and audit generative image models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help: str, preset: bool | str = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if preset:
            p.add_argument("preset", help="preset name (see `genlib presets`) or a YAML file",
                           nargs="?" if preset == "optional" else None)
            p.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
        p.set_defaults(handler=handler)
        return p

    command("pipeline", _pipeline, "prepare → train → evaluate → summary, as a Prefect flow")
    command("prepare", _prepare, "prepare (or find) the preset's dataset version")
    tr = command("train", _train, "train the preset's model family on Ray Train")
    tr.add_argument("--dataset", help="prepared dataset directory (default: prepare the preset's data)")
    tr.add_argument("--weights", help="sample the train split with these weights: a weights .parquet or the "
                                      "MLflow run id of a `genlib reweight` run (same as --train.weights)")
    rw = command("reweight", _reweight, "DB-VAE reweighting: weight each training image by how rare its "
                 "region of a trained VAE's latent space is", preset=False)
    rw.add_argument("--vae-run", required=True, help="MLflow run id of a trained VAE (a train-vae run)")
    rw.add_argument("--dataset", help="prepared dataset directory to weight (default: the one the VAE trained on)")
    ev = command("evaluate", _evaluate, "score a trained model on the test split (likelihood, FID/KID, "
                 "precision/recall, memorization) and write an HTML report", preset="optional")
    ev.add_argument("--run", help="MLflow run id of a training run: its checkpoint, config and dataset")
    ev.add_argument("--checkpoint", help="checkpoint directory (with PRESET and --dataset, instead of --run)")
    ev.add_argument("--dataset", help="prepared dataset directory")
    au = command("audit", _audit, "score samples from any generator (a folder of PNG/JPEG files or an .npz) "
                 "against a prepared dataset: sample quality vs its test split, memorization vs its train split, "
                 "an MLflow run and an HTML report", preset=False)
    au.add_argument("--samples", required=True, help="folder of PNG/JPEG files, or an .npz with an 'images' array")
    au.add_argument("--dataset", required=True, help="prepared dataset: its directory, its hash (a prefix of 8+ "
                                                     "characters), or a preset whose data to prepare")
    au.add_argument("--name", help="what the samples are called in MLflow and the report (default: the file name)")
    au.add_argument("--resize", action="store_true", help="resize samples of another size to the dataset's (bicubic)")
    au.add_argument("--quantise", action="store_true", help="map the samples' levels (0..255 for PNGs) onto the "
                                                            "dataset's (e.g. 0..16 for digits)")
    runs = command("runs", _runs, "leaderboard of every finished evaluation in the tracking store "
                   "(bits/dim, FID, KID, precision/recall, copy rate), or the training runs", preset=False)
    runs.add_argument("--stage", choices=["evaluate", "train", "all"], default="evaluate",
                      help="evaluations (the leaderboard; default), training runs, or both")
    runs.add_argument("--dataset", help="keep rows whose dataset (<source>-<hash12>) contains this, e.g. digits")
    runs.add_argument("--sort", help="column to sort by (default bpd, else fid; precision/recall descending)")
    runs.add_argument("--experiment", help="one MLflow experiment (default: every genlib-* experiment)")
    runs.add_argument("--limit", type=int, default=30, help="rows to print")
    sample = command("sample", _sample, "draw samples from a trained model (no training data needed) into a "
                     "grid PNG or an .npz", preset=False)
    which = sample.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="MLflow run id of a training (or evaluation) run")
    which.add_argument("--model", help="registered model, models:/NAME@ALIAS (see the pipeline summary)")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("-o", "--output", required=True, help="grid.png (a picture) or samples.npz (uint8 arrays)")
    sample.add_argument("--label", type=int, help="class to draw, for class-conditional models (default: all, evenly)")
    sample.add_argument("--seed", type=int, default=0)
    tl = command("translate", _translate, "translate images with a trained image-to-image model (pix2pix, "
                 "CycleGAN); no training data needed", preset=False)
    which = tl.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="MLflow run id of a training (or evaluation) run")
    which.add_argument("--model", help="registered model, models:/NAME@ALIAS (see the pipeline summary)")
    tl.add_argument("--input", required=True, help="a folder of PNG/JPEG files, or an .npz with an 'images' array, "
                    "in the source domain's size and levels (see --resize, --quantise)")
    tl.add_argument("-o", "--output", required=True, help="a folder (one PNG per input, same names) or an .npz")
    tl.add_argument("--direction", default="a2b", help="a2b (default) or b2a, for models that translate both ways")
    tl.add_argument("--resize", action="store_true", help="resize inputs of another size to the model's (bicubic)")
    tl.add_argument("--quantise", action="store_true", help="map the inputs' levels (0..255 for PNGs) onto the "
                    "source domain's")
    command("presets", _presets, "list the presets", preset=False)
    dp = command("deploy", _deploy, "serve genlib's Prefect deployments (prefect.yaml) from this process, "
                 "no work pool needed", preset=False)
    dp.add_argument("--schedule", action=argparse.BooleanOptionalAction, default=None,
                    help="turn the nightly schedule on (--no-schedule: off); default: as in prefect.yaml (off)")
    dp.add_argument("--file", help="the prefect.yaml to serve (default: the repository's)")
    dp.add_argument("--limit", type=int, help="most flow runs at once, over all deployments")
    dp.add_argument("--ray-address", help="Ray cluster the flow runs join (default $RAY_ADDRESS, else a local Ray)")
    ui = command("ui", _ui, "serve the MLflow UI on genlib's tracking store and open the latest experiment's runs",
                 preset=False)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True,
                    help="open the runs page in a web browser, where one exists (--no-browser: only print it)")
    ui.add_argument("--workers", type=int, default=1, help="server processes (one person browsing needs one; "
                                                         "MLflow's own default, 4, starts several times slower)")
    server = command("server", _server, "MLflow tracking server over genlib's store (SQLite + proxied artifacts): "
                     "point MLFLOW_TRACKING_URI on every node at it", preset=False)
    server.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for other machines)")
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--workers", type=int, default=2, help="server processes")
    server.add_argument("--allowed-hosts", help="Host headers to accept when serving other machines "
                                                "(e.g. 'mlflow.internal:5000,10.0.0.5:5000')")
    return parser


def _config(args, overrides, trains: bool = False):
    from genlib.presets import load_config
    from genlib.stages.checks import check_names
    from genlib.train.launch import check_resources

    cfg = load_config(args.preset, overrides)
    check_names(cfg)
    if trains:
        check_resources(cfg.train)  # this machine's, before Ray starts (a cluster's: once joined)
    return cfg


def _pipeline(args, overrides) -> int:
    _config(args, overrides, trains=True)  # fail fast on a bad preset or override, before Prefect starts
    from flows.policy import configure_prefect

    configure_prefect()
    from flows.pipeline import pipeline
    from genlib.stages.summary import format_summary

    print(format_summary(pipeline(args.preset, overrides)))
    return 0


def _prepare(args, overrides) -> int:
    from genlib.data.prepare import prepare
    from genlib.presets import load_config

    # Only the data section matters here (an unknown source is refused by prepare itself): no need
    # to import the extractors that _config checks eval.extractor against.
    prepared = prepare(load_config(args.preset, overrides).data)
    state = "cache hit" if prepared.cache_hit else "written"
    manifest = prepared.manifest
    splits = (f"{manifest['kind']}: " + ", ".join(f"domain {d.upper()} splits {v['splits']}"
                                                  for d, v in manifest["domains"].items())
              if "domains" in manifest else f"splits {manifest['splits']}")
    print(f"{prepared.path}  ({state}; hash {prepared.content_hash[:12]}; {splits})")
    return 0


def _train(args, overrides) -> int:
    from genlib.data.prepare import prepare
    from genlib.stages.train import train

    if args.weights:
        overrides = [*overrides, f"train.weights={args.weights}"]
    cfg = _config(args, overrides, trains=True)
    dataset = args.dataset or prepare(cfg.data).path
    result = train(cfg, dataset)
    print(f"MLflow run {result.run_id}: checkpoint {result.checkpoint} (epoch {result.epoch}, "
          f"val_loss {result.metrics.get('val_loss'):.4f})")
    return 0


def _evaluate(args, overrides) -> int:
    from genlib.stages.evaluate import evaluate, evaluate_run

    if args.run:
        if args.preset or args.checkpoint or args.dataset:
            raise ValueError("--run takes the config, checkpoint and dataset from the run; "
                             "drop PRESET/--checkpoint/--dataset (overrides such as --eval.n_generated=5000 are fine)")
        result = evaluate_run(args.run, overrides)
    elif args.preset and args.checkpoint and args.dataset:
        result = evaluate(_config(args, overrides), args.checkpoint, args.dataset)
    else:
        raise ValueError("say what to evaluate: --run RUN_ID, or PRESET --checkpoint DIR --dataset DIR")
    for key, value in sorted(result.metrics.items()):
        print(f"{key:>24}  {value:.4f}")
    print(f"MLflow run {result.run_id}; the report: {result.report}")
    return 0


def _audit(args, overrides) -> int:
    from genlib.stages.audit import audit
    from genlib.stages.checks import resolve_dataset

    cfg, dataset = resolve_dataset(args.dataset, overrides)
    result = audit(cfg, args.samples, dataset, args.name, args.resize, args.quantise)
    for key, value in sorted(result.metrics.items()):
        print(f"{key:>30}  {value:.4f}")
    print(f"MLflow run {result.run_id}; the report: {result.report}")
    return 0


def _reweight(args, overrides) -> int:
    from genlib.stages.reweight import reweight

    result = reweight(args.vae_run, args.dataset, overrides)
    stats = result.diagnostics
    print(f"weights for {stats['n']:.0f} training images: effective sample size {stats['ess']:.0f} "
          f"({stats['ess_fraction']:.1%}), max/mean weight {stats['max_mean_ratio']:.2f}"
          + (f", tempered (τ = {stats['tau']:.2f}) to keep reweight.min_ess" if stats["tau"] < 1 else ""))
    print(f"weights file {result.weights_path}")
    print(f"MLflow run {result.run_id}: train with  genlib train PRESET --weights {result.run_id}")
    return 0


def _runs(args, overrides) -> int:
    from genlib.runs import leaderboard, training_runs
    from genlib.tracking import HEADLINES, Tracker

    tracker = Tracker()
    where = f" for dataset {args.dataset!r}" if args.dataset else ""
    if args.stage in ("evaluate", "all"):
        rows = leaderboard(tracker, args.dataset, args.sort, args.experiment)[:args.limit]
        if rows:
            _print_table(rows, ["model", "family", "dataset", *(h.column for h in HEADLINES if h.leaderboard
                                                                 and any(h.column in r for r in rows)),
                                "extractor", "eval_run_id", "train_run_id"])
            networks = sorted({r["extractor"] for r in rows if r["extractor"]})
            if len(networks) > 1:
                print(f"\nnot comparable across extractors: FID, KID, precision/recall, density/coverage and the "
                      f"feature-space copy rates came from {len(networks)} feature networks ({', '.join(networks)}); "
                      f"compare rows of one extractor, or evaluate again with --eval.extractor_from=<run id>")
            lower = [h.label for h in HEADLINES if h.leaderboard and h.direction == "min" and h.column != "bpd"]
            print(f"\nevaluations in {tracker.uri}; bits/dim: exact where the model has it, else its tightest "
                  f"bound; lower is better for bpd, {', '.join(lower[:-1])} and {lower[-1]}")
        else:
            print(f"no finished evaluations in {tracker.uri}{where}; run `genlib pipeline digits-quick` first")
    if args.stage in ("train", "all"):
        rows = training_runs(tracker, args.dataset, args.experiment)[:args.limit]
        if args.stage == "all":
            print()
        if rows:
            _print_table(rows, ["model", "family", "dataset", "status", "epochs", "selected_epoch", "val_loss",
                                "train_run_id"])
            print(f"\ntraining runs in {tracker.uri}, newest first; epochs: logged so far, counted from 1; "
                  f"val_loss: at the selected epoch")
        else:
            print(f"no training runs in {tracker.uri}{where}")
    return 0


def _print_table(rows: list[dict], columns: list[str], text_columns: int = 3) -> None:
    """Rows as an aligned table: the first ``text_columns`` left-aligned, the rest right-aligned."""
    table = [columns] + [[f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in columns]
                         for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(w) if j < text_columns else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _sample(args, overrides) -> int:
    import numpy as np
    import torch

    from genlib.figures import image_grid
    from genlib.models.base import SAMPLE
    from genlib.models.io import load_model
    from genlib.runs import model_checkpoint, run_checkpoint
    from genlib.tracking import Tracker

    if args.n < 1:
        raise ValueError(f"-n is the number of samples to draw: at least 1, got {args.n}")
    if not args.output.endswith((".png", ".npz")):
        raise ValueError(f"--output must end in .png (a grid picture) or .npz (arrays), got {args.output!r}")
    tracker = Tracker()
    model = load_model(model_checkpoint(tracker, args.model) if args.model else run_checkpoint(tracker, args.run))
    model.eval()
    if SAMPLE not in model.capabilities:
        raise ValueError(f"{type(model).__name__} does not sample from noise, it translates images: use "
                         f"genlib translate --input ... -o ...")
    labels = None
    if args.label is not None:
        if not model.conditional:
            raise ValueError("--label needs a class-conditional model; this one is unconditional")
        if not 0 <= args.label < model.num_classes:
            raise ValueError(f"--label must be in [0, {model.num_classes}), got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    images = model.sample(args.n, labels=labels, generator=torch.Generator().manual_seed(args.seed))
    if args.output.endswith(".npz"):
        np.savez(args.output, images=images.cpu().numpy(), levels=model.levels,
                 labels=(labels if labels is not None else torch.full((args.n,), -1)).numpy())
    else:
        image_grid(images, model.levels).save(args.output)
    print(f"{args.n} samples of {type(model).__name__} → {args.output}")
    return 0


def _translate(args, overrides) -> int:
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from genlib.data.kinds import check_direction
    from genlib.data.samples import IMAGE_SUFFIXES, read_samples
    from genlib.evaluate.translate import translate_all
    from genlib.io import atomic_dir, atomic_file
    from genlib.models.base import TRANSLATE
    from genlib.models.io import load_model
    from genlib.runs import model_checkpoint, run_checkpoint
    from genlib.tracking import Tracker

    source, target = check_direction(args.direction)
    if not (args.output.endswith(".npz") or not os.path.splitext(args.output)[1]):
        raise ValueError(f"--output must be a folder (PNG per image) or end in .npz, got {args.output!r}")
    tracker = Tracker()
    model = load_model(model_checkpoint(tracker, args.model) if args.model else run_checkpoint(tracker, args.run))
    model.eval()
    if TRANSLATE not in model.capabilities:
        raise ValueError(f"{type(model).__name__} does not translate images; use genlib sample for it")
    if args.direction not in model.directions:
        raise ValueError(f"--direction {args.direction}: {type(model).__name__} translates {list(model.directions)}")
    shape, levels = model.domain_spec(source)
    images, done = read_samples(args.input, shape, levels, args.resize, args.quantise)
    out = translate_all(model, torch.from_numpy(images), args.direction, desc=f"translating {len(images)} images")
    target_levels = model.domain_spec(target)[1]
    if args.output.endswith(".npz"):
        with atomic_file(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=out.numpy(), levels=target_levels)
    else:  # the order read_samples reads a folder in
        names = ([p.relative_to(args.input).with_suffix(".png") for p in sorted(Path(args.input).rglob("*"))
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES] if os.path.isdir(args.input)
                 else [Path(f"{i:06d}.png") for i in range(len(out))])
        pixels = (out.float() * (255.0 / (target_levels - 1))).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        with atomic_dir(args.output, overwrite=True) as tmp:
            for name, image in zip(names, pixels):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp / name)
    extra = f" ({', '.join(done.values())})" if done else ""
    print(f"{len(out)} images translated {args.direction} by {type(model).__name__}{extra} → {args.output}")
    return 0


def _presets(args, overrides) -> int:
    from genlib.config import preset_names
    from genlib.presets import load_config

    for name in preset_names():
        cfg = load_config(name)
        print(f"{name:<14} {cfg.data.source:<14} {cfg.model.family:<8} {cfg.train.epochs:>4} epochs, "
              f"{cfg.train.num_workers} worker(s)")
    return 0


def _deploy(args, overrides) -> int:
    if overrides:
        raise ValueError(f"genlib deploy takes no config overrides ({overrides}); give them per run: "
                         "prefect deployment run ... --param 'overrides=[\"train.epochs=3\"]'")
    from flows.policy import configure_prefect

    configure_prefect()
    from flows.deploy import PREFECT_YAML, serve_deployments

    serve_deployments(args.file or PREFECT_YAML, active=args.schedule, limit=args.limit)
    return 0


def _ui(args, overrides) -> int:
    from genlib.tracking import default_tracking_uri

    uri = default_tracking_uri()
    print(f"MLflow UI on {uri} at http://{args.host}:{args.port}", flush=True)
    return _serve([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                   "--default-artifact-root", paths.mlflow_artifacts().as_uri(),
                   "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)],
                  uri, args.host, args.port, args.browser)


def _serve(cmd: list[str], uri: str, host: str, port: int, browser: bool = False) -> int:
    """Run an MLflow server until it ends (or Ctrl-C, SIGTERM); once it answers, print where
    genlib's results are — the latest experiment's runs table and the latest pipeline report — and
    open the runs table in a browser if asked and one exists.

    The server runs in a process group of its own (it starts a web server and job consumers of
    its own), which is stopped as a whole when this process is interrupted or terminated: nothing
    is left serving behind it."""
    import signal
    import subprocess
    import threading
    import time
    import urllib.request

    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    proc = subprocess.Popen(cmd, start_new_session=True, env=server_env())
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        if proc.poll() is None:
            page = _print_landing(uri, base)
            if browser and page and _graphical():
                import webbrowser

                webbrowser.open(page)
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        _stop_group(proc)


def _graphical() -> bool:
    """Whether a browser window can open here. NOTE: without a display, Python's webbrowser falls back
    to text browsers (lynx, w3m) that would take over the terminal the server logs to."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _stop_group(proc) -> None:
    """Stop a child started in its own session, and everything it started."""
    import signal
    import subprocess
    import time

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, 0)  # still a member left? (raises when the group is empty)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)


def _print_landing(uri: str, base: str) -> str | None:
    """Print the URLs a person opens first; returns the runs page of the latest experiment."""
    from genlib.runs import latest_run
    from genlib.stages.locations import report_location, runs_page_url
    from genlib.tracking import Stage, Tracker

    tracker = Tracker(uri)
    latest = latest_run(tracker)
    if latest is None:
        print(f"no genlib runs in {uri} yet: run `genlib pipeline digits-quick`, then reload {base}", flush=True)
        return None
    experiment = tracker.client.get_experiment(latest.info.experiment_id).name
    page = runs_page_url(base, latest.info.experiment_id)
    print(f"runs of {experiment} (the latest experiment): {page}", flush=True)
    pipeline = latest_run(tracker, Stage.PIPELINE, finished=True)
    if pipeline is not None:
        print(f"the latest pipeline report ({pipeline.info.run_name}): "
              f"{report_location(tracker, pipeline.info.run_id, base)}", flush=True)
    return page


def server_env() -> dict[str, str]:
    """The environment of the MLflow servers genlib starts: this one (telemetry off, see
    ``genlib.TELEMETRY_OFF``), without MLflow's job execution — eight consumer processes of about
    250 MB each that run GenAI scorers and trace roll-ups, which genlib's runs never ask for. A
    user's own setting wins."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def server_command(host: str, port: int, workers: int, allowed_hosts: str | None = None) -> list[str]:
    """``mlflow server`` on genlib's SQLite store, serving (proxying) artifacts itself, so clients on
    any node need only its URL: no shared artifact filesystem, no direct database access."""
    paths.home().mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{paths.mlflow_db()}",
           "--artifacts-destination", paths.mlflow_artifacts().as_uri(), "--serve-artifacts",
           "--host", host, "--port", str(port), "--workers", str(workers)]
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])


def _server(args, overrides) -> int:
    cmd = server_command(args.host, args.port, args.workers, args.allowed_hosts)
    print(f"MLflow tracking server on http://{args.host}:{args.port} (store {paths.mlflow_db()}); "
          f"on every node: export MLFLOW_TRACKING_URI=http://<this host>:{args.port}", flush=True)
    return _serve(cmd, f"sqlite:///{paths.mlflow_db()}", args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
