"""`lmkcomp inspect-embeddings`: descriptor health of an embedding store (mean-vector norm,
same / different landmark similarities, their ROC AUC, effective rank), printed as a table and
written as JSON."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from lmkcomp.commands.args import data_options, int_at_least
from lmkcomp.errors import UserInputError

if TYPE_CHECKING:
    from lmkcomp.features.health import EmbeddingHealth
    from lmkcomp.features.store import EmbeddingStore

#: as lmkcomp.data.labels.SPLITS, which this module does not import: pandas would slow every command's start
SPLITS = ("train", "index", "test")


def _split_of(store: EmbeddingStore, chosen: str | None, flag: str) -> str:
    """The split the user chose, else the one the store's manifest records (`lmkcomp extract`
    writes it); ensembles and hand-made stores record none."""
    split = chosen or store.meta.get("split")
    if split is None:
        raise UserInputError(f"{store.directory}: the store records no split; pass {flag} train, index or test")
    return split


def _number(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_health(health: EmbeddingHealth, name: str) -> str:
    """The printed table: one measure per line, then a WARNING line when near chance."""
    from lmkcomp.features.health import NEAR_CHANCE_RULE

    lines = [f"descriptor health of {name}"]
    norm = _number(health.mean_norm)
    if health.database_mean_norm is not None:
        norm += f"  (database {_number(health.database_mean_norm)})"
    lines.append(f"  {'mean-vector norm':<28}{norm}")
    for label, stats in (("same-landmark cosine", health.same), ("different-landmark cosine", health.different)):
        lines.append(f"  {label:<28}median {_number(stats.median):>6}   5% {_number(stats.p05):>6}   "
                     f"95% {_number(stats.p95):>6}   ({stats.pairs_text()})")
    lines.append(f"  {'ROC AUC same vs different':<28}{_number(health.auc)}")
    lines.append(f"  {'effective rank':<28}{health.effective_rank:.1f} of {health.dim} dims "
                 f"({health.rank_rows} rows)")
    if health.near_chance:
        lines.append(f"WARNING: near chance ({NEAR_CHANCE_RULE}): this descriptor barely tells landmarks apart")
    return "\n".join(lines)


def _cmd_inspect_embeddings(args: argparse.Namespace) -> int:
    from lmkcomp.data.labels import split_labels
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.health import embedding_health
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.fileio import atomic_write

    store = EmbeddingStore(args.store)
    data = LandmarkData(args.data)
    split = _split_of(store, args.split, "--split")
    labels = split_labels(data, split, store.ids, args.labels)
    name = f"{store.directory} ({split}, {len(store)} x {store.dim})"
    # rows stay in the stored dtype (float16 halves the memory); they are upcast block by block
    rows = store.array(store.dtype)
    database = database_labels = against_split = None
    if args.against:
        against = EmbeddingStore(args.against)
        if against.dim != store.dim:
            raise UserInputError(f"{against.directory}: {against.dim}-d embeddings, "
                                 f"{store.directory} has {store.dim}-d")
        against_split = _split_of(against, args.against_split, "--against-split")
        database_labels = split_labels(data, against_split, against.ids, args.labels)
        database = against.array(against.dtype)
        name += f" against {against.directory} ({against_split}, {len(against)} x {against.dim})"
    health = embedding_health(rows, labels, database, database_labels, max_pairs=args.max_pairs, seed=args.seed)
    print(format_health(health, name))
    record = {"store": str(store.directory), "split": split, "against": args.against, "against_split": against_split,
              "labels": args.labels, **health.to_dict()}
    with atomic_write(args.out, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2, allow_nan=False) + "\n")
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    inspect = commands.add_parser(
        "inspect-embeddings", parents=[data_options("dataset root whose CSVs label the images", layout=False)],
        help="descriptor health of an embedding store: mean-vector norm, same / different "
        "landmark cosine similarities, their ROC AUC, effective rank",
        description="Measure whether global descriptors separate landmarks, before any search. Pairs are within "
        "STORE, or STORE x --against; label -1 (no landmark, or not listed) is in no pair.")
    inspect.add_argument("store", metavar="STORE", help="embedding store (lmkcomp extract / ensemble)")
    inspect.add_argument("--split", choices=SPLITS, help="split of STORE, which picks its labels: train (--labels), "
                         "index (index_image_to_landmark.csv), test (recognition solution) "
                         "(default: the split the store records)")
    inspect.add_argument("--against", metavar="STORE2", help="measure STORE x STORE2 pairs only, e.g. a test store "
                         "against a train store (default: pairs within STORE)")
    inspect.add_argument("--against-split", choices=SPLITS, help="split of STORE2 (default: the split it records)")
    inspect.add_argument("--labels", default="train", help="labels of train images: train (train.csv), train_clean "
                         "(train_clean.csv) or the path of a train_clean-format CSV (default: %(default)s)")
    inspect.add_argument("--max-pairs", type=int_at_least(2), default=200_000, help="pairs measured at most; more "
                         "are sampled, half same-landmark and half different (default: %(default)s)")
    inspect.add_argument("--seed", type=int_at_least(0), default=0, help="pair and row sampling "
                         "(default: %(default)s)")
    inspect.add_argument("--out", default="health.json", help="JSON output (default: %(default)s, in the current "
                         "folder)")
    inspect.set_defaults(run=_cmd_inspect_embeddings)
