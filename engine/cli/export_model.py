"""``export-model``: a trained model (a run of the database, or a model file) as NIR or with 8/4-bit weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli._common import CliError, check_output, output_file, table, whole


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-model", help="a trained model as NIR (neuromorphic hardware) or with 8/4-bit weights"
    )
    parser.add_argument("model", help="a run id of the database, or a model file (.safetensors)")
    parser.add_argument("--format", choices=["nir", "int8", "int4"], help="the form to write (with --out)")
    parser.add_argument("--out", type=output_file, help="file to write")
    parser.add_argument(
        "--report",
        action="store_true",
        help="whether the model's NIR graph deploys on snntorch, spikingjelly, norse and Speck (sinabs) as it is, "
        "and which of each target's rules it breaks",
    )
    parser.add_argument(
        "--check",
        type=whole(0, 10_000),
        default=8,
        metavar="IMAGES",
        help="NIR: read the file back (snntorch) and compare it with the engine on this many test images (0: skip)",
    )
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> None:
    if (args.format is None) != (args.out is None) or (args.format is None and not args.report):
        raise CliError("give --format and --out to write the model, --report to check its targets, or both")
    from engine import api, deploy

    if args.model.isdigit():
        store = api.get_store(args.db, create=False, readonly=True)  # exporting reads the database, never makes one
        run_id = int(args.model)
        source = api.checkpoint_path(run_id, store=store)
        accuracy = api.measured_accuracy(run_id, args.format, store=store)
    else:
        source, accuracy = Path(args.model), None
    if args.format is not None:
        check_output(args.out, args, source)  # before the export's work: never over the model it reads
        out = deploy.export(source, args.format, args.out, accuracy=accuracy)
        print(f"wrote {out} ({args.format}, {out.stat().st_size / 1e6:.2f} MB)")
        if args.format == "nir" and args.check:
            print(deploy.check_file(source, out, images=args.check))
    if args.report:
        print(report_text(deploy.deploy_report(deploy.to_nir(source))))


def report_text(reports) -> str:
    """One table of targets, then every rule of each with a mark, and where the chip's rules come from."""
    rows = [[t.target, "as it is" if t.deploys else "no", f"{len(t.broken)} of {len(t.rules)}"] for t in reports]
    lines = [table(rows, ["target", "deploys", "rules broken"])]
    for t in reports:
        lines.append(f"\n{t.target}: {t.how}")
        lines += [f"  {'ok  ' if r.ok else 'FAIL'} {r.rule}: {r.detail}" for r in t.rules]
        lines.append(f"  note: {t.note}" + (f"\n  rules from {t.source}" if t.source else ""))
    return "\n".join(lines)
