"""``convbench memory``: a training step's memory, predicted on fake tensors."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "memory"
HELP = "predict a training step's memory on fake tensors, and the largest batch that fits"
DESCRIPTION = (
    "Predict the memory of one training step (parameters, buffers, gradients, optimizer state, inputs, "
    "activations, temporaries, peak) without allocating it, on fake tensors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.measure.sizes import GPU_MEMORY_BYTES

    parser.add_argument(
        "model", metavar="MODEL", help="a registry model, or a reference (pkg.mod:fn, torchvision:NAME, timm:NAME)"
    )
    parser.add_argument("--optimizer", required=True, metavar="O", help="a registry optimizer")
    parser.add_argument("--batch-size", type=arguments.positive, required=True, metavar="B")
    parser.add_argument("--precision", choices=arguments.PRECISIONS, default="fp32")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and inputs")
    parser.add_argument(
        "--input-size", type=arguments.shape, metavar="C,H,W", help="one sample's shape (default: the model's own)"
    )
    parser.add_argument(
        "--num-classes", type=arguments.positive, metavar="N", help="classes (default: the model's own)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="the device predicted for (default: cuda with --gpu or CUDA present)"
    )
    fits = parser.add_mutually_exclusive_group()
    fits.add_argument(
        "--device-memory", type=arguments.size, metavar="SIZE", help="print the largest batch that fits SIZE"
    )
    fits.add_argument(
        "--gpu", choices=sorted(GPU_MEMORY_BYTES), help="print the largest batch that fits this GPU's memory"
    )
    arguments.add_output(parser)
    arguments.add_no_model_code(parser)


def run(args: argparse.Namespace) -> int:
    """Predict one training step's memory on fake tensors: the breakdown by category, the
    peak, and the largest batch that fits the given memory."""
    from bench import api
    from bench.api.session import Console

    console = Console(NAME)
    prediction = api.predict_memory(
        args.model,
        args.optimizer,
        args.batch_size,
        precision=args.precision,
        channels_last=args.channels_last,
        input_size=args.input_size,
        num_classes=args.num_classes,
        device=args.device,
        device_memory=args.device_memory,
        gpu=args.gpu,
        progress=lambda batch, fits: console.say(
            f"searching the largest batch: batch {batch:,} {'fits' if fits else 'does not fit'}"
        ),
    )
    where = (
        f"{args.model} / {args.optimizer} / batch {args.batch_size} / {args.precision}: the peak falls in the "
        f"{prediction.phase} pass; predicted on fake tensors as {prediction.device} in {prediction.seconds:.2f} s"
    )
    after = [where]
    if prediction.memory_bytes is not None:
        memory = prediction.memory_bytes
        size = f"{memory / 2**30:.2f} GiB" if memory >= 2**30 else f"{memory / 2**20:.2f} MiB"
        largest = prediction.largest_batch
        after.append(f"largest batch that fits {size}: {largest if largest is not None else 'none'}")
    arguments.print_output(
        prediction.frame(),
        args,
        after=after,
        fields={
            "model": args.model,
            "optimizer": args.optimizer,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "phase": prediction.phase,
            "device": prediction.device,
            "seconds": prediction.seconds,
            "memory_bytes": prediction.memory_bytes,
            "largest_batch": prediction.largest_batch,
        },
    )
    return 0
