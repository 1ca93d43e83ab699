"""Entry points of the runtime for the CLI: build the sink and the supervisor and run them."""

from __future__ import annotations

import sys

from revostack.plan import Plan
from revostack.sink import Sink
from revostack.supervisor import Options, Supervisor


async def up(plan: Plan, rundir, *, color: bool, timestamps: bool = True, abort_on_exit: bool = False,
             watch: bool = True, dashboard: bool = False, reservations=None, strategy=None, detached: bool = False) -> int:
    rundir.ensure()
    sink = Sink(sys.stdout.buffer, color=color, timestamps=timestamps, log_dir=rundir.logs,
                echo=not (dashboard or detached))  # detached: output only to the log files
    sup = Supervisor(plan, sink, rundir, Options(abort_on_exit=abort_on_exit, watch=watch, strategy=strategy,
                                                 detached=detached), reservations=reservations)
    _announce_moves(sink, plan)
    if dashboard:
        from revostack import dashboard as dash

        return await dash.run_with(sup)
    return await sup.run()


async def start(plan: Plan, *, color: bool, prefix: bool = True, quiet: set[str] | None = None) -> int:
    """``revostack start``: honcho's rules — the first exit stops everything, its code is ours."""
    quiet_instances = {i.name for i in plan.instances if i.service.name in (quiet or set()) or i.name in (quiet or set())}
    sink = Sink(sys.stdout.buffer, color=color, prefix=prefix, quiet=quiet_instances)
    sup = Supervisor(plan, sink, None, Options(abort_on_exit=True, honcho=True, watch=False))
    _announce_moves(sink, plan)
    return await sup.run()


def _announce_moves(sink: Sink, plan: Plan) -> None:
    """A ``system`` line for every instance that got another port than it asked for."""
    from revostack.plan import Action

    for inst in plan.instances:
        c = inst.port
        if c.action == Action.MOVED and c.port is not None and c.preferred and c.port != c.preferred:
            who = c.holder.describe() if c.holder is not None else "another process"
            sink.system(f"{inst.name}: port {c.preferred} is in use by {who}: moved to {c.port}")
