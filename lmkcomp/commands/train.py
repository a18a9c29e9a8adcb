"""`lmkcomp train` (a GeM + margin-head descriptor), `lmkcomp bench train|extract` (images/s and
peak memory with and without channels_last, AMP, torch.compile) and `lmkcomp bench heads` (one
config per head, each scored on the test split)."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import (
    data_options,
    device_options,
    overrides,
    positive_int,
    quiet_options,
    scales,
    set_options,
)
from lmkcomp.errors import UserInputError


def _train_config(args: argparse.Namespace):
    """The `TrainConfig` of CONFIG with the `--set` overrides and `--data` as `data.root`."""
    from lmkcomp.config import load_config
    from lmkcomp.train.config import TrainConfig, resolve_config_path

    changes = overrides(args.set)
    if args.data:
        changes["data.root"] = args.data
    return load_config(resolve_config_path(args.config), TrainConfig, changes)


def _cmd_train(args: argparse.Namespace) -> int:
    from lmkcomp.train.trainer import Trainer

    config = _train_config(args)
    rows = Trainer(config, args.out, resume=args.resume, progress=not args.quiet).fit()
    if rows:
        from lmkcomp.features.health import NEAR_CHANCE_RULE, near_chance

        last = rows[-1]
        print(f"{args.out}: epoch {last['epoch']} val mAP@100 {last['val_map@100']:.4f} val GAP {last['val_gap']:.4f}, "
              f"same-vs-different AUC {last['val_auc']:.3f}, mean-vector norm {last['train_mean_norm']:.3f}")
        if near_chance(last["val_auc"], last["train_mean_norm"]):
            print(f"WARNING: the descriptor is near chance ({NEAR_CHANCE_RULE}); train longer, on more images, or "
                  "from pretrained weights")
    return 0


def _cmd_bench_models(args: argparse.Namespace) -> int:
    from lmkcomp.bench.models import VARIANTS, run_benchmark

    chosen = [v for v in VARIANTS if args.variants is None or v["name"] in args.variants]
    unknown = set(args.variants or ()) - {v["name"] for v in VARIANTS}
    if unknown:
        raise UserInputError(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(v['name'] for v in VARIANTS)}")
    out = args.out or f"bench/{args.bench}.json"
    print(run_benchmark(args.bench, args.backbone, args.image_size, args.batch_size, args.device, args.steps,
                        args.warmup, out, scales=args.scales, flip=args.flip, variants=chosen))
    print(f"wrote {out}")
    return 0


def _cmd_bench_heads(args: argparse.Namespace) -> int:
    from lmkcomp.bench.heads import VARIANTS, run_heads_benchmark

    unknown = set(args.variants or ()) - set(VARIANTS)
    if unknown:
        raise UserInputError(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    config = _train_config(args)
    out = args.out or "bench/heads.json"
    print(run_heads_benchmark(config, args.workdir, out, args.variants, progress=not args.quiet))
    print(f"wrote {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", parents=[
        data_options("dataset root (overrides data.root)", required=False, layout=False),
        set_options("override a config key, e.g. model.head=cosface"),
        quiet_options()], help="train a GeM + margin-head descriptor (resumable)")
    train.add_argument("config", help="YAML config, or a built-in one: cpu-small, gpu-gldv2")
    train.add_argument("--out", required=True, help="run folder (checkpoint, metrics.csv, tensorboard/)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.set_defaults(run=_cmd_train, output_folder="out")


def register_benches(benches: argparse._SubParsersAction) -> None:
    for name, text in (("train", "training images/s and peak memory"), ("extract", "extraction images/s and peak memory")):
        sub = benches.add_parser(name, parents=[device_options()], help=text + " with/without channels_last, AMP, torch.compile")
        sub.add_argument("--backbone", default="resnet18")
        sub.add_argument("--image-size", type=positive_int, default=224)
        sub.add_argument("--batch-size", type=positive_int, default=16)
        sub.add_argument("--steps", type=positive_int, default=5)
        sub.add_argument("--warmup", type=positive_int, default=2)
        sub.add_argument("--variants", type=lambda text: text.split(","), help="comma-separated subset, e.g. fp32,bf16")
        sub.add_argument("--scales", type=scales, default=(1.0,) if name == "train" else (0.7071, 1.0, 1.4142))
        sub.add_argument("--flip", action="store_true", help="extract: add horizontal-flip TTA")
        sub.add_argument("--out", help=f"JSON output (default bench/{name}.json)")
        sub.set_defaults(run=_cmd_bench_models)

    heads = benches.add_parser("heads", parents=[
        data_options("dataset root (overrides data.root)", required=False, layout=False),
        set_options("override a config key, e.g. model.head=cosface"),
        quiet_options()], help="train one config per head (and GeM vs avg) and score each on the test split")
    heads.add_argument("config", nargs="?", default="cpu-small")
    heads.add_argument("--workdir", default="runs/bench-heads")
    heads.add_argument("--variants", type=lambda text: text.split(","))
    heads.add_argument("--out", help="JSON output (default bench/heads.json)")
    heads.set_defaults(run=_cmd_bench_heads, output_folder="workdir")
