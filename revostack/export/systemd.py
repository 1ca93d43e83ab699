"""systemd: one unit per instance and a target."""

from __future__ import annotations

import re

from revostack.export import (ExportError, _absolute_program, _cwd, _header, _oneshots, duration,
                              exported_env, shell_argv, unit_name)
from revostack.plan import Plan
from revostack.stackfile import Restart


# -- systemd -----------------------------------------------------------------------------------

_SD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "%": "%%"}
_SD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def _sd_escape(text: str, dollar: bool) -> str:
    out = []
    for ch in text:
        if ch in _SD_ESCAPES:
            out.append(_SD_ESCAPES[ch])
        elif ch == "$" and dollar:
            out.append("$$")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _sd_word(word: str) -> str:
    """One word of ``ExecStart=``: quoted unless plain; ``$`` and ``%`` doubled."""
    if word == ";":
        return "\\;"  # a lone ";" would separate commands
    if _SD_SAFE.fullmatch(word):
        return word
    return '"' + _sd_escape(word, dollar=True) + '"'


def _sd_plain(value: str, what: str) -> str:
    """A raw value (a path, a user, a description): specifiers escaped, one line."""
    if "\n" in value or "\r" in value or value != value.strip():
        raise ExportError(f"systemd cannot express the {what} {value!r}")
    return value.replace("%", "%%")


def render(plan: Plan, app: str, user: str | None) -> dict[str, str]:
    stack = plan.stack
    target = f"{app}.target"
    oneshots = _oneshots(stack)
    selected = stack.selection()
    units = {i.name: f"{unit_name(app, i)}.service" for i in plan.instances}
    files: dict[str, str] = {}
    for inst in plan.instances:
        svc = inst.service
        oneshot = svc.name in oneshots
        unit = _header("#", plan, "systemd", [
            "systemd has no health checks: After= waits until a dependency has started (or, for a",
            "run-once job, has exited), not until it is healthy.",
        ])
        unit += ["", "[Unit]", f"Description={_sd_plain(f'{stack.name} {inst.name} (revostack)', 'description')}",
                 f"PartOf={target}"]
        deps = [units[i.name] for d in svc.depends_on for i in plan.of_service(d.name)]
        if deps:
            unit.append("After=" + " ".join(deps))
            unit.append("Requires=" + " ".join(deps))
        if svc.restart is not Restart.NO:
            unit += ["StartLimitIntervalSec=60", f"StartLimitBurst={svc.max_restarts + 1}"]
        restart = svc.restart.value
        unit += ["", "[Service]"]
        if oneshot:
            unit += ["Type=oneshot", "RemainAfterExit=yes"]
            if svc.restart is Restart.ALWAYS:
                restart = "on-failure"  # systemd refuses Restart=always for Type=oneshot
        else:
            unit.append("Type=simple")
        unit.append(f"WorkingDirectory={_sd_plain(str(_cwd(inst)), 'directory')}")
        for key, value in exported_env(plan, inst).items():
            unit.append(f'Environment="{_sd_escape(f"{key}={value}", dollar=False)}"')
        argv = _absolute_program(shell_argv(inst.cmd), _cwd(inst))
        unit += [
            "ExecStart=" + " ".join(_sd_word(a) for a in argv),
            f"Restart={restart}",
            f"RestartSec={duration(svc.backoff)}",
            "KillMode=control-group",
            f"KillSignal={svc.stop_signal}",
            f"TimeoutStopSec={duration(svc.stop_timeout)}",
            f"SyslogIdentifier={unit_name(app, inst)}",
        ]
        if user:
            unit.append(f"User={_sd_plain(user, 'user')}")
        unit += ["", "[Install]", f"WantedBy={target}"]
        files[units[inst.name]] = "\n".join(unit) + "\n"
    wants = [units[i.name] for i in plan.instances if i.service.name in selected]
    text = _header("#", plan, "systemd", [
        "Copy these files to /etc/systemd/system/, then: systemctl daemon-reload &&",
        f"systemctl enable --now {target}. `systemctl stop {target}` stops every service.",
    ])
    text += ["", "[Unit]", f"Description={_sd_plain(f'{stack.name} (revostack stack)', 'description')}"]
    if wants:
        text.append("Wants=" + " ".join(wants))
    text += ["", "[Install]", "WantedBy=multi-user.target"]
    files[target] = "\n".join(text) + "\n"
    return files
