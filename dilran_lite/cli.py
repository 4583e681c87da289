"""The ``dilran-lite`` command: info, fuse, train, evaluate, download."""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .volumes_cli import add_register_parser, add_volume_arguments, run_volume_fuse, wants_volume

__all__ = ["main", "build_parser"]


def _cmd_info(args: argparse.Namespace) -> int:
    from . import __version__
    from .model import PRESETS, build_model, count_macs, count_parameters
    from .pretrained import available

    s = args.size
    lo, hi = INFO_SIZES
    if not lo <= s <= hi:
        raise UserError(f"--size {s}: give an image side from {lo} to {hi} pixels")
    print(f"dilran-lite {__version__}")
    print(f"{'preset':8} {'parameters':>11} {'GMAC/image':>11} {'GMAC/fused pair':>16}  ({s}x{s})")
    for name in PRESETS:
        m = build_model(name)
        img, pair = count_macs(m, s) / 1e9, count_macs(m, s, pair=True) / 1e9
        print(f"{name:8} {count_parameters(m):>11,} {img:>11.2f} {pair:>16.2f}")
    print("GMAC: 10^9 multiply-accumulates of the convolutions; an image = encode + decode,")
    print("a fused pair = two encodes + one decode.")
    print(f"shipped weights: {', '.join(available()) or 'none'}")
    return 0


def _load(args: argparse.Namespace):
    """The model of ``--weights`` (a DILRAN or the learned fusion) on ``--device``, with the
    strategy checked against it: only a DILRAN has one."""
    from .inference import make_fuser
    from .pretrained import load_weights
    from .utils import resolve_device

    model = load_weights(args.weights, device=resolve_device(args.device))
    make_fuser(model, args.strategy)  # refuses --strategy for a model that has none
    return model


def _max_memory(args: argparse.Namespace) -> float | None:
    """``--max-memory`` in bytes; by default the memory the system reports available."""
    if args.max_memory is not None:
        if not math.isfinite(args.max_memory) or args.max_memory <= 0:
            raise UserError(
                f"--max-memory must be a finite positive number of GB, got {args.max_memory}"
            )
        return args.max_memory * 2**30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _fuse_folder(args: argparse.Namespace, limit: float | None) -> int:
    from .data import PAIRS, PairedDataset
    from .inference import check_output_folder, fuse_dataset

    if args.images:
        raise UserError("give either two images or --data DIR, not both")
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"--data {data}: no such folder; give the folder holding MRI/ and CT/")
    pairs = args.pairs or next((p for p, (_, m) in PAIRS.items() if (data / m).is_dir()), "mri-ct")
    try:
        ds = PairedDataset(data, pairs=pairs, split=args.split)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    check_output_folder(args.output, ds.root)
    model = _load(args)
    written = fuse_dataset(model, ds, args.output, args.strategy, not args.quiet, limit)
    print(f"wrote {len(written)} fused images to {args.output}")
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    """Inputs and output checked first, then the weights loaded, then the fusion."""
    from .data import load_image
    from .inference import check_output_file, fuse_pair, save_image
    from .model import MIN_SIZE

    limit = _max_memory(args)
    if wants_volume(args):
        return run_volume_fuse(args, limit, _load)
    if args.data:
        return _fuse_folder(args, limit)
    if len(args.images) != 2:
        raise UserError("fuse needs two images (MRI and CT/PET/SPECT) or --data DIR")
    check_output_file(args.output, args.images)
    a = load_image(args.images[0], "L")
    b = load_image(args.images[1], "RGB")
    if (b[0] == b[1]).all() and (b[1] == b[2]).all():  # a grey image saved as RGB
        b = b[:1]
    for path, x in zip(args.images, (a, b)):
        if min(x.shape[-2:]) < MIN_SIZE:
            raise UserError(
                f"{path} is {x.shape[-2]}x{x.shape[-1]} pixels; DILRAN needs at least "
                f"{MIN_SIZE}x{MIN_SIZE}"
            )
    if a.shape[-2:] != b.shape[-2:]:
        raise UserError(
            f"the images differ in size: {args.images[0]} is {tuple(a.shape[-2:])}, "
            f"{args.images[1]} is {tuple(b.shape[-2:])} (they must be co-registered)"
        )
    model = _load(args)
    fused = fuse_pair(model, a, b, args.strategy, max_memory=limit)
    print(f"wrote {save_image(fused, args.output)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import TrainConfig, quick_config, read_metadata, train
    from .utils import resolve_device

    fields = {
        k: v
        for k, v in dict(
            preset=args.preset,
            split=args.split,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            crop=args.crop,
            lambda1=args.lambda1,
            lambda2=args.lambda2,
            vgg_weights=args.vgg_weights,
            seed=args.seed,
            data=args.data,
            data_root=args.data_root,
        ).items()
        if v is not None
    }
    if args.resume and args.overwrite:
        raise UserError("give --resume (continue the run) or --overwrite (replace it), not both")
    given = dataclasses.asdict(quick_config(**fields)) if args.quick else fields
    checked = TrainConfig(**given)  # checks every option given: exit 2 before any work
    cfg = None if args.resume else checked
    last = Path(args.out) / "last.safetensors"
    if args.resume and last.is_file():  # the configuration comes from the checkpoint
        try:
            saved = TrainConfig.from_dict(read_metadata(last).get("train_config") or {})
        except UserError as err:
            raise UserError(f"cannot resume {last}: its training config is invalid: {err}") from err
        cfg = dataclasses.replace(saved, **given)  # a conflict is refused by train()
    resolve_device(args.device)
    _, meta = train(cfg, args.out, resume=args.resume, device=args.device, overwrite=args.overwrite)
    h = meta["history"]
    if h["val_loss"]:
        print(f"done: {meta['epoch']} epochs, last val loss {h['val_loss'][-1]:.5f}; {args.out}")
    return 0


def _check_csv_target(args: argparse.Namespace) -> None:
    """``--csv`` must not be an image, nor inside the dataset or the ``--fused`` folder: the
    table would overwrite an input."""
    from .data import resolve_data_root

    if not args.csv:
        return
    csv = Path(args.csv).resolve()
    folders = [Path(f) for f in (args.fused, args.dataset) if f and Path(f).is_dir()]
    if args.dataset and not Path(args.dataset).is_dir():  # a pair-set name: its data root
        folders.append(resolve_data_root())
    for folder in folders:
        if folder.resolve() in csv.parents:
            raise UserError(
                f"--csv {args.csv} is inside the input folder {folder}: it could overwrite an "
                "input; write the table somewhere else"
            )
    if csv.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}:
        raise UserError(f"--csv {args.csv} names an image; give a .csv file name")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import check_args, resolve_dataset, run_from_args

    _check_csv_target(args)
    check_args(args)  # conflicting options and the CSV path, before the weights load
    method = None
    if args.weights:
        resolve_dataset(args.dataset, args.split, args.pairs)  # the data, before the weights
        from .inference import fuse_pair, make_fuser

        fuser = make_fuser(_load(args), args.strategy)
        method = functools.partial(fuse_pair, fuser)
    return run_from_args(args, method)


def _cmd_download(args: argparse.Namespace) -> int:
    from .data import PAIRS
    from .download import DownloadError, download_atlas

    failed: list[str] = []
    for pairs in PAIRS if args.pairs == "all" else [args.pairs]:
        try:
            download_atlas(args.dest, pairs=pairs, base_url=args.base_url, progress=not args.quiet)
        except DownloadError as err:
            if args.pairs != "all":
                raise
            print(f"dilran-lite: error: {pairs}: {err}", file=sys.stderr)
            failed.append(pairs)
    if failed:
        raise DownloadError(f"could not complete {', '.join(failed)} (see above); run again")
    return 0


#: ``info --size``: the smallest side DILRAN takes, and a side far past any scan
INFO_SIZES = (8, 1 << 16)


def _add_info_parser(sub) -> None:
    q = sub.add_parser("info", help="parameters and multiply-accumulates of each preset")
    q.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    q.set_defaults(func=_cmd_info)


def _add_model_args(q: argparse.ArgumentParser, weights: str | None) -> None:
    from .fusion import STRATEGIES

    q.add_argument("--weights", default=weights, help="shipped name or .safetensors path")
    q.add_argument(
        "--strategy",
        default=None,
        choices=sorted(STRATEGIES),
        help="DILRAN's fusion strategy (default sfnn-max; the learned fusion has none)",
    )
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda)")


def _add_fuse_parser(sub) -> None:
    from .pretrained import DEFAULT_WEIGHTS

    q = sub.add_parser("fuse", help="fuse one pair, or every pair of a folder/split")
    q.add_argument("images", nargs="*", help="MRI.png CT.png (or PET/SPECT .png in colour)")
    q.add_argument("-o", "--output", required=True, help="fused .png, or a folder with --data")
    q.add_argument("--data", help="a dataset folder holding MRI/ and CT/ (or PET/, SPECT/)")
    q.add_argument("--split", default=None, help="with --data: e.g. series/test")
    q.add_argument("--pairs", default=None, help="mri-ct, mri-pet or mri-spect (default: guess)")
    q.add_argument("--quiet", action="store_true")
    q.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GB",
        help="refuse a fusion estimated to need more (default: the memory available)",
    )
    _add_model_args(q, DEFAULT_WEIGHTS)
    add_volume_arguments(q)
    q.set_defaults(func=_cmd_fuse)


def _add_train_parser(sub) -> None:
    q = sub.add_parser("train", help="train the autoencoder (Sec. 4.2) with checkpoints")
    q.add_argument("--out", default="runs/dilran", help="checkpoint folder (default runs/dilran)")
    q.add_argument("--quick", action="store_true", help="lite preset, a few hundred steps")
    q.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.safetensors with its configuration (--epochs may change)",
    )
    q.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUT (default: refuse)"
    )
    q.add_argument("--preset", choices=["paper", "lite"])
    q.add_argument("--split", choices=["series", "paper"])
    q.add_argument("--data", choices=["auto", "atlas", "phantom"])
    q.add_argument("--data-root")
    for name in ("epochs", "batch-size", "crop", "seed"):
        q.add_argument(f"--{name}", type=int)
    for name in ("lr", "lambda1"):
        q.add_argument(f"--{name}", type=float)
    q.add_argument("--lambda2", type=float, help="0 trains without VGG16 (no weights needed)")
    q.add_argument("--vgg-weights", help="path or URL of torchvision's vgg16-397923af.pth")
    q.add_argument("--device")
    q.set_defaults(func=_cmd_train)


def _add_evaluate_parser(sub) -> None:
    from .evaluate import build_parser as evaluate_parser

    q = sub.add_parser(
        "evaluate", help="fusion metrics of a method, or of a folder of fused images (--fused)"
    )
    evaluate_parser(q)
    _add_model_args(q, None)
    q.set_defaults(func=_cmd_evaluate)


def _add_download_parser(sub) -> None:
    q = sub.add_parser("download", help="fetch and verify the atlas pairs")
    q.add_argument("--pairs", default="mri-ct", choices=["mri-ct", "mri-pet", "mri-spect", "all"])
    q.add_argument("--dest", default=None, help="data root (default: $DILRAN_DATA or data/)")
    q.add_argument("--base-url", default=None, help="a mirror laid out like the data root")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    q.set_defaults(func=_cmd_download)


def build_parser() -> argparse.ArgumentParser:
    """The ``dilran-lite`` parser: one ``_add_<command>_parser`` per subcommand."""
    p = argparse.ArgumentParser(prog="dilran-lite", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_info_parser,
        _add_fuse_parser,
        add_register_parser,
        _add_train_parser,
        _add_evaluate_parser,
        _add_download_parser,
    ):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a ``UserError`` becomes one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"dilran-lite: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
