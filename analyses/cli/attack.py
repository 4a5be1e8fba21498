"""``nnslicer attack``: adversarial examples of a model, written for ``nnslicer detect score``."""

from __future__ import annotations

import argparse

import numpy as np

from nnslicer.cli.options import load_array, load_model, progress, refuse_unread
from nnslicer.io import atomic_path

from ..attacks import bim, cw_l2, deepfool, fgsm, jsma, pgd

#: ``--method`` -> (attack, {option dest: the attack's parameter}) for the strength options it reads.
METHODS = {
    "fgsm": (fgsm, {"eps": "eps"}),
    "bim": (bim, {"eps": "eps", "step": "step", "steps": "steps"}),
    "pgd": (pgd, {"eps": "eps", "step": "step", "steps": "steps", "seed": "seed"}),
    "cw": (cw_l2, {"steps": "max_iter"}),
    "deepfool": (deepfool, {"steps": "max_iter"}),
    "jsma": (jsma, {"seed": "seed"}),
}
#: The strength options, as ``dest -> option``.
STRENGTH = {"eps": "--eps", "step": "--step", "steps": "--steps", "seed": "--seed"}

EPILOG = """examples:
  nnslicer attack model.keras --data x_test.npy --labels y_test.npy --method fgsm --eps 0.1 -o adv.npz
  nnslicer attack model.keras --data x_test.npy --labels y_test.npy --method pgd --eps 0.05 --steps 40 -o adv.npz
  nnslicer detect score model.keras detector.nnsd --input adv.npz

Only successful examples are written: the clean input was classified correctly and its
adversarial example is not. The .npz holds 'x' (the adversarial inputs, which 'detect score
--input' reads), 'source_index' (their rows in --data), 'y' (the clean inputs' labels) and
'pred' (the model's class of each adversarial input). fgsm, bim and pgd run here; cw, deepfool
and jsma through the Adversarial Robustness Toolbox (slow on a CPU: attack few inputs)."""


def cmd_attack(args):
    attack, reads = METHODS[args.method]
    readers = {option: (dest, [m for m, (_, r) in METHODS.items() if dest in r]) for dest, option in STRENGTH.items()}
    refuse_unread(args, args.method, readers, dict.fromkeys(STRENGTH))
    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y") if args.labels else None
    params = {name: getattr(args, dest) for dest, name in reads.items() if getattr(args, dest) is not None}
    clip = None if args.no_clip else tuple(args.clip)
    with progress(len(x), args.method) as update:
        result = attack(model, x, y, clip=clip, batch_size=args.batch_size, progress=update, **params)
    with atomic_path(args.output, ".npz") as tmp:
        np.savez(tmp, x=result.x_adv, source_index=result.source_index, y=result.y_clean, pred=result.pred_adv)
    print(f"{result!r}\n{len(result)} adversarial examples -> {args.output}")
    return 0


def add_commands(subparsers):
    """Add ``nnslicer attack``."""
    p = subparsers.add_parser(
        "attack", help="write a model's adversarial examples (FGSM, BIM, PGD, CW, DeepFool, JSMA)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Attack the inputs of --data and write the successful adversarial examples with "
                    "their source rows, for 'nnslicer detect score'.")
    p.add_argument("model", help="a .keras or .h5 classifier")
    p.add_argument("--data", required=True, help="clean inputs (.npy/.npz)")
    p.add_argument("--labels", help="their labels (.npy/.npz); default: the model's predictions")
    p.add_argument("--method", required=True, choices=tuple(METHODS), help="the attack")
    p.add_argument("--eps", type=float, default=None,
                   help="L-inf budget of fgsm, bim and pgd (default: the attack's, 0.1)")
    p.add_argument("--step", type=float, default=None, help="step size of bim and pgd (default 0.01)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations of bim, pgd, cw and deepfool (default: the attack's)")
    p.add_argument("--seed", type=int, default=None, help="random start of pgd, targets of jsma (default 0)")
    p.add_argument("--clip", type=float, nargs=2, default=(0.0, 1.0), metavar=("MIN", "MAX"),
                   help="valid input range the examples are clipped to (default 0 1)")
    p.add_argument("--no-clip", action="store_true", help="do not clip the examples")
    p.add_argument("--batch-size", type=int, default=256, help="inputs attacked at a time (default 256)")
    p.add_argument("-o", "--output", required=True, help="where to write the examples (.npz)")
    p.set_defaults(func=cmd_attack, outputs={"-o": ("output", (".npz",))})
