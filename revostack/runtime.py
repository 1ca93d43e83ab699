"""Entry points of the runtime for the CLI: build the sink and the supervisor and run them."""

from __future__ import annotations

import sys

from revostack import procs
from revostack.plan import Plan
from revostack.sink import Sink, announce_moves
from revostack.supervisor import Options, Supervisor


async def up(plan: Plan, rundir, *, color: bool, timestamps: bool = True, abort_on_exit: bool = False,
             watch: bool = True, dashboard: bool = False, reservations=None, strategy=None, detached: bool = False,
             unavailable: dict[str, str] | None = None) -> int:
    rundir.ensure()
    too_few = procs.ensure_open_files(len(plan.instances))
    sink = Sink(sys.stdout.buffer, color=color, timestamps=timestamps, log_dir=rundir.logs,
                echo=not (dashboard or detached))  # detached: output only to the log files
    sup = Supervisor(plan, sink, rundir, Options(abort_on_exit=abort_on_exit, watch=watch, strategy=strategy,
                                                 detached=detached), reservations=reservations,
                     unavailable=unavailable)
    announce_moves(sink, plan)
    if too_few:
        sink.system(too_few)
    if dashboard:
        from revostack import dashboard as dash

        return await dash.run_with(sup)
    return await sup.run()
