"""Text renderings of a stack: the dependency graph and new Stackfiles. Pure (tomlkit only)."""

from __future__ import annotations

import re

from revostack.stackfile import Stack


def graph(stack: Stack, fmt: str = "tree") -> str:
    return {"tree": _tree, "dot": _dot, "mermaid": _mermaid}[fmt](stack)


def _tree(stack: Stack) -> str:
    needed = {d.name for s in stack.services.values() for d in s.depends_on}
    roots = [n for n in stack.services if n not in needed] or list(stack.services)
    lines: list[str] = []

    def walk(name: str, prefix: str, last: bool, label: str, seen: tuple[str, ...]) -> None:
        branch = "" if not seen else ("└── " if last else "├── ")
        lines.append(f"{prefix}{branch}{name}{label}")
        deps = stack.services[name].depends_on
        child_prefix = prefix + ("" if not seen else ("    " if last else "│   "))
        for i, d in enumerate(deps):
            walk(d.name, child_prefix, i == len(deps) - 1, f" ({d.condition.value})", seen + (name,))

    for r in roots:
        walk(r, "", True, "", ())
    return "\n".join(lines)


def _id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _dot(stack: Stack) -> str:
    out = [f'digraph "{stack.name}" {{', "  rankdir=LR;"]
    for name in stack.services:
        out.append(f'  "{name}";')
    for name, s in stack.services.items():
        for d in s.depends_on:
            out.append(f'  "{name}" -> "{d.name}" [label="{d.condition.value}"];')
    out.append("}")
    return "\n".join(out)


def _mermaid(stack: Stack) -> str:
    out = ["graph LR"]
    for name in stack.services:
        out.append(f"  {_id(name)}[{name}]")
    for name, s in stack.services.items():
        for d in s.depends_on:
            out.append(f"  {_id(name)} -->|{d.condition.value}| {_id(d.name)}")
    return "\n".join(out)


def stackfile_template(name: str) -> str:
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Stackfile.toml: the services of this project (see docs/stackfile.md)."))
    doc.add(tomlkit.comment("Run it with `revostack up`; check it with `revostack check`."))
    stack = tomlkit.table()
    stack.add("name", name)
    stack["name"].comment("shown in every revostack command")
    doc.add("stack", stack)
    services = tomlkit.table(is_super_table=True)
    web = tomlkit.table()
    web.add("cmd", "python -m http.server $PORT")
    web["cmd"].comment("$PORT is the port revostack assigns")
    web.add("port", 8000)
    web["port"].comment("preferred; 8001-8020 are tried when it is taken")
    services.add("web", web)
    doc.add("services", services)
    return tomlkit.dumps(doc)


def stackfile_from_procfile(entries: list[tuple[str, str]], name: str, base: int = 5000) -> str:
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Stackfile.toml written by `revostack init` from a Procfile."))
    doc.add(tomlkit.comment("Ports follow foreman's rule (base + 100 per process type); add depends_on and"))
    doc.add(tomlkit.comment("health checks as your services need them (see docs/stackfile.md)."))
    stack = tomlkit.table()
    stack.add("name", name)
    doc.add("stack", stack)
    services = tomlkit.table(is_super_table=True)
    for i, (proc, cmd) in enumerate(entries):
        t = tomlkit.table()
        t.add("cmd", cmd)
        port = base + 100 * i
        t.add("port", port)
        t["port"].comment("the port $PORT carries; remove it if this process does not listen")
        if "$PORT" not in cmd and "${PORT}" not in cmd:
            t.add("health", tomlkit.inline_table())
            t["health"].update({"cmd": "true"})
            t["health"].comment("does not read $PORT: no TCP check")
        services.add(proc, t)
    doc.add("services", services)
    return tomlkit.dumps(doc)
