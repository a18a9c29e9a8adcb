"""`lmkcomp train-delf` and `lmkcomp fit-delf-pca`: the trainable PyTorch DELF of `delf_baseline`.

Its local features are then extracted with `lmkcomp extract-local --method delf-torch
--set checkpoint=RUN/delf.pt --set pca=PCA.npz`.
"""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import fraction, positive_int, scales


def _cmd_train_delf(args: argparse.Namespace) -> int:
    from delf_baseline.train import CHECKPOINT_NAME, DelfTrainConfig, DelfTrainer

    config = DelfTrainConfig(
        data=args.data, layout=args.layout, labels=args.labels, val_fraction=args.val_fraction,
        backbone=args.backbone, weights=args.weights, epochs=args.epochs,
        image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, amp=args.amp, seed=args.seed, checkpoint_every_steps=args.checkpoint_every,
        device=args.device, workers=args.workers,
    )
    # loading --weights logs what loaded and what did not (lmkcomp.models.weights)
    trainer = DelfTrainer(config, args.out, resume=args.resume, progress=not args.quiet)
    last = trainer.fit()[-1]
    print(f"{trainer.out / CHECKPOINT_NAME}: epoch {last['epoch']} train loss {last['train_loss']:.4f} "
          f"val loss {last['val_loss']:.4f} val accuracy {last['val_accuracy']:.4f}")
    return 0


def _cmd_fit_delf_pca(args: argparse.Namespace) -> int:
    from delf_baseline.train import fit_delf_pca
    from lmkcomp.data.layout import LandmarkData

    data = LandmarkData(args.data, args.layout)
    pca = fit_delf_pca(args.checkpoint, data, args.out, dim=args.dim, images=args.images, seed=args.seed,
                       scales=args.scales, max_features=args.max_features, device=args.device,
                       progress=not args.quiet)
    images = min(args.images, len(data.split_ids("train")))
    print(f"{args.out}: PCA {pca.input_dim} -> {pca.dim} of the descriptors of {images} train images")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    # light modules only: torch and timm load when a command runs
    from delf_baseline.savedmodel import OFFICIAL_SCALES
    from lmkcomp.data.layout import LAYOUTS

    train = commands.add_parser("train-delf", help="train a PyTorch DELF (attention-pooled classifier; resumable)")
    train.add_argument("--data", required=True, help="dataset root")
    train.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    train.add_argument("--out", required=True, help="run folder: delf.pt (checkpoint) and metrics.csv")
    train.add_argument("--labels", default="train_clean", help="train, train_clean, or a CSV in train_clean format")
    train.add_argument("--val-fraction", type=fraction, default=0.1,
                       help="share of the images of landmarks with >= 3 images held out for validation")
    train.add_argument("--backbone", default="resnet50", help="a timm ResNet, cut after its stride-16 stage")
    train.add_argument("--weights", help="local backbone weights (e.g. ImageNet resnet50), or an lmkcomp train checkpoint whose backbone is taken; random when absent")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--image-size", type=positive_int, default=320, help="side of the square training crops")
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine after warm-up)")
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--warmup-epochs", type=float, default=0.5)
    train.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                       help="also checkpoint every STEPS optimizer steps (0: after each epoch only)")
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    train.add_argument("--workers", type=int, default=0, help="data-loading processes")
    train.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=_cmd_train_delf, output_folder="out")

    pca = commands.add_parser("fit-delf-pca", help="fit the descriptor PCA of a trained PyTorch DELF on train images")
    pca.add_argument("--checkpoint", required=True, help="delf.pt written by train-delf")
    pca.add_argument("--data", required=True, help="dataset root")
    pca.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    pca.add_argument("--out", required=True, help="PCA file (.npz) for extract-local --set pca=...")
    pca.add_argument("--dim", type=positive_int, default=40, help="output dimension (official DELF: 40)")
    pca.add_argument("--images", type=positive_int, default=1000, help="train images sampled for the fit")
    pca.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    pca.add_argument("--scales", type=scales, default=OFFICIAL_SCALES, help="pyramid scales, as at extraction")
    pca.add_argument("--max-features", type=positive_int, default=1000, help="features per image, as at extraction")
    pca.add_argument("--device", default="cpu")
    pca.add_argument("--quiet", action="store_true")
    pca.set_defaults(run=_cmd_fit_delf_pca)
