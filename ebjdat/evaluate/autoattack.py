"""AutoAttack (Croce & Hein, 2020) through torchattacks, an optional extra.

``standard``: the four attacks of the original "standard" version, built from
torchattacks' parts with the original budgets: APGD-CE (100 steps, 1 restart), APGD-T
(targeted DLR, 100 steps, n_classes - 1 targets), FAB-T (multi-targeted, 100 steps) and
Square (5000 queries). torchattacks' own ``AutoAttack`` class leaves APGD, APGD-T and
FAB at its default of 10 steps, a much weaker suite; ``steps`` / ``n_queries`` lower the
budgets on purpose (tests, quick looks) and the results record them.

The published EB-JDAT evaluation ships its own torchattacks whose "standard"
AutoAttack is ``published_suite``: APGD-CE and APGD-DLR at 20 steps, FAB-T
(multi-targeted) at 20 steps and Square with 5000 queries, one restart each, APGD-T
commented out; a point counts as robust only if it survives all four (torchattacks'
MultiAttack, the same protocol as ``_run_suite``). ``apgd_correct`` runs a single APGD.
torchattacks clamps every iterate to [0, 1], so its attacks must see pixel images
(:class:`~ebjdat.evaluate.wrapper.PixelModel`).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm import tqdm

from .. import progress
from .robustness import batches, correct
from .wrapper import kept_modes

INSTALL = "pip install \"ebjdat[attacks]\" && pip install --no-deps torchattacks==3.5.1"
MISSING = (f"AutoAttack needs the optional package torchattacks, which is not installed; install it with "
           f"`{INSTALL}` (the extra brings its requirements but torchvision; --no-deps keeps its pins "
           f"from replacing your torch)")


def torchattacks_module():
    """The torchattacks module, or ImportError saying exactly what is missing and how to
    install it (torchattacks itself, or one of its requirements)."""
    try:
        import torchattacks
    except ImportError as e:
        if e.name in (None, "torchattacks"):
            raise ImportError(MISSING) from e
        raise ImportError(f"torchattacks is installed but cannot be imported: it needs {e.name!r}, which is "
                          f"missing; install it with `pip install \"ebjdat[attacks]\"` (or "
                          f"`pip install {e.name}`)") from e
    return torchattacks


def available() -> bool:
    try:
        torchattacks_module()
    except ImportError:
        return False
    return True


def _ta_norm(norm: str) -> str:
    return {"linf": "Linf", "l2": "L2"}[norm]


def standard_suite(model, *, eps: float, norm: str, n_classes: int, seed: int = 0, steps: int = 100,
                   n_queries: int = 5000) -> list[tuple[str, object]]:
    """[(name, torchattacks attack)] of AutoAttack "standard", in its order."""
    ta = torchattacks_module()
    kw = dict(eps=eps, norm=_ta_norm(norm), seed=seed)
    suite = [("apgd-ce", ta.APGD(model, loss="ce", steps=steps, n_restarts=1, **kw))]
    # the targeted DLR loss reads the 3rd and 4th largest logits: it needs 4 classes
    if n_classes >= 4:
        suite.append(("apgd-t", ta.APGDT(model, steps=steps, n_restarts=1, n_classes=n_classes, **kw)))
    if n_classes >= 2:
        suite.append(("fab-t", ta.FAB(model, steps=steps, n_restarts=1, multi_targeted=True,
                                      n_classes=n_classes, **kw)))
    suite.append(("square", ta.Square(model, n_queries=n_queries, n_restarts=1, **kw)))
    return suite


def _run_suite(model, suite, x: Tensor, y: Tensor, clean: Tensor, batch_size: int,
               progress: bool, desc: str) -> tuple[Tensor, dict]:
    """AutoAttack's protocol: each attack runs only on the points every earlier attack
    (and the clean input) left correct; a point is robust if it survives all of them.
    Returns the (N,) bool mask, {attack name: robust count after it} and {attack name:
    its seconds} (host time: the CPU waits for every batch's result, one host read each)."""
    robust = clean.clone()
    after, seconds = {}, {}
    total = len(batches(len(x), batch_size)) * len(suite)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True, unit="batch")
    # torchattacks reseeds torch's global generators (manual_seed) inside its attacks:
    # fork them so the caller's random streams are untouched
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for name, atk in suite:
            t0 = time.perf_counter()
            for s in batches(len(x), batch_size):
                bar.update(1)
                idx = torch.nonzero(robust[s]).flatten() + s.start
                if len(idx) == 0:
                    continue
                dev_idx = idx.to(x.device)
                with kept_modes(model):  # torchattacks switches modes itself: keep the caller's
                    xa = atk(x[dev_idx], y[dev_idx]).detach()
                with torch.no_grad():
                    hit = (model(xa).argmax(1) == y[dev_idx]).cpu()
                robust[idx[~hit]] = False
            after[name] = int(robust.sum())
            seconds[name] = round(time.perf_counter() - t0, 2)
    bar.close()
    return robust, after, seconds


@progress.reported(lambda r, a, k: f"AutoAttack standard at eps {k.get('eps', 0):.4g}: {progress.share(r)} robust")
def autoattack_correct(model, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
                       n_classes: int | None = None, steps: int = 100, n_queries: int = 5000,
                       seed: int = 0, batch_size: int = 256, clean: Tensor | None = None,
                       progress: bool = False) -> tuple[Tensor, dict]:
    """(N,) bool robust under AutoAttack "standard" at eps (x in [0, 1] pixels), and a
    dict describing the run: {"version", "attacks", "steps", "n_queries",
    "robust_after": {attack: count}}. ImportError (with the install command) when
    torchattacks is missing."""
    if clean is None:
        clean = correct(model, x, y, batch_size=batch_size)
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
    suite = standard_suite(model, eps=eps, norm=norm, n_classes=n_classes, seed=seed, steps=steps,
                           n_queries=n_queries)
    robust, after, seconds = _run_suite(model, suite, x, y, clean, batch_size, progress, "AutoAttack")
    full = steps == 100 and n_queries == 5000
    info = {"version": "standard" if full else "standard (reduced budget)",
            "attacks": [n for n, _ in suite], "steps": steps, "n_queries": n_queries,
            "robust_after": after, "seconds": seconds, "library": "torchattacks"}
    return robust, info


def apgd_correct(model, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", steps: int = 20,
                 n_restarts: int = 1, loss: str = "ce", seed: int = 0, batch_size: int = 256,
                 clean: Tensor | None = None, progress: bool = False) -> tuple[Tensor, dict]:
    """(N,) bool robust under one torchattacks.APGD(loss, steps, n_restarts) run: the
    published protocol's "AutoAttack" with its defaults (20 steps, 1 restart, CE)."""
    ta = torchattacks_module()
    if clean is None:
        clean = correct(model, x, y, batch_size=batch_size)
    atk = ta.APGD(model, eps=eps, norm=_ta_norm(norm), steps=steps, n_restarts=n_restarts, loss=loss,
                  seed=seed)
    robust, _, _ = _run_suite(model, [("apgd-" + loss, atk)], x, y, clean, batch_size, progress, "APGD")
    return robust, {"attack": f"torchattacks.APGD(loss={loss!r}, steps={steps}, n_restarts={n_restarts})"}


def published_suite(model, *, eps: float, n_classes: int, seed: int = 0, steps: int = 20,
                    n_queries: int = 5000) -> list[tuple[str, object]]:
    """[(name, torchattacks attack)] of the published "AutoAttack" (linf), in its order:
    APGD-CE, APGD-DLR (needs 3 classes: the DLR loss reads the third-largest logit),
    FAB-T (2 classes or more) at ``steps`` iterations and Square with ``n_queries``."""
    ta = torchattacks_module()
    kw = dict(eps=eps, norm="Linf", seed=seed)
    suite = [("apgd-ce", ta.APGD(model, loss="ce", steps=steps, n_restarts=1, **kw))]
    if n_classes >= 3:
        suite.append(("apgd-dlr", ta.APGD(model, loss="dlr", steps=steps, n_restarts=1, **kw)))
    if n_classes >= 2:
        suite.append(("fab-t", ta.FAB(model, steps=steps, n_restarts=1, multi_targeted=True,
                                      n_classes=n_classes, **kw)))
    suite.append(("square", ta.Square(model, n_queries=n_queries, n_restarts=1, **kw)))
    return suite


@progress.reported(lambda r, a, k: f"published AutoAttack suite: {progress.share(r)} robust")
def published_autoattack_correct(model, x: Tensor, y: Tensor, *, eps: float, steps: int = 20,
                                 n_queries: int = 5000, n_classes: int | None = None, seed: int = 0,
                                 batch_size: int = 256, clean: Tensor | None = None,
                                 progress: bool = False) -> tuple[Tensor, dict]:
    """(N,) bool robust under every attack of ``published_suite`` at linf eps (x in [0, 1]
    pixels), and {"attacks", "steps", "n_queries", "robust_after", "seconds", "library"}.
    ImportError (with the install command) when torchattacks is missing."""
    if clean is None:
        clean = correct(model, x, y, batch_size=batch_size)
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
    suite = published_suite(model, eps=eps, n_classes=n_classes, seed=seed, steps=steps, n_queries=n_queries)
    robust, after, seconds = _run_suite(model, suite, x, y, clean, batch_size, progress, "published AutoAttack")
    return robust, {"attacks": [n for n, _ in suite], "steps": steps, "n_queries": n_queries,
                    "robust_after": after, "seconds": seconds, "library": "torchattacks"}
