"""Serve genlib's deployments from one local process: ``genlib deploy``, for users without a work pool.

``prefect.yaml`` at the repository root is the single source of truth: ``prefect deploy --all``
registers its deployments for a work pool, and this module reads the same file and serves the same
deployments (names, parameters, schedules, concurrency limits) with ``prefect.serve``, which polls
the Prefect API and runs each flow run as a subprocess of this one.
"""

from __future__ import annotations

import datetime
import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.schedules import Schedule
from prefect.types.entrypoint import EntrypointType

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
_KEYS = {"name", "entrypoint", "description", "tags", "parameters", "schedules", "concurrency_limit",
         "work_pool", "version"}  # work_pool and version matter to `prefect deploy` only


def read_deployments(path: str | Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` entries of a prefect.yaml, checked for what serving them needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prefect.yaml at {path}; pass --file with the path to genlib's prefect.yaml")
    entries = (yaml.safe_load(path.read_text()) or {}).get("deployments") or []
    if not entries:
        raise ValueError(f"{path} declares no deployments")
    for entry in entries:
        missing = [k for k in ("name", "entrypoint") if not entry.get(k)]
        unknown = sorted(set(entry) - _KEYS)
        if missing or unknown:
            raise ValueError(f"deployment {entry.get('name')!r} in {path}: missing {missing}, unknown keys "
                             f"{unknown}; known keys: {sorted(_KEYS)}")
    return entries


def load_flow(entrypoint: str) -> Flow:
    """The flow object a ``path/to/file.py:function`` entrypoint names, imported as a module of this
    repository (``flows/pipeline.py:pipeline`` → ``flows.pipeline.pipeline``)."""
    file, _, attr = entrypoint.partition(":")
    if not file.endswith(".py") or not attr:
        raise ValueError(f"entrypoint {entrypoint!r} should look like flows/pipeline.py:pipeline")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    found = getattr(module, attr, None)
    if not isinstance(found, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} names {type(found).__name__}, not a Prefect flow")
    return found


def schedules(entry: dict[str, Any], active: bool | None = None) -> list[Schedule]:
    """The entry's schedules; ``active`` (when not None) overrides each one's ``active`` flag."""
    out = []
    for spec in entry.get("schedules") or []:
        spec = dict(spec)
        from_file = spec.pop("active", True)
        on = from_file if active is None else active
        if "interval" in spec and not isinstance(spec["interval"], datetime.timedelta):
            spec["interval"] = datetime.timedelta(seconds=spec["interval"])
        try:
            out.append(Schedule(**spec, active=on))
        except TypeError as err:
            raise ValueError(f"schedule {spec} of deployment {entry['name']!r}: {err}") from None
    return out


def concurrency_limit(entry: dict[str, Any]) -> int | ConcurrencyLimitConfig | None:
    limit = entry.get("concurrency_limit")
    return ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit


def runner_deployments(path: str | Path = PREFECT_YAML, active: bool | None = None) -> list:
    """prefect.yaml's deployments as ``flow.to_deployment(...)`` objects, ready for ``serve``.

    ``active``: None keeps each schedule's ``active`` flag from the file; True/False sets them all."""
    out = []
    for entry in read_deployments(path):
        flow = load_flow(entry["entrypoint"])
        # A module entrypoint: the runner's subprocess imports flows.pipeline wherever it starts.
        out.append(flow.to_deployment(
            name=entry["name"], description=entry.get("description"), tags=entry.get("tags"),
            parameters=entry.get("parameters") or {}, schedules=schedules(entry, active),
            concurrency_limit=concurrency_limit(entry), entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def describe(deployments: list) -> str:
    """What is served and how to start a run of it."""
    lines = [f"Serving {len(deployments)} genlib deployment(s):"]
    for d in deployments:
        when = "; ".join(_schedule_text(s) for s in d.schedules or []) or "on demand only"
        limit = d.concurrency_limit if d.concurrency_limit is not None else "none"
        lines.append(f"  {d.flow_name}/{d.name}  schedule: {when}; concurrency limit: {limit}; "
                     f"defaults: {d.parameters}")
    examples = {"genlib-pipeline": "--param preset=digits-quick --param 'overrides=[\"train.epochs=3\"]'",
                "genlib-evaluate": "--param train_run_id=<MLflow id of a training run>",
                "genlib-reweight": "--param vae_run_id=<MLflow id of a VAE training run>"}
    lines += ["", "Trigger a run from another shell (same PREFECT_API_URL):"]
    lines += [f"  prefect deployment run '{d.flow_name}/{d.name}' {examples.get(d.flow_name, '')}".rstrip()
              for d in deployments]
    lines += ["Stop with Ctrl-C (served schedules are paused on the way out)."]
    return "\n".join(lines)


def _schedule_text(schedule) -> str:
    inner = schedule.schedule
    what = (f"cron {inner.cron!r} {inner.timezone or 'UTC'}" if getattr(inner, "cron", None)
            else f"every {inner.interval}" if getattr(inner, "interval", None) else f"rrule {inner.rrule!r}")
    return f"{what} ({'active' if schedule.active else 'inactive; --schedule turns it on'})"


def serve_deployments(path: str | Path = PREFECT_YAML, active: bool | None = None, limit: int | None = None) -> None:
    """Serve prefect.yaml's deployments until interrupted; ``limit``: most flow runs at once."""
    from prefect.settings import PREFECT_API_URL

    deployments = runner_deployments(path, active)
    api = PREFECT_API_URL.value()
    print(describe(deployments), f"Prefect API: {api}" if api else
          "Prefect API: ephemeral (no PREFECT_API_URL); for the UI and schedules, run `prefect server start` "
          "and export PREFECT_API_URL=http://127.0.0.1:4200/api here and in the shell that triggers runs",
          sep="\n", flush=True)
    serve(*deployments, limit=limit, print_starting_message=False)
