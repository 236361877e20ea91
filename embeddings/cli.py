"""`ice`: the only place that turns errors into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
from pathlib import Path

from . import config as config_module
from .config import FAST, Config, option_type
from .errors import IceError
from .run_dir import SKIPPED


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise IceError(f"{self.prog}: {message} (see --help)")


def _field_help() -> dict[str, str]:
    """The comment beside (or just above) each Config field: written once, in config.py."""
    helps, above = {}, []
    for line in inspect.getsource(config_module.Config).splitlines():
        field = re.match(r"\s+(\w+): [\w| ]+ = [^#]*(?:# (.+))?$", line)
        comment = re.match(r"\s+# (?!---)(.+)$", line)
        if comment:
            above.append(comment.group(1))
        elif field:
            helps[field.group(1)] = field.group(2) or " ".join(above)
            above = []
        else:
            above = []
    return helps


def add_config_options(p: argparse.ArgumentParser) -> None:
    helps = _field_help()
    g = p.add_argument_group("pipeline settings (saved in the run's manifest)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        text = (helps[f.name] if f.default is None and "unset:" in helps[f.name]
                else f"{helps[f.name]} (default: {'automatic' if f.default is None else f.default})")
        typ = option_type(f.name)
        if typ is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            g.add_argument(flag, dest=f.name, type=typ, default=None, metavar=f.name.upper(), help=text)
    g.add_argument("--fast", action="store_true",
                   help=f"a short training budget for quick looks: {', '.join(f'{k}={v}' for k, v in FAST.items())}"
                        " unless given")


def config_from_args(args, base: dict | None = None) -> Config:
    start = {**(base or {}), **(FAST if args.fast else {})}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return Config(**{**start, **given}).validate()


def build_parser() -> Parser:
    p = Parser(prog="ice", description="Image Cluster Explorer: cluster a folder of unlabelled images and explore it.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    e = sub.add_parser("embed", help="train, embed, cluster and map a folder of images")
    e.add_argument("input", type=Path, help="folder of images (read recursively)")
    e.add_argument("--out", "-o", type=Path, required=True, help="run directory to write")
    again = e.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue a killed run in --out from its last finished step")
    again.add_argument("--force", action="store_true", help="start over in a non-empty --out")
    add_config_options(e)

    d = sub.add_parser("demo", help="run the pipeline on scikit-learn's 1,797 digits, then explore them")
    d.add_argument("--out", "-o", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    d.add_argument("--no-serve", dest="serve", action="store_false", help="do not start the explorer")
    d.add_argument("--force", action="store_true", help="recompute even if the demo run is complete")
    d.add_argument("--port", type=int, default=8050, help="port of the explorer (default: 8050)")
    add_config_options(d)

    x = sub.add_parser("explore", help="serve the explorer over a run directory")
    x.add_argument("run_dir", type=Path, help="a run directory made by ice embed or ice demo")
    x.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    x.add_argument("--port", type=int, default=8050, help="port to serve on (default: 8050)")
    x.add_argument("--read-only", action="store_true", help="viewers cannot change names or groups")
    who = x.add_mutually_exclusive_group()
    who.add_argument("--auth", metavar="USER:PASSWORD", help="require HTTP basic auth with this user and password")
    who.add_argument("--auth-file", type=Path, metavar="PATH", help="like --auth, from a file holding one line USER:PASSWORD")
    x.add_argument("--workers", type=int, metavar="N",
                   help="serve with gunicorn, N processes (for several people, or beyond localhost); "
                        "default: Flask's development server")

    c = sub.add_parser("export", help="write the run's images, clusters and groups as CSV")
    c.add_argument("run_dir", type=Path, help="a run directory made by ice embed or ice demo")
    c.add_argument("--output", "-o", type=Path, required=True,
                   help="CSV file to write (replaced atomically; through a symlink); - for standard output")
    c.add_argument("--group", help="only images in this saved group (a name that starts with -: --group=-name)")
    c.add_argument("--cluster", type=int, help="only images in this cluster")
    c.add_argument("--clustering", default="run", metavar="KEY",
                   help="which clustering: 'run' (the job's, default) or a re-clustering made in the "
                        "explorer, k<K> (k12 for K=12)")
    return p


def cmd_embed(args) -> None:
    from .pipeline import run_embed, summary_line

    cfg = config_from_args(args)
    manifest = run_embed(args.input, args.out, cfg, resume=args.resume, force=args.force)
    print(summary_line(manifest))
    print(f"run directory: {args.out}")
    folders = manifest["counts"].get("unlisted_folders")
    if manifest["counts"]["skipped"] or folders:
        print(f"skipped {'files and folders' if folders else 'files'}, each with its reason: {args.out / SKIPPED}")
    carried = manifest.get("carried_groups")
    if carried and carried["of"]:
        print(f"groups carried over by path: {carried['groups']} of {carried['of']} ({carried['images']} images; "
              f"{carried['dropped']} no longer in the run)")
    named = manifest.get("carried_names")
    if named and named["of"]:
        print(f"cluster names carried over: {named['names']} of {named['of']} (to the new cluster that shares "
              f"more than half its images with the named one)")
    print(f"to look at it: ice explore {args.out}")


def cmd_demo(args) -> None:
    from .demo import DEMO_CONFIG, write_digits
    from .pipeline import run_embed, summary_line

    cfg = config_from_args(args, base=DEMO_CONFIG)
    images = write_digits(args.out.parent / "digits")
    manifest = run_embed(images, args.out, cfg, resume=not args.force, force=args.force)
    print(summary_line(manifest))
    print(f"run directory: {args.out}")
    if args.serve:
        from explorer.serve import serve

        serve(args.out, port=args.port)
    else:
        print(f"to look at it: ice explore {args.out}")


def cmd_explore(args) -> None:
    from explorer.serve import parse_auth, read_auth_file, serve

    auth = parse_auth(args.auth) if args.auth is not None else (
        read_auth_file(args.auth_file) if args.auth_file else None)
    serve(args.run_dir, host=args.host, port=args.port, read_only=args.read_only,
          auth=auth, workers=args.workers)


def cmd_export(args) -> None:
    from explorer.export import STDOUT_NAMES, export_csv

    n = export_csv(args.run_dir, args.output, group=args.group, cluster=args.cluster, clustering=args.clustering)
    to_stdout = str(args.output) in STDOUT_NAMES
    print(f"wrote {n:,} row{'' if n == 1 else 's'} to {'standard output' if to_stdout else args.output}",
          file=sys.stderr if to_stdout else sys.stdout)  # keep the CSV on stdout clean


AFTER_INTERRUPT = {  # what to do after Ctrl-C, by command
    "embed": "; `ice embed --resume` continues from the last finished step",
    "demo": "; the same `ice demo` command again continues from the last finished step",
}


def main(argv: list[str] | None = None) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        {"embed": cmd_embed, "demo": cmd_demo, "explore": cmd_explore, "export": cmd_export}[command](args)
    except IceError as e:
        print(f"ice: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ice: interrupted{AFTER_INTERRUPT.get(command, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ice export -o - | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except OSError as e:  # the system refused: a folder that cannot be made, no permission, a full disk
        where = f": {e.filename}" if e.filename else ""
        print(f"ice: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
