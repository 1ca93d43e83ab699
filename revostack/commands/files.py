"""Commands that write files: init, export."""

from __future__ import annotations

from pathlib import Path

from revostack.errors import EXIT_OK, UsageError
from revostack.commands.common import PROCFILE, STACKFILE, base_port, load_stack, make_plan


def cmd_init(args) -> int:
    from revostack import render

    target = Path(args.output or STACKFILE)
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    source = Path(args.source) if args.source else (Path(PROCFILE) if Path(PROCFILE).is_file() else None)
    if source is not None:
        from revostack import procfile
        from revostack.stackfile import read_text

        entries = procfile.parse(read_text(source), str(source))
        text = render.stackfile_from_procfile(entries, Path.cwd().resolve().name, base_port(args.port))
    else:
        text = render.stackfile_template(Path.cwd().resolve().name)
    target.write_text(text)
    print(f"wrote {target}" + (f" from {source}" if source else ""))
    return EXIT_OK


def cmd_export(args) -> int:
    from revostack import export
    from revostack import plan as planmod

    if args.format not in export.FORMATS:
        raise UsageError(f'unknown format "{args.format}": choose one of {", ".join(export.FORMATS)}')
    stack = load_stack(args)
    if args.port_base is not None:
        # every port fixed by formula, whatever the machine holds now: base + 100 per service
        fixed = {}
        for i, svc in enumerate(stack.services.values()):
            for idx, inst in enumerate(svc.instances, 1):
                if svc.port is not None:
                    p = args.port_base + 100 * i + idx - 1
                    fixed[inst] = planmod.PortChoice(p, p)
        plan = planmod.build(stack, set(stack.services), fixed, {})
    else:
        plan = make_plan(stack, list(stack.services), environ={})  # the stack's variables only
    files = export.render(plan, args.format, app=args.app or stack.name, user=args.user, log_dir=args.log_dir,
                          image=args.image, namespace=args.namespace)
    outdir = Path(args.outdir)
    clash = [outdir / name for name in files if (outdir / name).exists()]
    if clash and not args.force:
        raise UsageError(f"{clash[0]} already exists (use --force to overwrite)")
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (outdir / name).write_text(text)
        print(f"wrote {outdir / name}")
    return EXIT_OK
