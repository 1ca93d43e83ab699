"""The Docker engine, through the official Docker SDK for Python (``docker``): imported only by
stacks with an ``image`` and by the helper that runs one container (revostack.container).

Why this client: it is the engine's own, kept in step with its API, and every call revostack
makes is a short request. The one long-lived stream (a container's attached output and input)
lives in the helper process, where a blocking socket is natural; the supervisor's few calls
(preflight, clean-up) run in a worker thread. An asyncio client would need aiohttp, a far
larger dependency, for no gain here.

Ownership: every container and network revostack creates carries ``LABEL_STACK`` (the stack
id) and, for containers, ``LABEL_INSTANCE``. Nothing without this stack's label is ever stopped
or removed.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

LABEL_STACK = "revostack.stack"
LABEL_INSTANCE = "revostack.instance"
LABEL_SERVICE = "revostack.service"
LABEL_HELPER = "revostack.helper"  # the pid of the revostack process that runs the container
LABEL_STACKFILE = "revostack.stackfile"
DEFAULT_SOCKET = "/var/run/docker.sock"
PROXY_NAMES = {"docker-proxy", "dockerd", "rootlesskit", "rootlessport", "com.docker.backend"}


class Unavailable(Exception):
    """No engine answers: the message says what was tried."""


class EngineError(Exception):
    """The engine refused: its reason."""


def where() -> str:
    """Where the engine was looked for, as the user would check it."""
    host = os.environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else f"the default socket unix://{DEFAULT_SOCKET} (DOCKER_HOST is not set)"


def connect(timeout: float = 5.0):
    """A client that has answered a ping (Unavailable otherwise)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise Unavailable(f"the Docker SDK for Python is not installed ({e}); pip install docker") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as e:
        raise Unavailable(f"no Docker engine answers at {where()}: {reason(e)}") from None
    except Exception as e:  # requests' own errors, on a socket that is there but not an engine
        raise Unavailable(f"no Docker engine answers at {where()}: {reason(e)}") from None
    return client


def _os_error(e: BaseException, depth: int = 0) -> OSError | None:
    """The OSError under a connection error (requests and urllib3 wrap it in tuples and causes)."""
    if depth > 6 or e is None:
        return None
    if isinstance(e, OSError) and e.strerror:
        return e
    for inner in [*getattr(e, "args", ()), e.__cause__, e.__context__, getattr(e, "reason", None)]:
        if isinstance(inner, BaseException):
            found = _os_error(inner, depth + 1)
            if found is not None:
                return found
    return None


def reason(e: BaseException) -> str:
    """The engine's own words for an error, on one line."""
    low = _os_error(e) if not getattr(e, "explanation", None) else None
    if low is not None:
        return low.strerror
    text = getattr(e, "explanation", None) or str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    for noise in ("Error while fetching server API version: ",):
        text = text.replace(noise, "")
    return text[:300]


def short(cid: str) -> str:
    return cid[:12]


def name_of(c: dict) -> str:
    """A container's name, from the engine's list entry."""
    return (c.get("Names") or ["/" + short(c["Id"])])[0].lstrip("/")


def summary(c: dict) -> dict:
    """What revostack shows of a container: {"id", "name", "image"}."""
    return {"id": short(c["Id"]), "name": name_of(c), "image": c.get("Image")}


def network_name(stack_id: str) -> str:
    return f"revostack_{stack_id}"


def container_name(stack_id: str, instance: str) -> str:
    return f"{stack_id}-{instance.replace('.', '-')}"


def ensure_network(client, stack) -> str:
    """The stack's own network (created once, labelled): containers find each other by name."""
    from docker.errors import NotFound

    name = network_name(stack.id)
    try:
        client.api.inspect_network(name)
    except NotFound:
        client.api.create_network(name, driver="bridge", labels={LABEL_STACK: stack.id,
                                                                 LABEL_STACKFILE: str(stack.path.resolve())})
    return name


def containers_of(client, stack_id: str, all_states: bool = True) -> list[dict]:
    """This stack's containers (the engine's list entries), by its label."""
    return client.api.containers(all=all_states, filters={"label": f"{LABEL_STACK}={stack_id}"})


def remove(client, cid: str, timeout: float = 0) -> bool:
    """Stop (kill after ``timeout``) and remove one container; named volumes are kept."""
    from docker.errors import APIError, NotFound

    try:
        if timeout:
            client.api.stop(cid, timeout=int(max(1, timeout)))
        client.api.remove_container(cid, force=True, v=False)
        return True
    except NotFound:
        return False
    except APIError as e:
        if "already in progress" in reason(e):
            return True
        raise


def clean(client, stack_id: str, keep_network: bool = False, only: Callable[[dict], bool] | None = None,
          grace: float = 0.0) -> list[str]:
    """Remove this stack's containers (those ``only`` accepts), then its network. Returns the
    names removed. Only what carries this stack's label is touched. ``grace``: a running one
    gets its stop signal and that long to stop before it is killed (a stale postgres shuts
    down cleanly rather than recovering from a kill)."""
    from docker.errors import APIError, NotFound

    gone = []
    for c in containers_of(client, stack_id):
        if (c.get("Labels") or {}).get(LABEL_STACK) != stack_id or (only is not None and not only(c)):
            continue
        if remove(client, c["Id"], grace if c.get("State") == "running" else 0):
            gone.append(name_of(c))
    if not keep_network:
        try:
            net = client.api.inspect_network(network_name(stack_id))
            if (net.get("Labels") or {}).get(LABEL_STACK) == stack_id and not net.get("Containers"):
                client.api.remove_network(net["Id"])
        except (NotFound, APIError):
            pass
    return gone


def stop_grace(stack) -> float:
    """How long a stale container of the stack may take to stop: its services' longest stop_timeout."""
    return max((s.stop_timeout for s in stack.services.values() if s.image is not None), default=stack.stop_timeout)


def image_present(client, image: str) -> bool:
    from docker.errors import ImageNotFound, NotFound

    try:
        client.api.inspect_image(image)
        return True
    except (ImageNotFound, NotFound):
        return False


def pull(client, image: str, progress: Callable[[dict], None] | None = None) -> None:
    """Pull ``image`` (EngineError with the engine's reason when it fails)."""
    from docker.errors import APIError, DockerException

    repo, tag = split_image(image)
    try:
        for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise EngineError(" ".join(str(event.get("error")).split()))
            if progress is not None:
                progress(event)
    except (APIError, DockerException) as e:
        raise EngineError(reason(e)) from None


def split_image(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag or digest); a registry's port is not a tag."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def by_published_port(client, port: int) -> dict | None:
    """The container that publishes ``port`` on the host: {"id", "name", "image", "labels"}."""
    try:
        found = client.api.containers(filters={"publish": str(port)})
    except Exception:
        return None
    for c in found:
        if any(p.get("PublicPort") == port for p in c.get("Ports") or []):
            return {**summary(c), "labels": c.get("Labels") or {}}
    return None


def run_by(client, stack_id: str, helper: int) -> dict | None:
    """The running container a helper process runs, once the engine has started its main
    process: {"id", "name", "image", "pid"} (the pid as the host sees it), else None."""
    found = client.api.containers(filters={"label": [f"{LABEL_STACK}={stack_id}", f"{LABEL_HELPER}={helper}"]})
    for c in found:
        pid = client.api.inspect_container(c["Id"])["State"]["Pid"]
        if pid:
            return {**summary(c), "pid": pid}
    return None


def helper_of(labels: dict) -> int | None:
    """The pid of the helper that runs a container, from its labels."""
    return _int(labels.get(LABEL_HELPER))


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def prepare(stack, selected: Iterable[str], say: Callable[[str], None], clean_stale: bool,
            interactive: bool, keep_stale: bool = False) -> dict[str, str]:
    """Before a stack with containers starts: an engine must answer (Unavailable names the
    services that need one), containers left by a dead earlier run of this stack are removed
    (``clean_stale``; only named with ``keep_stale``), the stack's network exists, and every image is present or pulled.
    Returns {service: why it cannot start} for the images that could not be had."""
    services = [stack.services[n] for n in selected if stack.services[n].image is not None]
    if not services:
        return {}
    try:
        client = connect()
    except Unavailable as e:
        names = ", ".join(s.name for s in services)
        what = "runs as a container" if len(services) == 1 else "run as containers"
        raise Unavailable(f"{names} {what}, but {e}") from None
    if clean_stale and keep_stale:  # the conservative strategy: leftovers stay, ports move around them
        for c in containers_of(client, stack.id):
            say(f"container {name_of(c)} is left from an earlier run; "
                "conservative: not removed")
    elif clean_stale:
        for name in clean(client, stack.id, keep_network=True, grace=stop_grace(stack)):
            say(f"removed container {name}, left from an earlier run")
    ensure_network(client, stack)
    failed: dict[str, str] = {}
    done: dict[str, str | None] = {}
    for svc in services:
        image = svc.image
        if image not in done:
            done[image] = _have(client, image, svc.pull.value, say, interactive)
        if done[image]:
            failed[svc.name] = done[image]
    return failed


def _have(client, image: str, policy: str, say, interactive: bool) -> str | None:
    """Make sure ``image`` is here as ``policy`` says; the reason when it cannot be."""
    present = image_present(client, image)
    if policy == "never":
        return None if present else f'image "{image}" is not present and pull = "never"'
    if present and policy == "missing":
        return None
    try:
        if interactive:
            _pull_with_progress(client, image)
        else:
            pull(client, image)
        say(f"pulled {image}")
        return None
    except EngineError as e:
        if present:  # pull = "always" and the registry is out of reach: the image here will do
            say(f"could not pull {image} ({e}); using the image present")
            return None
        return f"could not pull image {image}: {e}"


def _pull_with_progress(client, image: str) -> None:
    """A pull shown as rich progress bars, one per layer."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True) as progress:
        tasks: dict[str, int] = {}
        head = progress.add_task(f"pulling {image}", total=None)

        def show(event: dict) -> None:
            layer, detail = event.get("id"), event.get("progressDetail") or {}
            if not layer or layer == image.rsplit(":", 1)[-1]:
                progress.update(head, description=f"pulling {image}: {event.get('status', '')}")
                return
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"  {layer}", total=None)
            progress.update(tasks[layer], description=f"  {layer} {event.get('status', '')}",
                            completed=detail.get("current"), total=detail.get("total") or None)

        pull(client, image, show)
