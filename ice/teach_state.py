"""What the teach loop keeps in a run, per group (docs/run-format.md, `teach/`).

Torch-free: the explorer reads the scores and the progress of a round here, and starts
rounds, which train in another process (`python -m embeddings.teach`).

    teach/<key>/state.json       the group's name and its rounds, oldest first
    teach/<key>/round-NNNN.pt    the model after round NNNN (the learner's, embeddings.teach)
    teach/<key>/round-NNNN.npy   (n,) float32: every image's score after round NNNN, in [0, 1]
    teach/<key>/progress.json    while a round trains: its step and steps
    teach/<key>/lock             flock'ed by the process that trains the group's rounds
    teach/<key>/again            asks that process for one more round (marks came while it trained)
    teach/<key>/last-round.log   what the process of the last round printed

`key` is "g" and 16 hex digits of the SHA-1 of the group's name, since a name may hold any
character but ';'.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import IceError
from .run_dir import TEACH, atomic_path, read_json, save_npy, write_json

STATE = "state.json"
PROGRESS = "progress.json"
LOCK = "lock"
AGAIN = "again"
LOG = "last-round.log"  # what the last round's process printed


def group_key(name: str) -> str:
    return "g" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


def group_dir(run_dir: str | os.PathLike, name: str) -> Path:
    return Path(run_dir) / TEACH / group_key(name)


def round_path(folder: Path, round_: int, suffix: str) -> Path:
    return folder / f"round-{round_:04d}{suffix}"


def read_state(run_dir: str | os.PathLike, name: str) -> dict:
    """{"group": name, "rounds": [...]}: each round's record (round, time, marked_in,
    marked_out, change, seconds, estimate, ...), oldest first; no rounds where none ran."""
    path = group_dir(run_dir, name) / STATE
    try:
        state = read_json(path)
    except FileNotFoundError:
        return {"group": name, "rounds": []}
    except (OSError, ValueError) as e:
        raise IceError(f"{path}: unreadable ({e})") from None
    return state


def write_state(run_dir: str | os.PathLike, state: dict) -> None:
    write_json(group_dir(run_dir, state["group"]) / STATE, state)


def read_scores(run_dir: str | os.PathLike, name: str, n: int | None = None) -> np.ndarray | None:
    """(n,) float32: the scores of a group's last round, or None where no round ran."""
    state = read_state(run_dir, name)
    if not state["rounds"]:
        return None
    path = round_path(group_dir(run_dir, name), state["rounds"][-1]["round"], ".npy")
    try:
        scores = np.load(path)
    except (OSError, ValueError) as e:
        raise IceError(f"{path}: unreadable ({e}); undo the round or train again") from None
    if n is not None and scores.shape != (n,):
        raise IceError(f"{path}: {scores.shape[0]} scores for a run of {n} images; train again")
    return scores


def save_round(run_dir: str | os.PathLike, name: str, record: dict, scores: np.ndarray, write_model) -> dict:
    """Write a round's scores and model (write_model(path) writes it atomically), then add its
    record to state.json, last: a round killed before that is not a round."""
    folder = group_dir(run_dir, name)
    state = read_state(run_dir, name)
    round_ = (state["rounds"][-1]["round"] if state["rounds"] else 0) + 1
    write_model(round_path(folder, round_, ".pt"))
    save_npy(round_path(folder, round_, ".npy"), np.asarray(scores, dtype=np.float32))
    record = {"round": round_, **record}
    state["rounds"].append(record)
    write_state(run_dir, state)
    return record


def drop_last_round(run_dir: str | os.PathLike, name: str) -> dict:
    """Forget a group's last round (its record first, then its files); return its record."""
    state = read_state(run_dir, name)
    if not state["rounds"]:
        raise IceError(f"group {name!r}: no round to undo")
    record = state["rounds"].pop()
    write_state(run_dir, state)
    for suffix in (".pt", ".npy"):
        with contextlib.suppress(FileNotFoundError):
            round_path(group_dir(run_dir, name), record["round"], suffix).unlink()
    return record


def forget_group(run_dir: str | os.PathLike, name: str) -> None:
    """Remove a group's rounds (the group was deleted)."""
    shutil.rmtree(group_dir(run_dir, name), ignore_errors=True)


def move_group(run_dir: str | os.PathLike, name: str, new_name: str) -> None:
    """Carry a group's rounds to its new name (the group was renamed)."""
    old, new = group_dir(run_dir, name), group_dir(run_dir, new_name)
    if not old.exists():
        return
    if new.exists():
        shutil.rmtree(new)
    os.replace(old, new)
    state = read_state(run_dir, new_name)
    state["group"] = new_name
    write_state(run_dir, state)


# --- the process that trains, and what others see of it ---


def lock_group(run_dir: str | os.PathLike, name: str) -> int | None:
    """An open descriptor holding an exclusive flock on the group's lock file, or None when
    another process holds it (it is training the group). The kernel drops it when the
    process ends, however it ends."""
    import fcntl

    folder = group_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def is_training(run_dir: str | os.PathLike, name: str) -> bool:
    """Whether a process holds the group's lock now (tried with a shared lock, from a
    descriptor opened for reading: a reader that may not write the run can ask too)."""
    import fcntl

    try:
        fd = os.open(group_dir(run_dir, name) / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)


def write_progress(run_dir: str | os.PathLike, name: str, **fields) -> None:
    write_json(group_dir(run_dir, name) / PROGRESS, {"time": time.time(), "pid": os.getpid(), **fields})


def read_progress(run_dir: str | os.PathLike, name: str) -> dict | None:
    """The progress of the round that trains now ({"step", "steps", "round", "time", ...}, or
    {"error": ...} where the last one failed), or None where none trains."""
    path = group_dir(run_dir, name) / PROGRESS
    try:
        progress = read_json(path)
    except (OSError, ValueError):
        return None
    if "error" in progress:
        return progress
    if not is_training(run_dir, name):
        return None  # left by a process that was killed
    return progress


def clear_progress(run_dir: str | os.PathLike, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (group_dir(run_dir, name) / PROGRESS).unlink()


def ask_again(run_dir: str | os.PathLike, name: str) -> None:
    """Ask the training process for one more round once this one ends."""
    folder = group_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / AGAIN) as tmp:
        tmp.write_text("")


def take_again(run_dir: str | os.PathLike, name: str) -> bool:
    """Whether one more round was asked for (and forget that it was)."""
    try:
        (group_dir(run_dir, name) / AGAIN).unlink()
        return True
    except FileNotFoundError:
        return False


def remove_leftovers(run_dir: str | os.PathLike, name: str) -> None:
    """Remove the temporary files a round killed while writing left (call it holding the lock)."""
    for path in group_dir(run_dir, name).glob(".*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def start_round(run_dir: str | os.PathLike, name: str, steps: int | None = None) -> str:
    """Train the group's next round in a new process, in the background, at a lower CPU
    priority than the server's, so that the map and other people's callbacks stay quick.
    Where a round trains already, it is asked for one more. Returns "started" or "queued"."""
    if is_training(run_dir, name):
        ask_again(run_dir, name)
        return "queued"
    folder = group_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    clear_progress(run_dir, name)
    log = open(folder / LOG, "wb")
    nice = [] if not shutil.which("nice") else ["nice", "-n", "5"]
    extra = [] if steps is None else ["--steps", str(steps)]
    subprocess.Popen(
        [*nice, sys.executable, "-m", "embeddings.teach", str(run_dir), name, *extra],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    log.close()
    return "started"
