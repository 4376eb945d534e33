"""Train the independent digits network behind the generation metrics (digits FD and
conditional accuracy, ebjdat/evaluate/generation.py) and write its weights and record.

    python scripts/train_digits_features.py [--epochs 80] [--seed 0] [--out ebjdat/evaluate]

Standard training on the embedded training split only (random 1-pixel shifts, no flips),
Adam 1e-3 for the given epochs (1e-4 in the last quarter), batch 64, one CPU thread; the test split is used only to
report the accuracy in the record. Refuses to overwrite existing files unless --force.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ebjdat.data import Loader, load_dataset
from ebjdat.evaluate.generation import FeatureNet
from ebjdat.runs.checkpoint import save_checkpoint, state_digest


def train(epochs: int, seed: int) -> tuple[FeatureNet, float]:
    torch.manual_seed(seed)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = Loader(train_set, 64, augment=True, generator=torch.Generator().manual_seed(seed))
    total = epochs * loader.steps_per_epoch
    for step in range(total):
        if step == 3 * total // 4:   # the last quarter at a tenth of the rate
            opt.param_groups[0]["lr"] = 1e-4
        x, y = next(loader)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(test_set.x).argmax(1) == test_set.y).double().mean())
    return net, acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="ebjdat/evaluate")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    files = out / "digits_features.pt", out / "digits_features.json"
    if not args.force and any(f.exists() for f in files):
        print(f"{files[0]} or {files[1]} exists; pass --force to replace them", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    net, acc = train(args.epochs, args.seed)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    save_checkpoint(files[0], state)
    rec = {"command": f"python scripts/train_digits_features.py --epochs {args.epochs} --seed {args.seed}",
           "data": "embedded digits, training split only (1438 images)", "test_accuracy": round(acc, 4),
           "n_test": 359, "torch": torch.__version__, "sha256": state_digest(state)}
    files[1].write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
