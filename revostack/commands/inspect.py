"""Commands that look without starting anything: check, ports, graph, scan, history."""

from __future__ import annotations

import os
import re
import sys

from revostack.errors import EXIT_FAILED, EXIT_OK, EXIT_PORTS, UsageError
from revostack.commands.common import display, live_ports, load_stack, make_plan, plan_ports, strategy_of


def cmd_check(args) -> int:
    import shutil

    from revostack.commands.honcho import honcho_files
    from revostack.plan import secret_like

    root, procfile, _, values = honcho_files(args)
    if not getattr(args, "file", None) and (values.get("PROCFILE") or os.environ.get("PROCFILE")):
        args.file = str(procfile)  # honcho: PROCFILE selects the Procfile
    stack = load_stack(args, start=root)
    if stack.kind == "procfile":  # honcho's own line, as honcho logs it (on stderr)
        import time

        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] [INFO] Valid procfile detected "
              f"({', '.join(stack.services)})", file=sys.stderr)
    plan = make_plan(stack, list(stack.services))
    out = [f"{display(stack.path)}: stack \"{stack.name}\", {len(stack.services)} service"
           f"{'s' if len(stack.services) != 1 else ''}: valid", "", "start order:"]
    for i, level in enumerate(plan.levels, 1):
        out.append(f"  {i}. " + ", ".join(level))
    warnings = []
    # what every instance is told of the others, built once (as the plan does), not read back
    # from each instance's environment: that is services x services
    environ = set(os.environ)
    shared = {k: v for k, v in plan.ports_env().items() if k not in stack.env and k not in stack.dotenv and k not in environ}
    if shared:
        out += ["", "every service gets:"] + [f"  {k}={shared[k]}" for k in sorted(shared)]
    own_keys = set(stack.dotenv) | set(stack.env)
    looked_up: dict[tuple, bool] = {}
    for inst in plan.instances:
        svc = inst.service
        port = "-" if inst.port.port is None else str(inst.port.port)
        out.append("")
        out.append(f"{inst.name}: port {port}" + (f" ({inst.port.reason})" if inst.port.reason else ""))
        env = inst.env
        if inst.container is not None:
            run = inst.container
            out.append(f"  image: {svc.image}" + (f" (published port {port} -> {run.port} inside)" if run.port else ""))
            out.append(f"  cmd: {_cmd_text(run.cmd) or chr(40) + 'the image' + chr(39) + 's own' + chr(41)}")
            env = run.env  # what the container is told: the others by name, or through host.docker.internal
        else:
            out.append(f"  cmd: {_cmd_text(inst.cmd)}")
        if svc.cwd != stack.root:
            out.append(f"  cwd: {display(svc.cwd)}")
        if svc.depends_on:
            out.append("  depends on: " + ", ".join(f"{d.name} ({d.condition.value})" for d in svc.depends_on))
        if inst.health:
            out.append(f"  health: {inst.health.kind.value} {inst.health.target}" + (" (default)" if inst.health.implicit else ""))
        for v in svc.volumes:
            out.append(f"  volume: {v.spec()}")
        keys = own_keys | set(svc.dotenv) | set(svc.env) | ({svc.port_env} if svc.port is not None else set())
        if inst.container is not None:
            keys |= {k for k in env if k.endswith(("_HOST", "_PORT")) and k != svc.port_env}
        for k in sorted(k for k in keys if k in env):
            v = env[k]
            out.append(f"  {k}={'****' if secret_like(k) and v else v}")
        program = _program(inst.cmd) if inst.container is None else None
        if program and inst.index == 1:
            path_env = inst.env.get("PATH", os.environ.get("PATH", ""))
            key = (program, path_env, svc.cwd)
            found = looked_up.get(key)
            if found is None:  # 200 services running "python": one look-up
                found = looked_up[key] = bool(shutil.which(program, path=path_env) or (
                    "/" in program and os.access(svc.cwd / program, os.X_OK)) or _is_shell_builtin(program))
            if not found:
                warnings.append(f"warning: {svc.name}: program \"{program}\" not found on PATH or in {display(svc.cwd)}")
    from revostack.plan import loopback_warnings

    warnings += loopback_warnings(stack, stack.services)
    print("\n".join(out))
    for w in warnings:
        print(w, file=sys.stderr)
    if plan.failures:
        for f in plan.failures:
            print(f"error: {f}", file=sys.stderr)
        return EXIT_PORTS
    return EXIT_OK


_SAFE_WORD = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def _cmd_text(cmd) -> str:
    return cmd if isinstance(cmd, str) else _joined(cmd)


def _joined(argv) -> str:
    """``shlex.join``, without importing shlex when no word needs quoting (the usual case)."""
    if all(_SAFE_WORD.fullmatch(a) for a in argv):
        return " ".join(argv)
    import shlex

    return shlex.join(argv)


def _program(cmd) -> str | None:
    if isinstance(cmd, str) and not any(c in cmd for c in "'\"\\"):
        words = cmd.split()  # no quoting: the shell splits it as str.split does (shlex is slow)
    else:
        import shlex

        try:
            words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        except ValueError:
            return None
    for w in words:
        if w == "exec" or ("=" in w and not w.startswith(("/", "."))):
            continue
        return None if w.startswith("$") else w
    return None


def _is_shell_builtin(word: str) -> bool:
    return word in {"cd", "echo", "exec", "export", "printf", "read", "set", "test", "trap", "true", "false",
                    "while", "for", "if", "until", "[", ":", ".", "source", "sleep", "wait", "exit", "eval", "ulimit",
                    "umask", "{", "("}


def cmd_ports(args) -> int:
    from revostack.stackfile import env_prefix

    stack = load_stack(args)
    live = live_ports(stack, when_down="no stack answers on the control socket: showing the plan instead")
    rows = []
    if live is not None:
        instances = live
        is_live = True
    else:
        from revostack.plan import in_order

        selected, ports = plan_ports(stack, list(stack.services), strategy=strategy_of(args))  # no env needed
        is_live = False
        instances = []
        for svc, name, _ in in_order(stack, stack.levels(selected)):
            if svc.port is None:
                continue
            choice = ports[name]
            instances.append({"instance": name, "service": svc.name, "env": svc.port_env,
                              "preferred": choice.preferred, "assigned": choice.port, "reason": choice.reason,
                              "holder": choice.holder.to_json() if choice.holder else None})
            if svc.image is not None:
                instances[-1]["container_port"] = svc.container_port
            if svc.handoff.value != "none":
                instances[-1]["handoff"] = svc.handoff.value
                if svc.handoff.value == "proxy":
                    instances[-1]["private"] = None
    failed = [i for i in instances if i["assigned"] is None]
    if args.json:
        import json

        print(json.dumps({"stack": stack.name, "live": is_live, "instances": instances}, indent=2))
    elif args.env:
        seen = set()
        for i in instances:
            if i["assigned"] is None:
                continue
            svc = stack.services.get(i["service"])
            names = [env_prefix(i["service"])] if i["instance"].endswith(".1") else []
            if svc is not None and svc.scale > 1:
                names.append(env_prefix(i["instance"]))
            for n in names:
                if n not in seen:
                    seen.add(n)
                    print(f"export {n}_PORT={i['assigned']}")
    else:
        for i in instances:
            why = i["reason"] or ""
            if i.get("handoff"):
                behind = f", private {i['private']}" if i.get("private") else ""
                why = "; ".join(w for w in (why, f"public port ({i['handoff']}{behind})") if w)
            rows.append([i["instance"], i["preferred"], "-" if i["assigned"] is None else i["assigned"], i["env"], why])
        if rows:
            from revostack.output import table

            print(table(["instance", "preferred", "assigned", "env", "why"], rows))
        else:
            print("no service declares a port")
        print("(live: the stack is running)" if is_live else "(plan: what `revostack up` would assign now)")
    return EXIT_PORTS if failed and not is_live else EXIT_OK


def cmd_graph(args) -> int:
    stack = load_stack(args)
    from revostack import render

    print(render.graph(stack, args.format))
    return EXIT_OK


def cmd_scan(args) -> int:
    import json

    from revostack import output, probe
    from revostack.rundir import RunDir

    stack = load_stack(args)
    rd = RunDir(stack)
    world = probe.ProbeWorld(stack.host, rd.ownership(running=rd.is_locked()))
    entries: list[tuple[int, str | None, str]] = []
    if args.range:
        lo, _, hi = args.range.partition("-")
        if not (lo.isdigit() and hi.isdigit()) or not (1 <= int(lo) <= int(hi) <= 65535):
            raise UsageError(f'bad range "{args.range}": use A-B with 1 <= A <= B <= 65535')
        entries = [(p, None, "range") for p in range(int(lo), int(hi) + 1)]
    else:
        seen = set()
        for svc in stack.services.values():
            if not svc.port:
                continue
            for idx, _inst in enumerate(svc.instances, 1):
                pref = svc.port + idx - 1
                if pref not in seen:
                    seen.add(pref)
                    entries.append((pref, svc.name, "preferred"))
            for p in svc.fallback:
                if p not in seen:
                    seen.add(p)
                    entries.append((p, svc.name, "fallback"))
    listening = probe.listeners()
    rows = []
    taken_preferred = False
    for port, service, role in entries:
        held = port in listening and any(probe.conflicts(ip, stack.host) for ip, _ in listening[port])
        if not held and not args.range:
            held = not world.is_free(port)
        holder = world.holder(port) if held else None
        if held and role == "preferred" and (holder is None or holder.cls != "ours-running"):
            taken_preferred = True
        rows.append({"port": port, "service": service, "role": role, "status": "held" if held else "free",
                     "holder": holder.to_json() if holder else None})
    if args.json:
        print(json.dumps({"ports": rows}, indent=2))
    elif not args.range and not args.all:
        print(output.table(["service", "port", "status", "fallbacks"], _compact_scan(rows)) if rows
              else "no service declares a port")
    else:
        shown = [r for r in rows if r["status"] == "held" or not args.range]
        print(output.table(["port", "service", "role", "status", "pid", "user", "name", "class", "command"], [
            [r["port"], r["service"] or "-", r["role"], r["status"],
             *((r["holder"]["pid"] or "?", r["holder"]["user"] or "?", _holder_name(r["holder"]), r["holder"]["class"],
                _short(r["holder"]["cmdline"])) if r["holder"] else ("", "", "", "", ""))] for r in shown]))
        if args.range:
            free = sum(1 for r in rows if r["status"] == "free")
            print(f"{free} of {len(rows)} ports free in {args.range}")
    return EXIT_FAILED if taken_preferred else EXIT_OK


def _compact_scan(rows: list[dict]) -> list[list[str]]:
    """One row per preferred port; a service's fallbacks summed up as ranges on its first row
    (``15433–15452 free``), with any taken one named by its holder."""
    out = []
    for service in dict.fromkeys(r["service"] for r in rows):
        mine = [r for r in rows if r["service"] == service]
        fallbacks = [r for r in mine if r["role"] == "fallback"]
        free = _ranges([r["port"] for r in fallbacks if r["status"] == "free"])
        held = [f"{r['port']} held by {_who(r['holder'])}" for r in fallbacks if r["status"] == "held"]
        summary = "; ".join(([f"{free} free"] if free else []) + held) or "none"
        for i, r in enumerate(r for r in mine if r["role"] == "preferred"):
            status = f"held by {_who(r['holder'])}" if r["status"] == "held" else "free"
            out.append([service if i == 0 else "", r["port"], status, summary if i == 0 else ""])
    return out


def _who(holder: dict | None) -> str:
    return f"{_holder_text(holder)} ({holder.get('class')})" if isinstance(holder, dict) else "an unknown process"


def _ranges(ports: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1–3, 5``."""
    spans: list[list[int]] = []
    for p in sorted(ports):
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in spans)


def _short(cmd: str | None, width: int = 60) -> str:
    if not cmd:
        return ""
    cmd = " ".join(cmd.split())
    return cmd if len(cmd) <= width else cmd[: width - 1] + "…"


def cmd_history(args) -> int:
    import json

    from revostack import output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    items = RunDir(stack).read_history()
    if args.n is not None:
        items = items[-args.n:] if args.n > 0 else []
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    if not items:
        print("no port conflicts recorded")
        return EXIT_OK
    print(output.table(["time", "service", "port", "holder", "class", "strategy", "action", "result"], [
        [i.get("time", ""), i.get("service") or "-", i.get("port") or "-",
         _holder_text(i.get("holder")), i.get("class", ""), i.get("strategy", ""), i.get("action", ""),
         _short(str(i.get("result", "")), 40)] for i in items]))
    return EXIT_OK


def _holder_name(h: dict) -> str:
    c = h.get("container")
    return f"container {c.get('name')} ({c.get('image')})" if isinstance(c, dict) else (h.get("name") or "?")


def _holder_text(h) -> str:
    if not isinstance(h, dict):
        return "-"
    c = h.get("container")
    if isinstance(c, dict):
        return f"container {c.get('name')} ({c.get('image')})"
    return f"pid {h.get('pid')} {h.get('name') or ''}".strip()
