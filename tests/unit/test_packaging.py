"""The Dockerfile, .dockerignore and docker-compose.yml, checked without a Docker engine.

The files are parsed (a small Dockerfile instruction parser, PyYAML for compose with
compose's own variable interpolation) and held against the repository and the
configuration code: what the image copies exists and is in the build context, the
image runs `recsrv run` as a non-root user, its health check reaches /healthz on
the configured port, and every RECSRV_* variable names a real key and loads. Each
check is also run on a broken copy of the files, to show that it can fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from recsrv.cli import parse_args
from recsrv.config import Config, ServerConfig
from recsrv.errors import ConfigError
from tests.conftest import ServerFactory, free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"

# What a deployer exports before `docker compose up` (compose.yml says so).
DEPLOY_ENV = {
    "RECSRV_SECRET_KEY": "s3cret-backend-key",
    "RECSRV_PUBLIC_KEY": "storefront-key",
    "RABBITMQ_PASSWORD": "0123abcd",
}


# ------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the instruction, continuation lines joined
    stage: int  # 0 for the first FROM's stage


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comment lines dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        continued = line.endswith("\\")
        pending += line[:-1].rstrip() + " " if continued else line
        if continued:
            continue
        keyword, _, args = pending.partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, or None for the shell form."""
    if not args.startswith("["):
        return None
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return value


def flags_and_rest(args: str) -> tuple[dict[str, str], list[str]]:
    """--flag=value options, then the remaining words."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


def env_of(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """ENV key=value pairs of one stage."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV" and instruction.stage == stage:
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV without '=' is ambiguous: {instruction.args!r}"
                env[key] = value
    return env


def final_stage(instructions: list[Instruction]) -> int:
    return max(instruction.stage for instruction in instructions)


def healthcheck_command(instructions: list[Instruction]) -> list[str] | None:
    stage = final_stage(instructions)
    for instruction in instructions:
        if instruction.keyword == "HEALTHCHECK" and instruction.stage == stage:
            _, _, command = instruction.args.partition(" CMD ")
            return exec_form(command.strip())
    return None


def dockerfile_problems(text: str, ignore_text: str) -> list[str]:
    """Everything wrong with the Dockerfile, measured against the repo and the config."""
    instructions = parse_dockerfile(text)
    stage = final_stage(instructions)
    final = [i for i in instructions if i.stage == stage]
    problems: list[str] = []
    problems += _base_image_problems(instructions)
    problems += _copy_problems(instructions, ignore_text)
    problems += _install_problems(instructions)
    users = [i.args for i in final if i.keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the image runs as root (USER {users[-1:] or 'unset'})")
    entrypoint = [exec_form(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [exec_form(i.args) for i in final if i.keyword == "CMD"]
    command = (entrypoint[-1] or []) + (cmd[-1] or []) if entrypoint and cmd else []
    if command != ["recsrv", "run"]:
        problems.append(f"the image does not run `recsrv run` in exec form: {command}")
    problems += _port_problems(instructions, final)
    return problems


def _base_image_problems(instructions: list[Instruction]) -> list[str]:
    problems = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            image = instruction.args.split()[0]
            if not re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image):
                problems.append(f"base image {image} is not python:3.11-slim")
    return problems


def _copy_problems(instructions: list[Instruction], ignore_text: str) -> list[str]:
    problems = []
    rules = parse_dockerignore(ignore_text)
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = flags_and_rest(instruction.args)
        if "from" in flags:
            continue  # from another stage, not from the build context
        for source in words[:-1]:
            if not (REPO / source).exists():
                problems.append(f"COPY source {source} does not exist")
            elif is_ignored(rules, source):
                problems.append(f"COPY source {source} is excluded by .dockerignore")
    return problems


def _install_problems(instructions: list[Instruction]) -> list[str]:
    problems = []
    installs = [
        i.args for i in instructions if i.keyword == "RUN" and re.search(r"pip install", i.args)
    ]
    if not any(re.search(r"pip install\s+\.(\s|$)", args) for args in installs):
        problems.append("recsrv is not installed with `pip install .`")
    for args in installs:
        if "[" in args or re.search(r"\s(-e|--editable)\s", args):
            problems.append(f"not only the runtime dependencies: {args!r}")
        if re.search(r"-r\s|requirements|pytest|ruff|mypy|hypothesis", args):
            problems.append(f"installs more than recsrv: {args!r}")
    return problems


def _port_problems(instructions: list[Instruction], final: list[Instruction]) -> list[str]:
    problems = []
    env = env_of(instructions, final_stage(instructions))
    port = int(env.get("RECSRV_SERVER__PORT", ServerConfig().port))
    exposed = [int(i.args.split("/")[0]) for i in final if i.keyword == "EXPOSE"]
    if exposed != [port]:
        problems.append(f"EXPOSE {exposed} is not the server port {port}")
    if port != ServerConfig().port:
        problems.append(f"the image's port {port} is not the default {ServerConfig().port}")
    if env.get("RECSRV_SERVER__HOST") != "0.0.0.0":
        problems.append("the server listens on 127.0.0.1, unreachable from outside")
    problems += _env_key_problems(env)
    check = healthcheck_command(instructions)
    if check is None:
        problems.append("no exec-form HEALTHCHECK in the final stage")
    else:
        text = " ".join(check)
        default = re.search(r"'RECSRV_SERVER__PORT', '(\d+)'", text)
        if "'http://127.0.0.1:'" not in text or "'/healthz'" not in text:
            problems.append(f"the health check does not request /healthz: {check}")
        if default is None or int(default.group(1)) != port:
            problems.append(f"the health check's port is not {port}: {check}")
    return problems


def _env_key_problems(env: Mapping[str, str]) -> list[str]:
    problems = [f"{name} is no config key" for name in env if _unknown_key(name)]
    try:
        Config.from_mapping({}, env)
    except ConfigError as exc:
        problems.append(f"the environment does not load: {exc}")
    return problems


# ------------------------------------------------------------------ .dockerignore


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, pattern) rules in order; the last one that matches decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line[1:] if include else line
        rules.append((not include, _glob(pattern.strip("/"))))
    return rules


def _glob(pattern: str) -> re.Pattern[str]:
    out = ""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if pattern.startswith("**/", position):
            out, position = out + "(.*/)?", position + 3
            continue
        if pattern.startswith("**", position):
            out, position = out + ".*", position + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", position)
            out += pattern[position : end + 1]
            position = end
        else:
            out += re.escape(char)
        position += 1
    return re.compile(out)


def is_ignored(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether `path` stays out of the build context (a rule on a parent counts)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for exclude, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = exclude
    return ignored


# ------------------------------------------------------------------ compose


class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$ rules."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        present = name in env and (env[name] != "" or op is None or not op.startswith(":"))
        if present:
            return env[name]
        if op in (":-", "-"):
            return str(arg)
        if op in (":?", "?"):
            raise MissingVariable(f"{name}: {arg}")
        return ""

    return _VARIABLE.sub(substitute, value)


def load_compose(text: str, env: Mapping[str, str]) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return interpolate(document, env)  # type: ignore[no-any-return]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def container_ports(service: Mapping[str, Any]) -> list[int]:
    return [int(str(port).split(":")[-1].split("/")[0]) for port in service.get("ports", [])]


def compose_problems(document: Mapping[str, Any]) -> list[str]:
    """Everything wrong with the compose file, measured against the repo and the config."""
    services = document.get("services", {})
    problems = [
        f"no {name} service" for name in ("rabbitmq", "mongo", "recsrv") if name not in services
    ]
    if problems:
        return problems
    rabbitmq, mongo, recsrv = services["rabbitmq"], services["mongo"], services["recsrv"]
    if not re.fullmatch(r"rabbitmq:3(\.\d+)*-management", str(rabbitmq.get("image"))):
        problems.append(f"RabbitMQ image {rabbitmq.get('image')} is not a 3.x management image")
    if not re.fullmatch(r"mongo:\d+(\.\d+)*", str(mongo.get("image"))):
        problems.append(f"MongoDB image {mongo.get('image')} is not a mongo:N image")
    for name in ("rabbitmq", "mongo"):
        if not services[name].get("healthcheck", {}).get("test"):
            problems.append(f"{name} has no healthcheck")
        condition = recsrv.get("depends_on", {}).get(name, {}).get("condition")
        if condition != "service_healthy":
            problems.append(f"recsrv does not wait for {name} to be healthy")
    build = recsrv.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    dockerfile = (
        "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile", "Dockerfile")
    )
    if context is None or not (REPO / context / dockerfile).is_file():
        problems.append(f"recsrv is not built from this repository's Dockerfile: {build!r}")
    env = environment_of(recsrv)
    problems += _env_key_problems(env)
    if any(p.startswith("the environment does not load") for p in problems):
        return problems
    config = Config.from_mapping({}, env)
    problems += _server_problems(config, recsrv)
    problems += _broker_problems(config, rabbitmq)
    problems += _store_problems(config, mongo)
    if not config.auth.secret_keys:
        problems.append("no secret API key: the API would be open")
    return problems


def _server_problems(config: Config, recsrv: Mapping[str, Any]) -> list[str]:
    problems = []
    if config.server.host != "0.0.0.0":
        problems.append(f"recsrv listens on {config.server.host}, unreachable from outside")
    if container_ports(recsrv) != [config.server.port]:
        problems.append(f"ports {recsrv.get('ports')} do not publish {config.server.port}")
    grace = str(recsrv.get("stop_grace_period", "10s"))
    seconds = float(grace[:-1]) * (60 if grace.endswith("m") else 1)
    if seconds < config.server.shutdown_timeout_s + 10:
        problems.append(f"stop_grace_period {grace} leaves no time for the final checkpoint")
    if config.log.format != "json":
        problems.append(f"log.format is {config.log.format}, not json")
    return problems


def _broker_problems(config: Config, rabbitmq: Mapping[str, Any]) -> list[str]:
    problems = []
    url = urlsplit(config.broker.url)
    rabbit_env = environment_of(rabbitmq)
    if url.scheme != "amqp" or url.hostname != "rabbitmq" or (url.port or 5672) != 5672:
        problems.append(f"broker.url {config.broker.url} is not the rabbitmq service's AMQP port")
    if 5672 not in container_ports(rabbitmq):
        problems.append("the rabbitmq service does not publish AMQP (5672)")
    expected = (
        rabbit_env.get("RABBITMQ_DEFAULT_USER", "guest"),
        rabbit_env.get("RABBITMQ_DEFAULT_PASS", "guest"),
        rabbit_env.get("RABBITMQ_DEFAULT_VHOST", "/"),
    )
    vhost = url.path[1:] or "/"
    if (url.username, url.password, vhost) != expected:
        problems.append(f"broker.url credentials or vhost do not match RabbitMQ's: {expected}")
    return problems


def _store_problems(config: Config, mongo: Mapping[str, Any]) -> list[str]:
    url = urlsplit(config.store.url)
    if url.scheme != "mongodb" or url.hostname != "mongo" or (url.port or 27017) != 27017:
        return [f"store.url {config.store.url} is not the mongo service"]
    if not url.path.strip("/"):
        return [f"store.url {config.store.url} names no database"]
    return []


def _unknown_key(name: str) -> bool:
    if not name.startswith("RECSRV_"):
        return False
    return name not in config_variables()


def config_variables() -> set[str]:
    """RECSRV_<SECTION>__<KEY> for every key of every section of Config."""
    names = set()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        klass = section.default_factory  # type: ignore[misc]
        for key in dataclasses.fields(klass):
            names.add(f"RECSRV_{section.name.upper()}__{key.name.upper()}")
    return names


# ------------------------------------------------------------------ the tests


def test_the_dockerfile_has_no_problem() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


def test_the_compose_file_has_no_problem() -> None:
    assert compose_problems(load_compose(COMPOSE.read_text(), DEPLOY_ENV)) == []


def test_the_compose_file_takes_keys_and_passwords_from_the_environment() -> None:
    document = load_compose(COMPOSE.read_text(), DEPLOY_ENV)
    env = environment_of(document["services"]["recsrv"])
    config = Config.from_mapping({}, env)
    assert config.auth.secret_keys == ("s3cret-backend-key",)
    assert config.auth.public_keys == ("storefront-key",)
    assert urlsplit(config.broker.url).password == "0123abcd"
    # Nothing secret is written in the file itself.
    text = COMPOSE.read_text()
    assert "s3cret" not in text and "guest" not in text
    for missing in ("RECSRV_SECRET_KEY", "RABBITMQ_PASSWORD"):
        without = {k: v for k, v in DEPLOY_ENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            load_compose(text, without)
    # The public key is optional: without it only the backend can call.
    without_public = {k: v for k, v in DEPLOY_ENV.items() if k != "RECSRV_PUBLIC_KEY"}
    env = environment_of(load_compose(text, without_public)["services"]["recsrv"])
    assert Config.from_mapping({}, env).auth.public_keys == ()


def test_every_config_variable_is_known_to_the_checker() -> None:
    names = config_variables()
    assert {"RECSRV_BROKER__URL", "RECSRV_STORE__URL", "RECSRV_AUTH__SECRET_KEYS"} <= names
    assert "RECSRV_BROKER__URLS" not in names
    assert len(names) == sum(
        len(dataclasses.fields(section.default_factory()))  # type: ignore[misc]
        for section in dataclasses.fields(Config)
        if section.name != "source"
    )


def test_the_entry_point_is_the_recsrv_console_script_and_run_its_command() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["recsrv"] == "recsrv.cli:main"
    assert parse_args(["run"]).command == "run"


def test_the_build_context_holds_what_the_build_needs_and_nothing_private() -> None:
    rules = parse_dockerignore(DOCKERIGNORE.read_text())
    for kept in ("pyproject.toml", "README.md", "recsrv/app.py", "recsrv/http/static/sdk.js"):
        assert not is_ignored(rules, kept), kept
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/checkpoint.json",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11",
        "recsrv/__pycache__/app.cpython-311.pyc",
        "recsrv.egg-info/PKG-INFO",
        "tests/conftest.py",
        ".env",
    ):
        assert is_ignored(rules, left_out), left_out


async def test_the_image_health_check_command_passes_on_a_live_server_only(
    make_server: ServerFactory,
) -> None:
    command = healthcheck_command(parse_dockerfile(DOCKERFILE.read_text()))
    assert command is not None and command[0] == "python"
    client = await make_server()

    async def check(port: int) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env={"RECSRV_SERVER__PORT": str(port)}
        )
        return await asyncio.wait_for(process.wait(), 20)

    assert client.port is not None
    assert await check(client.port) == 0
    assert await check(free_port()) != 0


# Each check, shown able to fail: one change to the real file, the problem it causes.
Edit = Callable[[str], str]


def replacing(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} is not in the file any more"
        return text.replace(old, new)

    return edit


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (replacing("FROM python:3.11-slim", "FROM python:3.11"), "is not python:3.11-slim"),
        (replacing("COPY recsrv ./recsrv", "COPY recsrvx ./recsrv"), "recsrvx does not exist"),
        (replacing("COPY recsrv ./recsrv", "COPY tests ./tests"), "tests is excluded"),
        (replacing("pip install .", "pip install '.[dev]'"), "not only the runtime"),
        (replacing("pip install .", "pip install -e ."), "not installed with `pip install .`"),
        (replacing("pip install .", "pip install . pytest"), "installs more than recsrv"),
        (replacing("USER 10001:10001", "USER root"), "runs as root"),
        (replacing("USER 10001:10001", ""), "runs as root"),
        (replacing('CMD ["run"]', 'CMD ["demo"]'), "does not run `recsrv run`"),
        (replacing('ENTRYPOINT ["recsrv"]', "ENTRYPOINT recsrv"), "does not run `recsrv run`"),
        (replacing("EXPOSE 8080", "EXPOSE 8000"), "EXPOSE [8000] is not the server port 8080"),
        (replacing("RECSRV_SERVER__PORT=8080", "RECSRV_SERVER__PORT=9090"), "not the default"),
        (replacing("RECSRV_SERVER__HOST=0.0.0.0", "RECSRV_SERVER__HOST=127.0.0.1"), "127.0.0.1"),
        (replacing("RECSRV_SERVER__HOST=", "RECSRV_SERVER_HOST="), "RECSRV_SERVER_HOST is no"),
        (replacing("/healthz", "/readyz"), "does not request /healthz"),
        (replacing("'RECSRV_SERVER__PORT', '8080'", "'RECSRV_SERVER__PORT', '80'"), "port is not"),
        (replacing("HEALTHCHECK", "# HEALTHCHECK"), "no exec-form HEALTHCHECK"),
    ],
)
def test_each_dockerfile_check_can_fail(edit: Edit, problem: str) -> None:
    problems = dockerfile_problems(edit(DOCKERFILE.read_text()), DOCKERIGNORE.read_text())
    assert any(problem in found for found in problems), problems


def test_a_copy_source_left_out_of_the_build_context_is_a_problem() -> None:
    ignore = DOCKERIGNORE.read_text().replace("!README.md\n", "")
    problems = dockerfile_problems(DOCKERFILE.read_text(), ignore)
    assert problems == ["COPY source README.md is excluded by .dockerignore"]


def setting_line(key: str, line: str) -> Edit:
    """Replace the line that starts with `key` (indentation kept)."""

    def edit(text: str) -> str:
        pattern = re.compile(rf"^(\s*){re.escape(key)}.*$", re.MULTILINE)
        assert pattern.search(text), f"no line starts with {key!r}"
        return pattern.sub(lambda match: match[1] + line, text, count=1)

    return edit


BROKER_URL = "RECSRV_BROKER__URL: amqp://recsrv:${RABBITMQ_PASSWORD}@"
STORE_URL = "RECSRV_STORE__URL: mongodb://"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (setting_line("image: rabbitmq", "image: rabbitmq:3.13"), "management"),
        (setting_line("image: mongo", "image: postgres:16"), "not a mongo:N image"),
        (setting_line("condition: service_healthy", "condition: service_started"), "rabbitmq"),
        (setting_line('test: ["CMD", "mongosh"', "start_interval: 1s"), "mongo has no healthcheck"),
        (setting_line("build:", "build: ./docker"), "not built from this repository"),
        (replacing("RECSRV_BROKER__URL:", "RECSRV_BROKER_URL:"), "RECSRV_BROKER_URL is no"),
        (
            setting_line(
                "RECSRV_STORE__CHECKPOINT_INTERVAL_S", "RECSRV_STORE__CHECKPOINT_INTERVAL_S: 0"
            ),
            "does not load",
        ),
        (
            setting_line("RECSRV_BROKER__URL", BROKER_URL + "localhost:5672/recsrv"),
            "rabbitmq service",
        ),
        (
            setting_line("RECSRV_BROKER__URL", BROKER_URL + "rabbitmq:5673/recsrv"),
            "rabbitmq service",
        ),
        (setting_line("RECSRV_BROKER__URL", BROKER_URL + "rabbitmq:5672/"), "vhost do not match"),
        (replacing("amqp://recsrv:", "amqp://guest:"), "vhost do not match"),
        (setting_line('- "127.0.0.1:5672:5672"', ""), "does not publish AMQP"),
        (
            setting_line("RECSRV_STORE__URL", STORE_URL + "localhost:27017/recsrv"),
            "the mongo service",
        ),
        (setting_line("RECSRV_STORE__URL", STORE_URL + "mongo:27017"), "names no database"),
        (setting_line("RECSRV_SERVER__HOST", "RECSRV_SERVER__HOST: 127.0.0.1"), "unreachable"),
        (setting_line('- "8080:8080"', '- "8080:8000"'), "do not publish 8080"),
        (setting_line("RECSRV_SERVER__PORT", 'RECSRV_SERVER__PORT: "9000"'), "do not publish 9000"),
        (setting_line("stop_grace_period", "stop_grace_period: 10s"), "no time for the final"),
        (setting_line("RECSRV_LOG__FORMAT", "RECSRV_LOG__FORMAT: console"), "not json"),
        (setting_line("RECSRV_AUTH__SECRET_KEYS", 'RECSRV_AUTH__SECRET_KEYS: ""'), "would be open"),
    ],
)
def test_each_compose_check_can_fail(edit: Edit, problem: str) -> None:
    problems = compose_problems(load_compose(edit(COMPOSE.read_text()), DEPLOY_ENV))
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A}", {}, ""),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:-d}", {}, "d"),
        ("x$${A}y", {"A": "1"}, "x${A}y"),
        ("${A:?need A}", {"A": "v"}, "v"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected
    with pytest.raises(MissingVariable, match="need A"):
        interpolate("${A:?need A}", {"A": ""})


# ------------------------------------------------------------------ replicas compose

REPLICAS_COMPOSE = REPO / "docker-compose.replicas.yml"
REPLICAS_ENV = {**DEPLOY_ENV, "RABBITMQ_ERLANG_COOKIE": "cookie0123"}
NODES = ("1", "2", "3")


def replicas_compose_problems(document: Mapping[str, Any]) -> list[str]:
    """Everything wrong with the three-replica compose file: three recsrv replicas
    sharing one stream and one MongoDB replica set, each on its own RabbitMQ node of
    one cluster, behind HAProxy with deploy/haproxy.cfg."""
    services = document.get("services", {})
    wanted = [f"{kind}-{n}" for kind in ("rabbitmq", "mongo", "recsrv") for n in NODES]
    problems = [f"no {name} service" for name in [*wanted, "mongo-init", "haproxy"]]
    problems = [
        p for p in problems if p.removeprefix("no ").removesuffix(" service") not in services
    ]
    if problems:
        return problems
    problems += _cluster_problems(services)
    problems += _replica_set_problems(services)
    configs = []
    for n in NODES:
        env = environment_of(services[f"recsrv-{n}"])
        key_problems = _env_key_problems(env)
        if key_problems:
            problems += [f"recsrv-{n}: {problem}" for problem in key_problems]
            continue
        configs.append(Config.from_mapping({}, env))
        problems += _replica_problems(n, configs[-1], services)
    if len(configs) == len(NODES):
        problems += _shared_problems(configs, services["haproxy"])
    return problems


def _replica_problems(n: str, config: Config, services: Mapping[str, Any]) -> list[str]:
    problems = []
    replica = services[f"recsrv-{n}"]
    url = urlsplit(config.broker.url)
    if (url.hostname, url.port or 5672) != (f"rabbitmq-{n}", 5672):
        problems.append(f"recsrv-{n} does not read from RabbitMQ node rabbitmq-{n}")
    rabbit_env = environment_of(services[f"rabbitmq-{n}"])
    expected = tuple(rabbit_env.get(f"RABBITMQ_DEFAULT_{key}") for key in ("USER", "PASS", "VHOST"))
    if (url.username, url.password, url.path[1:]) != expected:
        problems.append(f"recsrv-{n}'s credentials or vhost do not match rabbitmq-{n}'s")
    if config.server.host != "0.0.0.0":
        problems.append(f"recsrv-{n} listens on {config.server.host}, unreachable by HAProxy")
    if replica.get("ports"):
        problems.append(f"recsrv-{n} publishes ports: only HAProxy should")
    depends = replica.get("depends_on", {})
    for node in NODES:
        if depends.get(f"rabbitmq-{node}", {}).get("condition") != "service_healthy":
            problems.append(f"recsrv-{n} does not wait for rabbitmq-{node} to be healthy")
    if depends.get("mongo-init", {}).get("condition") != "service_completed_successfully":
        problems.append(f"recsrv-{n} does not wait for the replica set to be initiated")
    if not config.auth.secret_keys:
        problems.append(f"recsrv-{n} has no secret API key: the API would be open")
    build = replica.get("build")
    if not isinstance(build, str) or not (REPO / build / "Dockerfile").is_file():
        problems.append(f"recsrv-{n} is not built from this repository's Dockerfile")
    return problems


def _cluster_problems(services: Mapping[str, Any]) -> list[str]:
    problems = []
    cookies = set()
    for n in NODES:
        node = services[f"rabbitmq-{n}"]
        if node.get("hostname") != f"rabbitmq-{n}":
            problems.append(f"rabbitmq-{n}'s hostname is not rabbitmq-{n}: its node name")
        if not node.get("healthcheck", {}).get("test"):
            problems.append(f"rabbitmq-{n} has no healthcheck")
        env = environment_of(node)
        cookies.add(
            (env.get("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"), env.get("RABBITMQ_CTL_ERL_ARGS"))
        )
        mounts = [str(volume).split(":") for volume in node.get("volumes", [])]
        conf = [m for m in mounts if m[1:2] == ["/etc/rabbitmq/conf.d/20-cluster.conf"]]
        if not conf or not (REPO / conf[0][0]).is_file():
            problems.append(f"rabbitmq-{n} does not mount the cluster's configuration")
            continue
        listed = re.findall(r"classic_config\.nodes\.\d+ = (\S+)", (REPO / conf[0][0]).read_text())
        if sorted(listed) != [f"rabbit@rabbitmq-{node}" for node in NODES]:
            problems.append(f"the cluster's configuration lists {listed}, not the three nodes")
    if len(cookies) != 1 or not all("-setcookie" in str(arg) for arg in next(iter(cookies))):
        problems.append("the RabbitMQ nodes do not share one Erlang cookie (server and CLI)")
    return problems


def _replica_set_problems(services: Mapping[str, Any]) -> list[str]:
    problems = []
    for n in NODES:
        command = services[f"mongo-{n}"].get("command", [])
        if "--replSet" not in command or command[command.index("--replSet") + 1] != "rs0":
            problems.append(f"mongo-{n} is not a member of replica set rs0")
    script = " ".join(map(str, services["mongo-init"].get("command", [])))
    for n in NODES:
        if f'host: "mongo-{n}:27017"' not in script:
            problems.append(f"mongo-init does not add mongo-{n} to the replica set")
    if 'rs.initiate({_id: "rs0"' not in script:
        problems.append("mongo-init does not initiate rs0")
    return problems


def _shared_problems(configs: list[Config], haproxy: Mapping[str, Any]) -> list[str]:
    problems = []
    first = configs[0]
    if len({config.server.instance for config in configs}) != len(configs) or not all(
        config.server.instance for config in configs
    ):
        problems.append("the replicas' server.instance names are not set and distinct")
    names = {(c.broker.exchange, c.broker.queue) for c in configs}
    if len(names) != 1:
        problems.append(f"the replicas read different streams: {names}")
    if len({config.store for config in configs}) != 1:
        problems.append("the replicas do not share one store configuration")
    url = urlsplit(first.store.url)
    hosts = sorted(url.netloc.split(","))
    if url.scheme != "mongodb" or hosts != [f"mongo-{n}:27017" for n in NODES]:
        problems.append(f"store.url {first.store.url} does not name the three mongo members")
    if "replicaSet=rs0" not in url.query or not url.path.strip("/"):
        problems.append(f"store.url {first.store.url} names no replica set or no database")
    mounts = [str(volume).split(":") for volume in haproxy.get("volumes", [])]
    if ["./deploy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg", "ro"] not in mounts:
        problems.append("haproxy does not run deploy/haproxy.cfg")
    env = environment_of(haproxy)
    targets = [env.get(f"RECSRV_{n}") for n in NODES]
    if targets != [f"recsrv-{n}:{c.server.port}" for n, c in zip(NODES, configs, strict=True)]:
        problems.append(f"haproxy's RECSRV_1..3 {targets} are not the three replicas")
    listen = env.get("RECSRV_LISTEN", "")
    if [port for port in container_ports(haproxy)] != [int(listen.rpartition(":")[2] or 0)]:
        problems.append(f"haproxy publishes {haproxy.get('ports')}, not RECSRV_LISTEN {listen}")
    return problems


def test_the_replicas_compose_file_has_no_problem() -> None:
    document = load_compose(REPLICAS_COMPOSE.read_text(), REPLICAS_ENV)
    assert replicas_compose_problems(document) == []
    for missing in ("RECSRV_SECRET_KEY", "RABBITMQ_PASSWORD", "RABBITMQ_ERLANG_COOKIE"):
        without = {k: v for k, v in REPLICAS_ENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            load_compose(REPLICAS_COMPOSE.read_text(), without)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (replacing("  recsrv-3:\n", "  recsrv-4:\n"), "no recsrv-3 service"),
        (replacing("hostname: rabbitmq-2", "hostname: rabbit2"), "hostname is not rabbitmq-2"),
        (replacing("@rabbitmq-2:5672/recsrv", "@rabbitmq-1:5672/recsrv"), "node rabbitmq-2"),
        (
            replacing("RECSRV_SERVER__INSTANCE: recsrv-3", "RECSRV_SERVER__INSTANCE: recsrv-1"),
            "distinct",
        ),
        (replacing("mongo-3:27017/recsrv?", "mongo-4:27017/recsrv?"), "three mongo members"),
        (replacing("?replicaSet=rs0", ""), "no replica set"),
        (replacing('"--replSet", "rs0"', '"--replSet", "rs1"'), "not a member of replica set rs0"),
        (replacing('{_id: 2, host: "mongo-3:27017"}', ""), "does not add mongo-3"),
        (
            replacing("condition: service_completed_successfully", "condition: service_started"),
            "initiated",
        ),
        (replacing("RECSRV_3: recsrv-3:8080", "RECSRV_3: recsrv-2:8080"), "not the three replicas"),
        (replacing("./deploy/haproxy.cfg:", "./haproxy.cfg:"), "does not run deploy/haproxy.cfg"),
        (
            replacing("RABBITMQ_CTL_ERL_ARGS: -setcookie", "RABBITMQ_CTL_ERL_ARGS: -x"),
            "Erlang cookie",
        ),
        (
            replacing("RECSRV_SERVER__HOST: 0.0.0.0", "RECSRV_SERVER__HOST: 127.0.0.1"),
            "unreachable",
        ),
        (replacing('RECSRV_STORE__LEASE_S: "30"', 'RECSRV_STORE__LEASE_S: "0"'), "does not load"),
    ],
)
def test_each_replicas_compose_check_can_fail(edit: Edit, problem: str) -> None:
    document = load_compose(edit(REPLICAS_COMPOSE.read_text()), REPLICAS_ENV)
    problems = replicas_compose_problems(document)
    assert any(problem in found for found in problems), problems
