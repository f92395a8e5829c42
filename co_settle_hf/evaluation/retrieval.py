"""Zero-shot video retrieval on UCF101 and HMDB51 (the paper's video-level evaluation).

The standard protocol of self-supervised video retrieval: every test video of the split is a
query, every train video is the gallery, both ranked by cosine similarity of one embedding per
video, and R@k is the share of queries with a video of their own class among their k nearest.
A video's embedding is the mean of its projected patch features over space and time (``--num-frames``
frames sampled uniformly, short side 224, centre crop 224x224), L2-normalised: the features the method
trains, pooled with no learned head, so the ranking measures them and nothing else. ``embedding="base"``
pools the frozen backbone's patch features the same way, the comparison the paper draws.

Similarities are computed in blocks and only the running top-k of each query is kept, so memory
grows with videos x D, never with queries x gallery.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import FeatureCache
from .distributed import Processes
from .outputs import OutputFolder
from .tradeoff import encode_raw, preprocess_frames

#: The k of R@k, as published.
RECALL_AT = (1, 5, 10, 20)
SPLITS = (1, 2, 3)
DATASETS = ("ucf101", "hmdb51")
#: What a video is embedded from: the adapter's projected patch features, or its frozen base's.
EMBEDDINGS = ("projected", "base")
#: Frames are resized to this short side and centre-cropped to a square of it.
CROP = 224


@dataclass(frozen=True)
class RetrievalVideo:
    """One video of a split: its path, its name relative to the data root and its class index."""

    path: Path
    name: str
    label: int

    @property
    def frames(self) -> tuple[Path, ...]:  # what the feature cache keys on
        return (self.path,)


@dataclass(frozen=True)
class RetrievalSplit:
    """A split's classes (sorted names), gallery (train videos) and queries (test videos)."""

    dataset: str
    split: int
    classes: list[str]
    gallery: list[RetrievalVideo]
    queries: list[RetrievalVideo]



def _split_folder(root: Path, pattern: str) -> Path:
    """Where the split files are: the data root or one folder below it (``ucfTrainTestlist``, ``splits``...)."""
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if any(folder.glob(pattern)):
            return folder
    raise FileNotFoundError(f"no split file {pattern} in {root} or a folder directly below it")


def detect_dataset(root: str | Path) -> str:
    """``ucf101`` (trainlist01.txt present) or ``hmdb51`` (``*_test_split1.txt`` present)."""
    for dataset, pattern in (("ucf101", "trainlist0*.txt"), ("hmdb51", "*_test_split*.txt")):
        try:
            _split_folder(Path(root), pattern)
            return dataset
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{root}: neither UCF101 split files (trainlist01.txt) nor HMDB51 split files "
                            "(<class>_test_split1.txt) found; pass the folder holding the class folders and splits")


def _video_path(root: Path, relative: str, where: str) -> Path:
    candidates = [root / relative, *(p / relative for p in sorted(root.iterdir()) if p.is_dir())]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{where}: video {relative} not found under {root}")
    return found


def _ucf101_lists(root: Path, split: int) -> dict[str, list[str]]:
    folder = _split_folder(root, "trainlist0*.txt")
    lists = {}
    for part in ("train", "test"):
        path = folder / f"{part}list0{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"UCF101 split {split}: {path} not found")
        lists[part] = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return lists


def _hmdb51_lists(root: Path, split: int) -> dict[str, list[str]]:
    folder = _split_folder(root, "*_test_split*.txt")
    lists: dict[str, list[str]] = {"train": [], "test": []}
    files = sorted(folder.glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"HMDB51 split {split}: no *_test_split{split}.txt in {folder}")
    for path in files:
        name = re.sub(rf"_test_split{split}\.txt$", "", path.name)
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}, line {number}: expected '<video> <0|1|2>', got {line!r}")
            if fields[1] != "0":  # 1 = train, 2 = test, 0 = in neither
                lists["train" if fields[1] == "1" else "test"].append(f"{name}/{fields[0]}")
    return lists


def read_split(root: str | Path, split: int = SPLITS[0], dataset: str | None = None) -> RetrievalSplit:
    """The videos of an official split; the class of a video is its folder's name."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split}")
    dataset = dataset or detect_dataset(root)
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    lists = (_ucf101_lists if dataset == "ucf101" else _hmdb51_lists)(root, split)
    classes = sorted({entry.split("/")[0] for part in lists.values() for entry in part})
    index = {name: i for i, name in enumerate(classes)}

    def videos(part: str) -> list[RetrievalVideo]:
        where = f"{dataset} split {split} ({part})"
        return [RetrievalVideo(_video_path(root, e, where), e, index[e.split("/")[0]]) for e in lists[part]]

    split_videos = RetrievalSplit(dataset, split, classes, videos("train"), videos("test"))
    if not split_videos.gallery or not split_videos.queries:
        raise ValueError(f"{dataset} split {split} under {root}: the train or the test list is empty")
    return split_videos


def uniform_indices(total: int, count: int) -> list[int]:
    """The centres of ``count`` equal segments of ``total`` frames (repeats when the video is shorter)."""
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


def video_embedding(encoder: Any, video: RetrievalVideo, num_frames: int) -> torch.Tensor:
    """(D,) unit-norm mean of the encoder's patch features over ``num_frames`` uniform frames."""
    from co_settle_hf.data import clip_from_path

    clip = clip_from_path(video.path)
    try:
        frames = clip.read(uniform_indices(int(clip.num_frames), num_frames))
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"cannot read {video.path}: {error}") from error
    features = encode_raw(encoder, preprocess_frames(frames, resize=CROP, crop=CROP))
    return torch.nn.functional.normalize(features.mean(dim=(0, 1, 2)), dim=0)


def embed_videos(encoder: Any, videos: Sequence[RetrievalVideo], *, num_frames: int,
                 cache: FeatureCache | None = None, processes: Processes | None = None,
                 progress: bool = False) -> np.ndarray:
    """float32 (N, D) embeddings of ``videos``, shared among ``processes`` by block, in video order."""
    mine = [i for b in (processes.my_blocks(len(videos)) if processes else [range(len(videos))]) for i in b]
    iterator: Any = mine
    if progress:
        iterator = tqdm(mine, desc="retrieval", unit="video")
    rows = []
    for index in iterator:
        video = videos[index]
        def compute(video: RetrievalVideo = video) -> torch.Tensor:
            return video_embedding(encoder, video, num_frames)
        embedding = compute() if cache is None else cache.get(video.frames, (num_frames, CROP, CROP), compute)
        rows.append((index, embedding.cpu().numpy().astype(np.float32)))
    gathered = sorted(processes.gather(rows) if processes else rows, key=lambda r: r[0])
    return np.stack([row for _, row in gathered])


def topk_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int, block: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) gallery indices and cosine scores of each query's k most similar, best first.

    Blocks of ``block`` queries by ``block`` gallery videos; each block's k best are merged into
    the running top-k and the rest is dropped, so memory is O((Q + G) D + block^2), whatever
    Q x G. Equal scores rank the lower gallery index first (as a stable sort of the full row
    would, unless a tie straddles the k-th place of a block).
    """
    k = min(k, gallery.shape[0])
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], block):
        q = queries[start:start + block]
        best_scores = np.empty((q.shape[0], 0), dtype=np.float32)
        best = np.empty((q.shape[0], 0), dtype=np.int64)
        for g in range(0, gallery.shape[0], block):
            sims = q @ gallery[g:g + block].T
            keep = min(k, sims.shape[1])
            local = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
            cand_scores = np.concatenate([best_scores, np.take_along_axis(sims, local, axis=1)], axis=1)
            cand = np.concatenate([best, local + g], axis=1)
            order = np.lexsort((cand, -cand_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(cand_scores, order, axis=1)
            best = np.take_along_axis(cand, order, axis=1)
        indices[start:start + block], scores[start:start + block] = best, best_scores
    return indices, scores


def recall_at_k(neighbour_labels: np.ndarray, query_labels: np.ndarray, ks: Sequence[int] = RECALL_AT
                ) -> dict[str, np.ndarray]:
    """Per query, 1.0 when a same-class video is among its first k neighbours (``R@k`` -> (Q,))."""
    same = neighbour_labels == query_labels[:, None]
    return {f"R@{k}": same[:, :k].any(axis=1).astype(np.float64) for k in ks}


def score_retrieval(queries: np.ndarray, gallery: np.ndarray, split: RetrievalSplit, block: int = 1024
                    ) -> dict[str, Any]:
    """R@k overall and per class, and the (query class, top-1 class) counts."""
    gallery_labels = np.array([v.label for v in split.gallery])
    query_labels = np.array([v.label for v in split.queries])
    neighbours, _ = topk_neighbours(queries, gallery, max(RECALL_AT), block)
    labels = gallery_labels[neighbours]
    hits = recall_at_k(labels, query_labels)
    confusion = np.zeros((len(split.classes),) * 2, dtype=np.int64)
    np.add.at(confusion, (query_labels, labels[:, 0]), 1)
    per_class = []
    for c, name in enumerate(split.classes):
        mine = query_labels == c
        if mine.any():
            per_class.append({"class": name, "queries": int(mine.sum()),
                              **{key: float(v[mine].mean()) for key, v in hits.items()}})
    return {"recall": {key: float(v.mean()) for key, v in hits.items()}, "per_class": per_class,
            "confusion": confusion}


def write_retrieval_results(scores: dict[str, Any], split: RetrievalSplit, settings: dict[str, Any],
                            out: OutputFolder, title: str) -> dict[str, Any]:
    """``retrieval.json`` (summary), ``per_class.csv`` and ``confusion.png``; returns the summary."""
    from .plots import confusion_figure

    shares = np.bincount([v.label for v in split.gallery], minlength=len(split.classes)) / len(split.gallery)
    query_shares = np.bincount([v.label for v in split.queries], minlength=len(split.classes)) / len(split.queries)
    summary = {"dataset": split.dataset, "split": split.split, "queries": len(split.queries),
               "gallery": len(split.gallery), "classes": len(split.classes), **settings, **scores["recall"],
               "chance_R@1": float(shares @ query_shares)}
    out.path("retrieval.json").write_text(json.dumps(summary, indent=2))
    with out.path("per_class.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["class", "queries", *scores["recall"]])
        writer.writeheader()
        writer.writerows(scores["per_class"])
    confusion_figure(scores["confusion"], split.classes, out.path("confusion.png"),
                     f"{title}\n{split.dataset.upper()} split {split.split}: top-1 class of each query "
                     f"(R@1 = {scores['recall']['R@1']:.3f})")
    return summary


def evaluate_retrieval(encoder: Any, root: str | Path, out: OutputFolder, *, split: int = SPLITS[0],
                       dataset: str | None = None, num_frames: int = 8, embedding: str = EMBEDDINGS[0],
                       title: str = "model", cache: FeatureCache | None = None,
                       processes: Processes | None = None, progress: bool = False) -> dict[str, Any]:
    """Embed the split's videos, rank the gallery for every query, write the results (main process)."""
    videos = read_split(root, split, dataset)
    if num_frames < 1:
        raise ValueError(f"--num-frames must be >= 1, got {num_frames}")
    everything = embed_videos(encoder, videos.gallery + videos.queries, num_frames=num_frames, cache=cache,
                              processes=processes, progress=progress)
    if processes is not None and not processes.is_main:
        return {}
    gallery, queries = everything[:len(videos.gallery)], everything[len(videos.gallery):]
    scores = score_retrieval(queries, gallery, videos)
    settings = {"num_frames": num_frames, "embedding": embedding}
    return write_retrieval_results(scores, videos, settings, out, title)
