"""deploy/'s Dockerfiles and compose file, read as Docker and Compose read them, so that the tests
run the very commands, environment and health checks written there, outside any container.

Only what those files use is understood: a Dockerfile's ``ARG``, ``FROM ... AS``, ``WORKDIR``,
``COPY`` (from the context, filtered by the Dockerfile's ``.dockerignore``, or ``--from`` a
stage), ``RUN`` (with a pip cache mount), ``ENV``, ``USER``, ``VOLUME``, ``EXPOSE``,
``HEALTHCHECK``, ``ENTRYPOINT`` and ``CMD`` in their JSON forms; a compose file's YAML anchors,
``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` interpolation, ``build``, ``command``,
``environment``, ``healthcheck`` and ``depends_on``. Anything else is refused with
``NotUnderstood``, so a change to those files that the tests cannot follow fails them rather
than going untested.

A container's file system is a directory of the test (``Rootfs``): an absolute path written in
an ``ARG`` default, an ``ENV`` value, a ``WORKDIR`` or a ``COPY`` destination lands under it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-?])(?P<word>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)


class NotUnderstood(AssertionError):
    """A construct of a deploy file these tests do not know how to follow."""


def expand(text: str, scope: Mapping[str, str], *, compose: bool = False) -> str:
    """``text`` with ``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` replaced
    from ``scope`` (``$$`` is a dollar in a compose file)."""

    def one(match: re.Match[str]) -> str:
        if match["dollar"] is not None:
            if not compose:
                raise NotUnderstood(f"'$$' in {text!r}")
            return "$"
        name = match["braced"] or match["plain"]
        value = scope.get(name, "")
        if match["op"] == "-" and not value:
            return expand(match["word"], scope, compose=compose)
        if match["op"] == "?" and not value:
            raise NotUnderstood(f"{name} is required: {match['word']}")
        return value

    return _VARIABLE.sub(one, text)


# --- Dockerfiles ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    flags: tuple[str, ...]
    value: str

    def flag(self, name: str) -> str | None:
        for flag in self.flags:
            key, _, value = flag.removeprefix("--").partition("=")
            if key == name:
                return value
        return None

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's arguments: the only form the deploy files may use, so that
        what runs is an argument vector, not a shell's reading of a line."""
        try:
            argv = json.loads(self.value)
        except json.JSONDecodeError:
            raise NotUnderstood(f"{self.keyword} is not in JSON form: {self.value}") from None
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise NotUnderstood(f"{self.keyword} is not a list of strings: {self.value}")
        return argv


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    global_args: list[Instruction]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comment lines dropped (Docker drops
    them inside a continuation too)."""
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield (pending + stripped).strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def _split_flags(rest: str) -> tuple[tuple[str, ...], str]:
    flags: list[str] = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    return tuple(flags), rest


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags, value = _split_flags(rest.strip())
        instruction = Instruction(keyword, flags, value)
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3):
                raise NotUnderstood(f"FROM {value}")
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise NotUnderstood(f"{keyword} before the first FROM")
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)


# --- .dockerignore -------------------------------------------------------------------------------
def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


class DockerIgnore:
    """A ``.dockerignore``: the last pattern matching a path, or one of its parents, decides."""

    def __init__(self, path: Path | None) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        lines = path.read_text().splitlines() if path is not None and path.exists() else []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.removeprefix("!").strip().strip("/")
            self.rules.append((negated, _pattern(pattern)))

    def excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, pattern in self.rules:
            if any(pattern.fullmatch(prefix) for prefix in prefixes):
                excluded = not negated
        return excluded


# --- an image's build and run, on a directory standing for its file system ------------------
@dataclass
class Rootfs:
    """The container's file system: ``/x`` is ``root / "x"``."""

    root: Path

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def map(self, value: str) -> str:
        """A value written in a deploy file: an absolute path lands under the root."""
        return str(self.path(value)) if value.startswith("/") else value


@dataclass
class Healthcheck:
    argv: list[str]
    interval_s: float
    timeout_s: float
    start_period_s: float
    retries: int


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    if match is None:
        raise NotUnderstood(f"a duration {text!r}")
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


@dataclass
class Image:
    """What running a container of the final stage needs: its environment, user, working
    directory, health check and command."""

    env: dict[str, str]
    user: str
    workdir: Path
    healthcheck: Healthcheck | None
    entrypoint: list[str]
    cmd: list[str]
    exposed: list[str]


def _arg(instruction: Instruction, scope: dict[str, str], given: Mapping[str, str]) -> None:
    name, has_default, default = instruction.value.partition("=")
    name = name.strip()
    if name in given:
        scope[name] = given[name]
    elif has_default:
        scope[name] = expand(default.strip().strip('"'), scope)
    # Re-declared without a default: keeps the global value already in ``scope``.


def _env_pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for word in shlex.split(value):
        name, equals, raw = word.partition("=")
        if not equals:
            raise NotUnderstood(f"ENV {value!r}: only the NAME=value form")
        pairs.append((name, raw))
    return pairs


def _copy_tree(source: Path, target: Path, *, context: Path, ignore: DockerIgnore) -> None:
    """``COPY`` of one source from the context: a file, or a directory's contents."""
    relative = source.relative_to(context).as_posix()
    if ignore.excluded(relative):
        raise NotUnderstood(f"COPY {relative}: the Dockerfile's .dockerignore excludes it")
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for item in sorted(source.rglob("*")):
        name = item.relative_to(context).as_posix()
        if item.is_file() and not ignore.excluded(name):
            destination = target / item.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, destination)


@dataclass
class Build:
    """Runs a Dockerfile's build stages into a ``Rootfs``: the ``COPY`` and ``RUN`` of every
    stage but the last, then reads the last (whose ``RUN``s only make its user: those need root
    on the host and are not run, see ``USER_SETUP``)."""

    dockerfile: Dockerfile
    context: Path
    rootfs: Rootfs
    base_env: dict[str, str]
    pip_cache: Path
    log: Path

    def run(self) -> Image:
        given: dict[str, str] = {}
        scope: dict[str, str] = {}
        for instruction in self.dockerfile.global_args:
            _arg(instruction, scope, given)
        # ARG defaults that are paths land in the rootfs (as ``--build-arg`` would set them).
        for name, value in list(scope.items()):
            scope[name] = self.rootfs.map(value)
        ignore = DockerIgnore(
            self.dockerfile.path.with_name(self.dockerfile.path.name + ".dockerignore")
        )
        for stage in self.dockerfile.stages[:-1]:
            self._stage(stage, dict(scope), ignore)
        return self._final(self.dockerfile.final, dict(scope))

    def _stage_scope(
        self, instruction: Instruction, args: dict[str, str], env: dict[str, str]
    ) -> None:
        if instruction.keyword == "ARG":
            _arg(instruction, args, {})
            name = instruction.value.partition("=")[0].strip()
            if "=" in instruction.value:
                args[name] = self.rootfs.map(args[name])
        elif instruction.keyword == "ENV":
            for name, raw in _env_pairs(instruction.value):
                env[name] = (
                    self.rootfs.map(raw)
                    if raw.startswith("/")
                    else expand(raw, {**self.base_env, **args, **env})
                )

    def _stage(self, stage: Stage, args: dict[str, str], ignore: DockerIgnore) -> None:
        env: dict[str, str] = {}
        workdir = self.rootfs.root
        for instruction in stage.instructions:
            keyword = instruction.keyword
            if keyword in ("ARG", "ENV"):
                self._stage_scope(instruction, args, env)
            elif keyword == "WORKDIR":
                workdir = self.rootfs.path(expand(instruction.value, {**args, **env}))
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                if instruction.flags:
                    raise NotUnderstood(f"COPY {instruction.flags} in a build stage")
                *sources, target = shlex.split(instruction.value)
                destination = workdir / expand(target, {**args, **env})
                for source in sources:
                    path = self.context / source
                    into = (
                        destination / path.name
                        if target.endswith("/") and path.is_file()
                        else destination
                    )
                    _copy_tree(path, into, context=self.context, ignore=ignore)
            elif keyword == "RUN":
                self._run(instruction, workdir, {**self.base_env, **args, **env})
            else:
                raise NotUnderstood(f"{keyword} in a build stage")

    def _run(self, instruction: Instruction, workdir: Path, env: dict[str, str]) -> None:
        env = dict(env)
        for flag in instruction.flags:
            if not flag.startswith("--mount="):
                raise NotUnderstood(f"RUN {flag}")
            mount = flag.removeprefix("--mount=")
            options = dict(part.partition("=")[::2] for part in mount.split(","))
            if options.get("type") != "cache" or not options.get("target", "").endswith(
                ".cache/pip"
            ):
                raise NotUnderstood(f"RUN --mount={mount}")
            env["PIP_CACHE_DIR"] = str(self.pip_cache)  # pip's cache, kept between runs
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {instruction.value}\n")
            log.flush()
            result = subprocess.run(
                ["/bin/sh", "-c", instruction.value],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise AssertionError(
                f"RUN {instruction.value!r} failed with {result.returncode}; see {self.log}"
            )

    def _final(self, stage: Stage, args: dict[str, str]) -> Image:
        env: dict[str, str] = {}
        workdir = self.rootfs.root
        user = "root"
        healthcheck: Healthcheck | None = None
        entrypoint: list[str] = []
        cmd: list[str] = []
        exposed: list[str] = []
        for instruction in stage.instructions:
            keyword = instruction.keyword
            if keyword in ("ARG", "ENV"):
                self._stage_scope(instruction, args, env)
            elif keyword == "RUN":
                packages = OS_PACKAGES.fullmatch(instruction.value)
                if packages is not None:
                    require_host_packages(packages.group(1).split())
                elif not USER_SETUP.fullmatch(instruction.value):
                    raise NotUnderstood(
                        f"RUN in the final stage that is not user set-up: {instruction.value}"
                    )
            elif keyword == "COPY":
                source_stage = instruction.flag("from")
                if source_stage is None:
                    raise NotUnderstood("COPY into the final stage from the context")
                if not any(s.name == source_stage for s in self.dockerfile.stages[:-1]):
                    raise NotUnderstood(f"COPY --from={source_stage}: no such stage")
                source, target = (
                    expand(w, {**args, **env}) for w in shlex.split(instruction.value)
                )
                if source != target:
                    raise NotUnderstood(f"COPY --from moves {source} to {target}")
                # Same path in the build stage and here: the rootfs already holds it.
            elif keyword == "USER":
                user = instruction.value
            elif keyword == "WORKDIR":
                workdir = self.rootfs.path(expand(instruction.value, {**args, **env}))
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "VOLUME":
                for volume in instruction.exec_form():
                    self.rootfs.path(volume).mkdir(parents=True, exist_ok=True)
            elif keyword == "EXPOSE":
                exposed.extend(instruction.value.split())
            elif keyword == "HEALTHCHECK":
                healthcheck = healthcheck_of(instruction)
            elif keyword == "ENTRYPOINT":
                entrypoint = instruction.exec_form()
            elif keyword == "CMD":
                cmd = instruction.exec_form()
            else:
                raise NotUnderstood(f"{keyword} in the final stage")
        return Image(
            env=env,
            user=user,
            workdir=workdir,
            healthcheck=healthcheck,
            entrypoint=entrypoint,
            cmd=cmd,
            exposed=exposed,
        )


# The final stage's RUN may only make the image's user and its home: groupadd, useradd and
# ``install -d``, joined by ``&&``.
USER_SETUP = re.compile(r"(?:(?:groupadd|useradd|install -d) [^&]+?(?: && |$))+")


# ... or install Debian packages, which the processes then find on the host instead.
OS_PACKAGES = re.compile(
    r"apt-get update && apt-get install -y --no-install-recommends ([a-z0-9.+\- ]+?)\s+"
    r"&& rm -rf /var/lib/apt/lists/\*"
)


def require_host_packages(names: list[str]) -> None:
    """The image's Debian packages stand in for by the host's: each must be installed here,
    or the processes would not run as they do in the image."""
    for name in names:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if status != "install ok installed":
            raise AssertionError(
                f"the image installs the Debian package {name}; install it here too "
                "(scripts/system-packages does)"
            )


def healthcheck_of(instruction: Instruction) -> Healthcheck:
    value = instruction.value
    if not value.startswith("CMD "):
        raise NotUnderstood(f"HEALTHCHECK {value}")
    command = value.removeprefix("CMD ").strip()
    if command.startswith("["):
        argv = Instruction("CMD", (), command).exec_form()
    else:  # the shell form, which Docker runs with /bin/sh -c
        argv = ["/bin/sh", "-c", command]
    options = {"interval": "30s", "timeout": "30s", "start-period": "0s", "retries": "3"}
    for flag in instruction.flags:
        key, _, setting = flag.removeprefix("--").partition("=")
        if key not in options:
            raise NotUnderstood(f"HEALTHCHECK --{key}")
        options[key] = setting
    return Healthcheck(
        argv=argv,
        interval_s=_seconds(options["interval"]),
        timeout_s=_seconds(options["timeout"]),
        start_period_s=_seconds(options["start-period"]),
        retries=int(options["retries"]),
    )


# --- compose ----------------------------------------------------------------------------------
def _interpolate(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return expand(node, variables, compose=True)
    if isinstance(node, list):
        return [_interpolate(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate(value, variables) for key, value in node.items()}
    return node


def load_compose(path: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with its anchors merged and ``variables`` interpolated."""
    document = yaml.safe_load(path.read_text())
    interpolated: dict[str, Any] = _interpolate(document, variables)
    return interpolated


def compose_variables(path: Path) -> set[str]:
    """Every variable the compose file interpolates."""
    return {
        m["braced"] or m["plain"] for m in _VARIABLE.finditer(path.read_text()) if not m["dollar"]
    }


def compose_healthcheck(spec: Mapping[str, Any]) -> Healthcheck | None:
    """A service's own ``healthcheck`` (None: the image's)."""
    check = spec.get("healthcheck")
    if check is None:
        return None
    if check.get("disable"):
        return Healthcheck(argv=[], interval_s=0, timeout_s=0, start_period_s=0, retries=0)
    test = check["test"]
    if not (isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL")):
        raise NotUnderstood(f"healthcheck test {test!r}: only the CMD and CMD-SHELL forms")
    if test[0] == "CMD-SHELL" and len(test) != 2:
        raise NotUnderstood(f"healthcheck test {test!r}: CMD-SHELL takes one command")
    return Healthcheck(
        argv=test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]],
        interval_s=_seconds(check.get("interval", "30s")),
        timeout_s=_seconds(check.get("timeout", "30s")),
        start_period_s=_seconds(check.get("start_period", "0s")),
        retries=int(check.get("retries", 3)),
    )


def start_order(services: Mapping[str, Any]) -> list[str]:
    """The services in an order that starts each after those it depends on."""
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in seen:
            raise NotUnderstood(f"a dependency cycle through {name}")
        for dependency in services[name].get("depends_on", {}):
            visit(dependency, (*seen, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order
