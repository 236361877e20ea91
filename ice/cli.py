"""`ice`: the only place that turns errors into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from .errors import IceError
from .run_dir import SKIPPED


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise IceError(f"{self.prog}: {message} (see --help)")


def add_config_options(p: argparse.ArgumentParser) -> None:
    from embeddings.config import FAST, Config, option_type

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(Config)}
    g = p.add_argument_group("pipeline settings (saved in the run's manifest)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        text = (
            helps[f.name]
            if f.default is None and "unset:" in helps[f.name]
            else f"{helps[f.name]} (default: {'automatic' if f.default is None else f.default})"
        )
        typ = option_type(f.name)
        if typ is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            g.add_argument(flag, dest=f.name, type=typ, default=None, metavar=f.name.upper(), help=text)
    g.add_argument(
        "--fast",
        action="store_true",
        help=f"a short training budget for quick looks: {', '.join(f'{k}={v}' for k, v in FAST.items())} unless given",
    )


def config_from_args(args, base: dict | None = None):
    from embeddings.config import FAST, Config

    start = {**(base or {}), **(FAST if args.fast else {})}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return Config(**{**start, **given}).validate()


def build_parser() -> Parser:
    from embeddings.config import TeachSettings

    p = Parser(prog="ice", description="Image Cluster Explorer: cluster a folder of unlabelled images and explore it.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    e = sub.add_parser("embed", help="train, embed, cluster and map a folder of images")
    e.add_argument(
        "input", type=_place, help="folder of images (read recursively), or s3://bucket/prefix (--engine ray)"
    )
    e.add_argument(
        "--out",
        "-o",
        type=_place,
        required=True,
        help="run directory to write, or s3://bucket/prefix (built in --staging, then uploaded)",
    )
    e.add_argument(
        "--staging",
        type=Path,
        metavar="DIR",
        help="with --out s3://...: where the run is built before it is uploaded (default: "
        "~/.cache/ice/runs/BUCKET/PREFIX; with --engine ray on several machines, a folder they all share)",
    )
    again = e.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue a killed run in --out from its last finished step"
    )
    again.add_argument("--force", action="store_true", help="start over in a non-empty --out")
    add_config_options(e)

    d = sub.add_parser("demo", help="run the pipeline on scikit-learn's 1,797 digits, then explore them")
    d.add_argument("--out", "-o", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    d.add_argument("--no-serve", dest="serve", action="store_false", help="do not start the explorer")
    d.add_argument("--force", action="store_true", help="recompute even if the demo run is complete")
    d.add_argument("--port", type=int, default=8050, help="port of the explorer (default: 8050)")
    add_config_options(d)

    x = sub.add_parser("explore", help="serve the explorer over a run directory")
    x.add_argument("run_dir", type=_place, help="a run directory made by ice embed or ice demo, or s3://bucket/prefix")
    x.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    x.add_argument("--port", type=int, default=8050, help="port to serve on (default: 8050)")
    x.add_argument("--read-only", action="store_true", help="viewers cannot change names or groups")
    who = x.add_mutually_exclusive_group()
    who.add_argument("--auth", metavar="USER:PASSWORD", help="require HTTP basic auth with this user and password")
    who.add_argument(
        "--auth-file", type=Path, metavar="PATH", help="like --auth, from a file holding one line USER:PASSWORD"
    )
    x.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve with gunicorn, N processes (for several people, or beyond localhost); "
        "default: Flask's development server",
    )

    c = sub.add_parser("export", help="write the run's images, clusters and groups as CSV")
    c.add_argument("run_dir", type=_place, help="a run directory made by ice embed or ice demo, or s3://bucket/prefix")
    c.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="CSV file to write (replaced atomically; through a symlink); - for standard output",
    )
    c.add_argument("--group", help="only images in this saved group (a name that starts with -: --group=-name)")
    c.add_argument("--cluster", type=int, help="only images in this cluster")
    c.add_argument(
        "--clustering",
        default="run",
        metavar="KEY",
        help="which clustering: 'run' (the job's, default) or a re-clustering made in the "
        "explorer, k<K> (k12 for K=12)",
    )
    a = sub.add_parser(
        "add",
        help="place new images into a run: embedded by its encoder, clustered and mapped without refitting",
        description="Add the images in PATH (folders, read recursively, and files) that the run does not "
        "hold yet. Nothing already in the run changes: its clusters, names, groups and re-clusterings stay, and "
        "each new image takes the cluster of its nearest images. The same command after a kill finishes the "
        "addition once.",
    )
    a.add_argument("run_dir", type=_local_run, help="a run directory made by ice embed or ice demo")
    a.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="folders and image files to add")
    a.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: the run's)")
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to embed (default: auto)")

    t = sub.add_parser(
        "tiles",
        help="build the map's tiles of a run made before they existed, or rebuild them",
        description="Write the quadtree of the run's map (tiles.json, tiles-ids.npy) from which the explorer "
        "gives each view of a large map its points. `ice embed` builds them as a stage; a run without them "
        "opens in the explorer with a sample of its points over its density image.",
    )
    t.add_argument("run_dir", type=_local_run, help="a run directory made by ice embed or ice demo")

    f = sub.add_parser(
        "find",
        help="rank a run's images by a group you show with examples, learning from them",
        description="Fine-tune the run's encoder to tell the images you like from those you do "
        "not (and, weakly, from the rest), then rank every image. The same examples, "
        "run and --seed give the same ranking on a CPU.",
    )
    f.add_argument("run_dir", type=_local_run, help="a run directory made by ice embed or ice demo")
    f.add_argument(
        "--like",
        required=True,
        metavar="FILE",
        help="the images in the group: a file with one path per line, as in items.parquet's path "
        "column, or group:NAME for a saved group (its images marked out count as --unlike)",
    )
    f.add_argument("--unlike", metavar="FILE", help="images not in the group, given the same way")
    f.add_argument("--top", type=int, default=1000, metavar="N", help="how many images to list (default: 1000)")
    f.add_argument(
        "--output",
        "-o",
        default="-",
        metavar="OUT.csv",
        help="CSV to write: image_id,path,score, best first (default: -, standard output)",
    )
    f.add_argument("--save-group", metavar="NAME", help="also save the top N images to this group")
    f.add_argument(
        "--steps", type=int, default=TeachSettings.steps, help=f"training steps (default: {TeachSettings.steps})"
    )
    f.add_argument(
        "--blend",
        type=float,
        default=TeachSettings.blend,
        help="the share of each score from a logistic regression of the examples on the run's embeddings "
        f"and manifold, the rest from the network (default: {TeachSettings.blend}; 0: the network alone)",
    )
    f.add_argument("--seed", type=int, default=0, help="seeds the training (default: 0)")
    f.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    return p


def _place(text: str) -> Path | str:
    """A folder (of images, or a run directory) as a Path; a place on an object store
    (s3://...) as given."""
    from .storage import is_remote

    return text if is_remote(text) else Path(text)


def _local_run(text: str) -> Path:
    """A run directory this command changes: on this machine's file system."""
    from .storage import is_remote

    if is_remote(text):
        raise IceError(
            f"{text}: this command changes a run, so it needs a run directory on this machine; "
            "a run on an object store is written only by `ice embed --out s3://...`"
        )
    return Path(text)


def cmd_embed(args) -> None:
    from embeddings.pipeline import run_embed, summary_line

    from .storage import is_remote

    if args.input_list is not None:  # kept in the run's config: a --resume from elsewhere finds it
        args.input_list = str(Path(args.input_list).absolute())
    remote = is_remote(args.out)
    if args.staging is not None and not remote:
        raise IceError("--staging: only with --out s3://... (the run is built there, then uploaded)")
    if remote:
        from .remote_run import cache_folder

        folder = args.staging if args.staging is not None else cache_folder(args.out)
    else:
        folder = args.out
    cfg = config_from_args(args)
    manifest = run_embed(args.input, folder, cfg, resume=args.resume, force=args.force)
    print(summary_line(manifest))
    if remote:
        from .remote_run import publish
        from .run_dir import lock_run_dir

        lock = lock_run_dir(folder)  # no other job starts in the staging folder while it is uploaded
        try:
            files = publish(folder, args.out)
        finally:
            if lock is not None:
                os.close(lock)
        print(f"run directory: {args.out} ({files:,} files uploaded from {folder})")
    else:
        print(f"run directory: {args.out}")
    folders = manifest["counts"].get("unlisted_folders")
    if manifest["counts"]["skipped"] or folders:
        print(f"skipped {'files and folders' if folders else 'files'}, each with its reason: {folder / SKIPPED}")
    carried = manifest.get("carried_groups")
    if carried and carried["of"]:
        print(
            f"groups carried over by path: {carried['groups']} of {carried['of']} ({carried['images']} images; "
            f"{carried['dropped']} no longer in the run)"
        )
    named = manifest.get("carried_names")
    if named and named["of"]:
        print(
            f"cluster names carried over: {named['names']} of {named['of']} (to the new cluster that shares "
            f"more than half its images with the named one)"
        )
    print(f"to look at it: ice explore {args.out}")


def cmd_demo(args) -> None:
    from embeddings.demo import DEMO_CONFIG, write_digits
    from embeddings.pipeline import run_embed, summary_line

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

    auth = (
        parse_auth(args.auth) if args.auth is not None else (read_auth_file(args.auth_file) if args.auth_file else None)
    )
    from .remote_run import local_copy

    run_dir, read_only = local_copy(args.run_dir), args.read_only
    if run_dir != args.run_dir:
        print(
            f"ice: {args.run_dir}: fetched into {run_dir}; served read-only (names and groups would stay in this copy)",
            file=sys.stderr,
            flush=True,
        )
        read_only = True
    serve(run_dir, host=args.host, port=args.port, read_only=read_only, auth=auth, workers=args.workers)


def cmd_export(args) -> None:
    from explorer.export import STDOUT_NAMES, export_csv

    from .remote_run import local_copy

    n = export_csv(
        local_copy(args.run_dir), args.output, group=args.group, cluster=args.cluster, clustering=args.clustering
    )
    to_stdout = str(args.output) in STDOUT_NAMES
    print(
        f"wrote {n:,} row{'' if n == 1 else 's'} to {'standard output' if to_stdout else args.output}",
        file=sys.stderr if to_stdout else sys.stdout,
    )  # keep the CSV on stdout clean


def cmd_add(args) -> None:
    from embeddings.add import add_images

    if args.workers is not None and args.workers < 0:
        raise IceError(f"--workers {args.workers}: must be 0 or more")
    record = add_images(args.run_dir, args.paths, workers=args.workers, device=args.device)
    if record["addition"] is None:
        print(f"nothing new to add to {args.run_dir}")
        return
    if record["skipped"]:
        print(f"skipped files, each with its reason: {args.run_dir / SKIPPED}")
    print(f"to look at it: ice explore {args.run_dir} (an explorer already open shows them on reload)")


def cmd_tiles(args) -> None:
    import time

    from . import run_dir as rd
    from . import tiles

    rd.load_manifest(args.run_dir)
    busy = f"{args.run_dir}: an `ice embed` or `ice add` is writing this run now; wait for it to finish"
    lock = rd.lock_run_dir(args.run_dir, busy)
    try:
        t0 = time.perf_counter()
        items = rd.read_items(args.run_dir, columns=["x", "y"])
        built = tiles.write(args.run_dir, items["x"].to_numpy(np.float32), items["y"].to_numpy(np.float32))
    finally:
        if lock is not None:
            os.close(lock)
    print(
        f"wrote the tiles of {len(items):,} images: {built['nodes']:,} nodes on {built['levels']} levels "
        f"in {time.perf_counter() - t0:.1f} s"
    )


def cmd_find(args) -> None:
    import pandas as pd

    from embeddings.config import TeachSettings
    from embeddings.teach import find, read_image_list
    from explorer.export import STDOUT_NAMES, escape_cell, write_csv

    from . import run_dir as rd
    from .annotations import Annotations, clean_name

    manifest = rd.load_manifest(args.run_dir)
    paths = rd.read_items(args.run_dir, columns=["path"])["path"].to_numpy(dtype=object)
    notes = Annotations(args.run_dir / rd.ANNOTATIONS, read_only=args.save_group is None)
    if args.top < 1:
        raise IceError(f"--top {args.top}: must be at least 1")
    root = manifest.get("input_root")
    like, unlike = read_image_list(args.like, paths, notes, "--like", root)
    if args.unlike:
        more, _ = read_image_list(args.unlike, paths, notes, "--unlike", root)
        unlike = np.union1d(unlike, more)
    both = np.intersect1d(like, unlike)
    if len(both):
        raise IceError(f"{paths[both[0]]}: given both as like and unlike ({len(both)} such images)")
    settings = TeachSettings(steps=args.steps, seed=args.seed, blend=args.blend).validate()
    if args.save_group is not None:
        if not clean_name(args.save_group, "group"):
            raise IceError("--save-group: give the group a name")
    scores = find(args.run_dir, like, unlike, settings=settings, device=args.device)
    top = np.argsort(-scores, kind="stable")[: args.top]
    frame = pd.DataFrame({"image_id": top, "path": [escape_cell(p) for p in paths[top]], "score": scores[top]})
    write_csv(frame, args.output, args.run_dir.resolve())
    to_stdout = str(args.output) in STDOUT_NAMES
    say = sys.stderr if to_stdout else sys.stdout
    print(
        f"ranked {len(scores):,} images from {len(like):,} liked and {len(unlike):,} unliked; wrote the top "
        f"{len(top):,} to {'standard output' if to_stdout else args.output}",
        file=say,
    )
    if args.save_group is not None:
        result = notes.mark(args.save_group, marked_in=top, action="find", note=f"ice find --top {args.top}")
        print(f"group {args.save_group.strip()!r}: {result['size']:,} images", file=say)


AFTER_INTERRUPT = {  # what to do after Ctrl-C, by command
    "embed": "; `ice embed --resume` continues from the last finished step",
    "demo": "; the same `ice demo` command again continues from the last finished step",
    "add": "; the same `ice add` command again finishes the addition",
}


def main(argv: list[str] | None = None) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        commands = {
            "embed": cmd_embed,
            "demo": cmd_demo,
            "explore": cmd_explore,
            "export": cmd_export,
            "add": cmd_add,
            "tiles": cmd_tiles,
            "find": cmd_find,
        }
        commands[command](args)
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
