"""Play the person who teaches ICE a group, with the folder labels as the oracle.

    python -m benchmarks.find_group --dataset {digits,mnist,cifar10} [--class C] [--limit N]
                                    [--rounds 5 --per-round 100 --seeds 10 --uncertain 0.3]
                                    [--learners teach,similarity] [--no-record]

The run is made once by `ice embed` with the defaults (MNIST and CIFAR-10: their 10k test
split), and kept in the data cache. For each class (or --class) it starts from --seeds
random members marked in. Each round the learner trains on the marks so far and ranks every
image; the oracle then marks a page of --per-round unmarked images in or out, as a person
reviewing it would: the best-ranked, and an --uncertain share of the page from the images
whose score is nearest even odds (the explorer's "Uncertain" page; where the scores are not
probabilities, as the similarity's, the whole page is the best-ranked). After each round it
prints the precision at the class size: the share of the top |class| images that are in the
class, where the ranking puts the images marked in first and those marked out last, as the
group a person has then. The learners: `teach`, the explorer's (embeddings.teach: each score
blends the network's with a regression's, TeachSettings.blend, `--set blend=0` for the network
alone: `linear`'s, or the same with the pixel features, whichever foretold the later marks
better, as `blended` chooses; the regression used each round is printed per class; before
its first round, the first page is what "More like these" ranks first, as in the explorer;
each round goes on from the last round's model, TeachSettings.incremental, the default since
2026-12-06); `incremental`, the same with that setting on whatever the
default; `restart`, the same with each round starting from the run's encoder (the default
before 2026-12-06); `similarity`, the mean embedding of the images marked in (the explorer's "More like
these" before 2026-12-06); `linear`, a logistic regression on the embeddings and the manifold
(the explorer's "More like these" since); `manifold`, the same on the manifold coordinates
alone; `fresh`, the teach learner on an untrained encoder of the same shape; `pseudo` and
`consistency`, the teach learner with TeachSettings.unmarked set to that (what the unmarked
images teach besides being weak negatives); `average`, the teach learner with each round's
model the moving average of its weights (TeachSettings.average 0.99); `patches`, the teach
learner's regression alone (the embeddings, the manifold and the pixel features,
embeddings.patches); `teach-no-pixels`, the teach learner without the pixel features (the
explorer's before 2026-12-08). Where a learner reads the pixel features, the run's are made
afresh once, timed, before the first class (the explorer's first teach round makes them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import DATA_CACHE, PeakRSS, append_section, machine, parse_sets, today

LEARNERS = (
    "teach",
    "incremental",
    "restart",
    "pseudo",
    "consistency",
    "average",
    "similarity",
    "linear",
    "manifold",
    "fresh",
    "patches",
    "teach-no-pixels",
)


def precision_at_size(scores: np.ndarray, positives, negatives, truth: np.ndarray) -> float:
    """The share of the top |class| that is in the class; marked in first, marked out last."""
    key = np.asarray(scores, dtype=np.float64).copy()
    key[np.asarray(positives, dtype=np.int64)] = np.inf
    key[np.asarray(negatives, dtype=np.int64)] = -np.inf
    top = np.argsort(-key, kind="stable")[: int(truth.sum())]
    return float(truth[top].mean())


class Similarity:
    """Rank by the inner product with the mean embedding of the images marked in."""

    def __init__(self, run: Path, **_):
        self.embeddings = np.load(run / "embeddings.npy")

    def fit(self, positives, negatives) -> np.ndarray:
        return self.embeddings @ self.embeddings[positives].mean(0)


class Linear:
    """The explorer's "More like these" (explorer.search.like_scores): a logistic regression on
    the embeddings and the manifold, marked in against marked out and a sample of the unmarked;
    `manifold` alone: on the manifold coordinates only."""

    def __init__(self, run: Path, seed: int = 0, manifold_only: bool = False, **_):
        from explorer.data import load_run

        self.data = load_run(run, read_only=True)
        if manifold_only:
            self.data.__dict__["embeddings"] = np.zeros((self.data.n, 0), np.float32)

    def fit(self, positives, negatives) -> np.ndarray:
        from explorer.search import like_scores

        return like_scores(self.data, positives, negatives)


class Teach:
    """embeddings.teach's learner (`fresh`: from an untrained encoder of the same shape). The
    first call, before any round, ranks by similarity, as the explorer's first page does."""

    def __init__(self, run: Path, seed: int = 0, device: str = "auto", fresh: bool = False, **settings):
        import torch

        from embeddings import teach
        from embeddings.train import pick_device

        self.teach, self.run, self.fresh = teach, run, fresh
        self.first_page = Linear(run, seed=seed)
        self.settings = teach.TeachSettings(seed=seed, **settings).validate()
        self.device = pick_device(device)
        self.pixels = np.load(run / "pixels.npy", mmap_mode="r")
        self.cfg = teach.views_config(run)
        self.net, self.round = None, 0
        # the regressions' record of the last round, the marks then, and the regression each
        # round used (its first letter: "p" pixels, "e" embeddings)
        self.last, self.marked, self.used = None, None, ""
        torch.manual_seed(seed)

    def new_net(self):
        net = self.teach.new_scorer(self.run, self.device, self.settings.seed)
        if self.fresh:
            import torch

            from embeddings.model import AutoEncoder

            net.encoder = AutoEncoder(net.args).encoder.to(self.device, memory_format=torch.channels_last)
        return net

    def fit(self, positives, negatives) -> np.ndarray:
        self.probabilities = self.round > 0
        if self.round == 0:
            self.round += 1  # no round has trained: the explorer shows the most similar images
            return self.first_page.fit(positives, negatives)
        if self.net is None or not self.settings.incremental:
            self.net = self.new_net()
        self.teach.fit(
            self.net,
            self.pixels,
            np.asarray(positives),
            np.asarray(negatives, dtype=np.int64),
            self.cfg,
            self.settings,
            self.device,
            self.round,
        )
        self.round += 1
        network = self.teach.score(self.net, self.pixels, self.cfg, self.device)
        return self.blend(network, positives, negatives)

    def blend(self, network: np.ndarray, positives, negatives) -> np.ndarray:
        """As a teach round blends: the regressions' record of the last round, and the marks
        made since, choose which regression to use."""
        marked = np.union1d(positives, negatives).astype(np.int64)
        seen = np.setdiff1d(marked, marked if self.marked is None else self.marked)
        scores, self.last = self.teach.blended(
            self.run, network, positives, negatives, self.settings, last=self.last, seen=seen
        )
        self.marked = marked
        if self.last is not None:
            self.used += self.last["used"][0]
        return scores


PIXEL_SECONDS: dict[Path, float] = {}  # how long each run's pixel features took to make, for the report


def make_pixel_features(run: Path) -> None:
    """The run's pixel features (embeddings.patches), made afresh and timed: the teach loop's
    first round makes them, once per run; the rounds here then read them."""
    from embeddings import patches
    from ice import run_dir as rd

    for name in (patches.FEATURES, patches.MODEL):
        (run / rd.TEACH / name).unlink(missing_ok=True)
    n = len(rd.open_rows(run, rd.EMBEDDINGS))
    t0 = time.perf_counter()
    features = patches.ensure(run, n)
    PIXEL_SECONDS[run] = time.perf_counter() - t0
    print(f"pixel features: {features.shape[1]} per image in {PIXEL_SECONDS[run]:.1f} s", flush=True)


class Patches:
    """The teach loop's regression (ice.likeness on the embeddings, the manifold and the
    pixel features) alone; its odds, in [0, 1]."""

    def __init__(self, run: Path, seed: int = 0, **_):
        from embeddings import patches
        from ice import likeness
        from ice import run_dir as rd

        self.likeness, self.seed = likeness, seed
        self.embeddings = rd.open_rows(run, rd.EMBEDDINGS)
        self.manifold = likeness.read_manifold(run, len(self.embeddings))
        self.features = patches.ensure(run, len(self.embeddings))

    def fit(self, positives, negatives) -> np.ndarray:
        c = self.likeness.PATCH_C
        model = self.likeness.fit(self.embeddings, self.manifold, positives, negatives, self.seed, c, self.features)
        return self.likeness.apply(model, self.embeddings, self.manifold, patches=self.features)


AVERAGE = 0.99  # the `average` learner's decay of the moving average of the weights


def make_learner(name: str, run: Path, seed: int, device: str, settings: dict):
    if name == "similarity":
        return Similarity(run)
    if name == "linear":
        return Linear(run, seed=seed)
    if name == "manifold":
        return Linear(run, seed=seed, manifold_only=True)
    if name == "patches":
        return Patches(run, seed=seed)
    if name == "teach-no-pixels":
        settings = {**settings, "pixel_features": False}
    if name in ("incremental", "restart"):
        settings = {**settings, "incremental": name == "incremental"}
    if name in ("pseudo", "consistency"):
        settings = {**settings, "unmarked": name}
    if name == "average":
        settings = {**settings, "average": AVERAGE}
    return Teach(run, seed=seed, device=device, fresh=name == "fresh", **settings)


def review_page(scores: np.ndarray, marked: list[int], per_round: int, uncertain: float) -> np.ndarray:
    """The unmarked images a person reviews next: the best-ranked, and an `uncertain` share of
    the page whose scores (probabilities) are nearest even odds."""
    key = np.asarray(scores, dtype=np.float64).copy()
    key[marked] = -np.inf
    order = np.argsort(-key, kind="stable")
    best = per_round - int(round(per_round * uncertain))
    rest = order[best:]
    rest = rest[np.isfinite(key[rest])]
    near = rest[np.argsort(np.abs(key[rest] - 0.5), kind="stable")[: per_round - best]]
    return np.concatenate([order[:best], near])


def play(
    learner, truth: np.ndarray, seeds: int, rounds: int, per_round: int, seed: int, log=print, uncertain: float = 0.0
) -> list[dict]:
    """Rounds 0..rounds: train on the marks, rank, score; then (but after the last) the oracle
    marks a page of per_round unmarked images (review_page). Returns one dict per round."""
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(truth)
    positives = [int(i) for i in rng.choice(members, min(seeds, len(members)), replace=False)]
    negatives: list[int] = []
    out = []
    for r in range(rounds + 1):
        with PeakRSS(sample=False) as peak:
            t0 = time.perf_counter()
            scores = learner.fit(np.array(positives), np.array(negatives, dtype=np.int64))
            seconds = time.perf_counter() - t0
        p = precision_at_size(scores, positives, negatives, truth)
        estimate = (
            int(len(positives) + (np.delete(scores, positives + negatives) > 0.5).sum())
            if scores.min() >= 0 and scores.max() <= 1
            else None
        )
        out.append(
            {
                "round": r,
                "precision": p,
                "seconds": seconds,
                "peak_gib": peak.gib,
                "marked_in": len(positives),
                "marked_out": len(negatives),
                "estimate": estimate,
            }
        )
        log(
            f"    round {r}: precision@{int(truth.sum())} {p:.3f}  {seconds:5.1f} s  peak {peak.gib:.2f} GiB  "
            f"({len(positives)} in, {len(negatives)} out"
            + (f", estimate {estimate}" if estimate is not None else "")
            + ")"
        )
        if r == rounds:
            break
        share = uncertain if getattr(learner, "probabilities", False) else 0.0  # else no even odds
        page = review_page(scores, positives + negatives, per_round, share)
        positives += [int(i) for i in page if truth[i]]
        negatives += [int(i) for i in page if not truth[i]]
    return out


def dataset_run(dataset: str, limit: int | None, device: str) -> Path:
    """The run of the dataset's images (MNIST, CIFAR-10: the test split), made once with the
    defaults and --labels-from-folders, in the data cache."""
    from benchmarks.common import build_once
    from benchmarks.quality import dataset_folder
    from embeddings.config import Config
    from embeddings.demo import DEMO_CONFIG
    from embeddings.pipeline import run_embed

    split = "all" if dataset == "digits" else "test"
    folder = dataset_folder(dataset, split, limit)
    base = DEMO_CONFIG if dataset == "digits" else {}
    cfg = Config(**{**base, "labels_from_folders": True, "device": device})
    return (
        build_once(
            DATA_CACHE / "find-group-runs" / f"{dataset}-{split}-{limit or 'all'}",
            lambda out: run_embed(folder, out / "run", cfg),
        )
        / "run"
    )


def tiled_run(run: Path, times: int) -> Path:
    """A copy of `run` with every image repeated `times` times (pixels, embeddings, items, in
    that order), for the time and memory of a round at that size; its precision means little,
    since each class's images come `times` times."""
    import shutil

    from benchmarks.common import build_once
    from ice import run_dir as rd

    def build(out: Path) -> None:
        out.mkdir(parents=True)
        for name in (rd.MANIFEST, rd.MODEL):
            shutil.copyfile(run / name, out / name)
        for name in (rd.PIXELS, rd.EMBEDDINGS):
            part = np.load(run / name, mmap_mode="r")
            whole = np.lib.format.open_memmap(
                out / name, mode="w+", dtype=part.dtype, shape=(len(part) * times,) + part.shape[1:]
            )
            for i in range(times):
                whole[i * len(part) : (i + 1) * len(part)] = part
            whole.flush()
        items = pd.read_parquet(run / rd.ITEMS)
        items = pd.concat([items] * times, ignore_index=True)
        items["image_id"] = np.arange(len(items))
        items.to_parquet(out / rd.ITEMS)

    return build_once(run.parent.parent / f"{run.parent.name}-x{times}", lambda out: build(out / "run")) / "run"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.find_group", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["digits", "mnist", "cifar10"], required=True)
    p.add_argument("--class", dest="class_", metavar="C", help="one class (default: every class)")
    p.add_argument("--limit", type=int, help="a random subset of this many images")
    p.add_argument("--run", type=Path, help="a labelled run to use instead (made with --labels-from-folders)")
    p.add_argument(
        "--tile",
        type=int,
        default=1,
        metavar="K",
        help="repeat every image K times, to time a round at K times the size",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--seeds", type=int, default=10, help="members of the class marked in to start from")
    p.add_argument(
        "--uncertain",
        type=float,
        default=0.3,
        metavar="SHARE",
        help="the share of each page from the images nearest even odds (default 0.3)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--learners", default="teach,similarity", help=f"comma-separated, compared side by side: {', '.join(LEARNERS)}"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the teach learner (embeddings.teach.TeachSettings), e.g. --set steps=400",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    learners = args.learners.split(",")
    unknown = [name for name in learners if name not in LEARNERS]
    if unknown:
        p.error(f"--learners: unknown {', '.join(unknown)}; choose from {', '.join(LEARNERS)}")
    from embeddings.config import TeachSettings

    settings = parse_sets(args.sets, TeachSettings, "the teach learner")

    run = args.run or dataset_run(args.dataset, args.limit, args.device)
    if args.tile > 1:
        run = tiled_run(run, args.tile)
    items = pd.read_parquet(run / "items.parquet", columns=["image_id", "label"]).sort_values("image_id")
    labels = items["label"].to_numpy()
    classes = [args.class_] if args.class_ else sorted(set(labels))
    if args.class_ and args.class_ not in set(labels):
        p.error(f"--class {args.class_}: the run's classes are {', '.join(sorted(set(labels)))}")
    results: dict[str, dict[str, list[dict]]] = {name: {} for name in learners}
    teachers = {"teach", "incremental", "restart", "pseudo", "consistency", "average", "fresh"}
    if "patches" in learners or (teachers & set(learners) and settings.get("pixel_features", True)):
        make_pixel_features(run)
    for c in classes:
        truth = labels == c
        print(f"{c} ({int(truth.sum())} of {len(labels)} images)", flush=True)
        for name in learners:
            print(f"  {name}", flush=True)
            learner = make_learner(name, run, args.seed, args.device, settings)
            results[name][c] = play(
                learner,
                truth,
                args.seeds,
                args.rounds,
                args.per_round,
                args.seed,
                log=lambda line: print(line, flush=True),
                uncertain=args.uncertain,
            )
            if getattr(learner, "used", ""):
                print(f"    regressions used, by round: {learner.used}", flush=True)
    summary = {name: float(np.mean([results[name][c][-1]["precision"] for c in classes])) for name in learners}
    text = report(args, run, classes, results, summary, settings)
    print(text)
    if args.record:
        append_section(
            f"Finding a group: {args.dataset}, {len(labels):,} images, {today()}",
            text,
            figures=figures(args, len(labels), classes, results, summary),
        )
    return {"summary": summary, "results": results}


TARGETS = {"digits": 0.95, "mnist": 0.97, "cifar10": 0.70}  # mean precision at the class size
DATASETS = {"digits": "digits", "mnist": "MNIST test", "cifar10": "CIFAR-10 test"}
NAMES = {
    "teach": "teach loop",
    "similarity": "mean embedding of the marks in (More like these before 2026-12-06)",
    "linear": "More like these: logistic regression on the embeddings and manifold",
    "manifold": "logistic regression on the manifold alone",
    "incremental": "teach loop, each round going on from the last round's model",
    "restart": "teach loop, each round from the run's encoder (the default before 2026-12-06)",
    "fresh": "teach loop on an untrained encoder of the same shape",
    "pseudo": "teach loop, the unmarked images the network is sure of counted in (pseudo-labels)",
    "consistency": "teach loop, the unmarked images' augmented views agreeing with their plain views",
    "average": "teach loop, each round's model the moving average of its weights (decay 0.99)",
    "patches": "the teach loop's regression alone: embeddings, manifold and pixel features",
    "teach-no-pixels": "teach loop without the pixel features (the explorer's before 2026-12-08)",
}


def figures(args, n: int, classes: list[str], results: dict, summary: dict) -> list[dict]:
    """BENCHMARKS.md's rows: each learner's mean precision, where the standard protocol ran over
    every class of the run as it is; and the slowest teach round at the default settings."""
    size = f"{n // 1000}k" if n >= 10_000 else f"{n:,}"
    data = f"{DATASETS[args.dataset]} {size}"
    rows = []
    standard = (args.rounds, args.per_round, args.seeds, args.uncertain) == (5, 100, 10, 0.3)
    whole = standard and not (args.class_ or args.limit or args.tile > 1 or args.sets)
    for name, mean in summary.items() if whole else ():
        if name == "teach":
            finals = [results[name][c][-1]["precision"] for c in classes]
            value, target = f"{mean:.3f} (classes {min(finals):.3f}-{max(finals):.3f})", TARGETS[args.dataset]
            figure = f"teach loop, {data}, mean precision at the class size after 5 rounds of 100 marks"
            rows.append(
                {
                    "group": "teach",
                    "order": 2,
                    "figure": figure,
                    "value": value,
                    "target": f">= {target:g}",
                    "met": mean >= target,
                }
            )
        elif name in NAMES:
            figure = f"{NAMES[name]}, {data}, same protocol"
            rows.append(
                {"group": "teach", "order": 3, "figure": figure, "value": f"{mean:.3f}", "target": "", "met": None}
            )
    if "teach" in results and not args.sets:
        slowest = max(r["seconds"] for c in classes for r in results["teach"][c])
        # one row per data set: the slowest round of one set must not hide another's
        unit = "GPU" if args.device == "cuda" else "CPU"
        figure = f"a teach round at {size} images of {DATASETS[args.dataset]}, {unit} (slowest of all)"
        target = {"10k": "<= 60 s", "100k": "<= 5 min"}.get(size, "")
        limit = {"10k": 60, "100k": 300}.get(size)
        rows.append(
            {
                "group": "teach",
                "order": 4,
                "figure": figure,
                "value": f"{slowest:.1f} s",
                "target": target,
                "met": slowest <= limit if limit else None,
            }
        )
    return rows


def report(args, run: Path, classes: list[str], results: dict, summary: dict, settings: dict) -> str:
    learners = list(results)
    timed_name = "teach" if "teach" in results else learners[0]
    head = "| class | " + " | ".join(f"{name} precision" for name in learners) + f" | {timed_name} s/round (max) |"
    lines = [
        f"- command: `python -m benchmarks.find_group {' '.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- run: {run} ({args.rounds} rounds of {args.per_round} marks from {args.seeds} seeds, "
        f"{args.uncertain:.0%} of each page nearest even odds; "
        f"teach settings {settings or 'default'})",
        *(
            [f"- the pixel features (embeddings.patches) took {PIXEL_SECONDS[run]:.1f} s to make for the run's images"]
            if run in PIXEL_SECONDS
            else []
        ),
        "- mean precision at the class size after the last round: "
        + ", ".join(f"**{name} {summary[name]:.3f}**" for name in learners),
        "",
        head,
        "| --- " * (len(learners) + 2) + "|",
    ]
    for c in classes:
        row = [f"{results[name][c][-1]['precision']:.3f}" for name in learners]
        timed = results[timed_name][c]
        lines.append(f"| {c} | " + " | ".join(row) + f" | {max(r['seconds'] for r in timed):.1f} |")
    first = learners[0]
    lines += [
        "",
        f"{first}, by round (mean over classes): "
        + ", ".join(
            f"{r}: {np.mean([results[first][c][r]['precision'] for c in classes]):.3f}" for r in range(args.rounds + 1)
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
