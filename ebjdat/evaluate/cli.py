"""``ebjdat eval --checkpoint P``: the evaluation of a training checkpoint as a table on
the terminal, PNGs in --out and, with --json, every number for machines.

While it runs, a line on stderr says what finished and how long it took: each attack
(PGD at each radius, random noise, AutoAttack) and each part after them (generated
points, energy landscape and samples, FID, OOD detection, calibration, the RobustBench
card), so a run of minutes never sits silent (``ebjdat.progress``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .. import progress


def parse_eps(text: str) -> float:
    """"8/255" or "0.0314" -> float (argparse type; negative values pass, evaluate rejects them)."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r} (e.g. 8/255 or 0.0314)") from None


def fmt_eps(e: float) -> str:
    """0.0314 -> "8/255 = 0.0314" when e is a whole number of 255ths, else "0.05"."""
    k = e * 255
    if 0 < e < 1 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255 = {e:.4f}"
    return f"{e:.4g}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def format_report(r: dict) -> str:
    """The terminal table of an evaluate_checkpoint / evaluate result."""
    lines = []
    if "checkpoint" in r:
        lines.append(f"ebjdat eval  {r['checkpoint']}  ({r.get('variant')} on {r.get('dataset')}, step {r.get('step')})")
    lines.append(f"{r['n']} test points, {r.get('device', '')} {r['precision']}, protocol {r['protocol']}")
    std = r["protocol"] in ("standard", "both")
    ref = r.get("published_protocol")
    cols = []
    if std:
        aa = r.get("autoattack")
        cols.append(("standard", {
            "attack space": "[0, 1] pixels",
            "eps (pixels)": f"{fmt_eps(r['eps'])} ({r['norm']})",
            "test-time noise": "none",
            "clean": _pct(r["clean_acc"]),
            "top-5 (clean)": _pct(r["top5_acc"]) if "top5_acc" in r else None,
            "PGD": _pct(r.get("pgd_acc")) + f" (PGD-{r['steps']}, alpha {fmt_eps(r['alpha']).split(' =')[0]}" +
                   (f", {r['restarts']} restarts)" if r["restarts"] > 1 else ")"),
            "AutoAttack": _pct(r.get("autoattack_acc")) + (
                f" ({aa['version']}, {aa['steps']} steps, {aa['n_queries']} queries)" if aa else " (not run: --autoattack)"),
            "worst case": _pct(r.get("worst_case_acc")),
            "random noise": _pct(r.get("noise_acc"))}))
    if ref:
        raa = ref.get("autoattack")
        cols.append(("published", {
            "attack space": "[-1, 1] model input",
            "eps (pixels)": f"{fmt_eps(ref['eps_pixels'])} (8/255 in [-1, 1])",
            "test-time noise": ref.get("test_time_noise") or "none",
            "clean": _pct(ref["clean_acc"]) + (" (noisy inputs)" if ref.get("test_time_noise") else ""),
            "PGD": _pct(ref["pgd_acc"]) + f" (PGD-{ref['steps']}, alpha {ref['alpha_model_units'] * 255:g}/255 "
                                          "in [-1, 1])",
            "AutoAttack": _pct(ref.get("autoattack_acc")) + (
                f" ({', '.join(raa['attacks'])}: {raa['steps']} steps, {raa['n_queries']} queries)"
                if raa else " (torchattacks missing)"),
            "worst case": _pct(ref.get("worst_case_acc")),
            "random noise": _pct(ref.get("noise_acc"))}))
    labels = []
    for _, rows in cols:
        labels += [k for k in rows if k not in labels]
    table = [[""] + [name for name, _ in cols]]
    for k in labels:
        cells = [rows.get(k) for _, rows in cols]
        if any(c is not None for c in cells):
            table.append([k] + [c if c is not None else "" for c in cells])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.append("")
    if r.get("pgd_curve"):
        lines.append(f"PGD-{r['steps']} curve ({r['norm']}, pixels): " +
                     " | ".join(f"{fmt_eps(p['eps']).split(' =')[0]}: {_pct(p['acc'])}" for p in r["pgd_curve"]))
    if "energy_clean_mean" in r:
        parts = [f"clean {r['energy_clean_mean']:.4g}"]
        if "energy_adv_mean" in r:
            parts.append(f"adversarial {r['energy_adv_mean']:.4g}")
        if "energy_gen_mean" in r:
            parts.append(f"generated {r['energy_gen_mean']:.4g}")
        lines.append("energy E(x) = -logsumexp logits (mean): " + ", ".join(parts))
        gaps = [f"{name} {r[key]:+.4g}" for name, key in (("adversarial - clean", "energy_gap_adv"),
                                                          ("generated - clean", "energy_gap_gen")) if key in r]
        if gaps:
            lines.append("  gaps: " + ", ".join(gaps) + f"  (generated from {r.get('energy_generated_from', '?')})")
    for suffix, what in (("", "buffer samples"), ("_fresh", "fresh chains from the initial distribution")):
        if "gen_fd" + suffix in r:
            lines.append(f"generation (digits network), {what}: FD {r['gen_fd' + suffix]:.2f} to the test split, "
                         f"{100 * r['gen_cond_acc' + suffix]:.1f}% of {r['gen_n' + suffix]} look like the "
                         f"model's class")
    if "gen_fd_published" in r:
        gr = r["gen_published"]
        lines.append(f"generation (digits network), published way: FD {r['gen_fd_published']:.2f} of the replay "
                     f"buffer's top-{gr['ratio']:g} per class ({gr['kept']} of {gr['buffer_size']} rows), "
                     f"{100 * r['gen_cond_acc_published']:.1f}% look like the model's class")
    for suffix, what in (("", "generated from the buffer"), ("_fresh", "fresh chains (standard)")):
        if "fid" + suffix in r:
            lines.append(f"FID {r['fid' + suffix]:.3f}, IS {r['is' + suffix]:.3f} +- {r['is_std' + suffix]:.3f}, "
                         f"{what} ({r['fid_n_generated' + suffix]} generated vs {r['fid_n_real' + suffix]} test images)")
        elif "fid_note" + suffix in r:
            lines.append(r["fid_note" + suffix])
    if "fid_published" in r:
        gr = r["gen_published"]
        lines.append(f"FID {r['fid_published']:.3f}, published way: replay buffer's top-{gr['ratio']:g} per class "
                     f"({gr['kept']} of {gr['buffer_size']} rows), computed by {r['fid_published_backend']}")
    if r.get("fid_published_note"):
        lines.append(f"published FID: {r['fid_published_note']}")
    if r.get("gen_published", {}).get("note"):
        lines.append(f"published generation metrics: {r['gen_published']['note']}")
    lines += _ood_lines(r)
    if "ece" in r:
        lines.append("calibration: " + ", ".join(f"ECE ({m} bins) {100 * v:.2f} %" for m, v in r["ece"].items()) +
                     f"  (accuracy {100 * r['accuracy']:.2f} %, mean confidence {100 * r['mean_confidence']:.2f} %)")
    if r["sanity"]:
        lines.append("WARNING: sanity checks failed; do not trust these robustness numbers:")
        lines += [f"  - {s}" for s in r["sanity"]]
    else:
        lines.append(f"sanity: all {len(r['sanity_checks'])} checks passed ({', '.join(r['sanity_checks'])})")
    if r.get("files"):
        lines.append("files: " + ", ".join(r["files"]))
    return "\n".join(lines)


def _ood_lines(r: dict) -> list[str]:
    """The OOD detection table: one row per OOD set, one column per score."""
    if "ood_auroc" not in r:
        return []
    from .ood import SCORE_LABELS, SCORES
    head = ["OOD set (n)"] + [SCORE_LABELS[k] for k in SCORES]
    rows = [head] + [[f"{name} ({r['ood_n'][name]})"] + ["-" if row[k] is None else f"{row[k]:.4f}" for k in SCORES]
                     for name, row in r["ood_auroc"].items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"OOD detection AUROC ({r['ood_n']['in']} in-distribution test points positive; scores higher on "
             "in-distribution points; 0.5 = chance):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines + [f"  note: {t}" for t in r.get("ood_notes", [])]


# flag -> (attribute, minimum): the integer flags and their smallest sensible value
INT_FLAGS = {"--n": ("n", 1), "--steps": ("steps", 0), "--restarts": ("restarts", 1),
             "--aa-steps": ("aa_steps", 1), "--aa-queries": ("aa_queries", 1),
             "--published-aa-steps": ("published_aa_steps", 1), "--published-aa-queries": ("published_aa_queries", 1),
             "--batch-size": ("batch_size", 1), "--sample-steps": ("sample_steps", 0), "--seed": ("seed", 0)}


def check_args(args) -> None:
    """ValueError naming the flag for any bad number, radius, device or output path: checked
    before the checkpoint is loaded, so nothing runs (and no result is lost) for a typo."""
    for flag, (attr, minimum) in INT_FLAGS.items():
        v = getattr(args, attr)
        if v < minimum:
            raise ValueError(f"{flag} {v}: must be an integer >= {minimum}")
    if args.seed >= 2**63:
        raise ValueError(f"--seed {args.seed}: must be below 2**63")
    from .core import eps_list
    try:
        eps_list(args.eps, args.norm)   # finite, >= 0 (0: clean accuracy), linf at most 1
    except ValueError as e:
        raise ValueError(f"--eps: {e}") from None
    if args.alpha is not None and not (0 < args.alpha and math.isfinite(args.alpha)):
        raise ValueError(f"--alpha {args.alpha:g}: the PGD step must be a finite number > 0")
    if args.ood is not None:
        from .ood import parse_names
        try:
            parse_names(args.ood)
        except ValueError as e:
            raise ValueError(f"--ood {args.ood}: {e}") from None
    from .buffer_fid import check_ratio
    try:
        check_ratio(args.topk_ratio)
    except ValueError as e:
        raise ValueError(f"--topk-ratio {args.topk_ratio:g}: {e}") from None
    from ..validate import resolve_device
    resolve_device(args.device)
    check_outputs(args)


def check_outputs(args) -> None:
    """--out must be a folder that exists and is writable or can be created (its pictures
    are replaced), and no training run folder (``runs.folders.check_eval_out``: eval never
    replaces a training's energy.png or samples.png); without it, the run folder that gets
    eval_step_N must be writable.
    --json must be a new file in a folder that can be written (another eval's numbers are
    never overwritten)."""
    from ..plots import check_output
    if args.out is not None:
        from ..runs.folders import check_eval_out
        check_output(args.out, name="--out", folder=True)
        check_eval_out(args.out, name="--out")
    else:
        from ..runs.checkpoint import resolve_checkpoint
        from .trained import default_out
        run = default_out(resolve_checkpoint(args.checkpoint), 0).parent
        check_output(run, name="the run folder (where eval_step_N goes; or pass --out)", folder=True)
    if args.json is not None:
        check_output(args.json, name="--json", overwrite=False)
    if args.robustbench_json is not None:
        check_output(args.robustbench_json, name="--robustbench-json", overwrite=False)
        if args.json is not None and Path(args.json).resolve() == Path(args.robustbench_json).resolve():
            raise ValueError(f"--robustbench-json {args.robustbench_json} is the --json file; give two names")


def spec_from_args(args):
    """The EvalSpec of ``ebjdat eval``'s flags (checked by ``check_args`` first, which
    names the flags in its messages)."""
    from .spec import AttackSpec, EvalSpec
    attack = AttackSpec(eps=args.eps, norm=args.norm, steps=args.steps, alpha=args.alpha, restarts=args.restarts,
                        autoattack=args.autoattack, autoattack_steps=args.aa_steps,
                        autoattack_queries=args.aa_queries, protocol=args.protocol, batch_size=args.batch_size,
                        precision=args.precision, seed=args.seed, published_aa_steps=args.published_aa_steps,
                        published_aa_queries=args.published_aa_queries)
    return EvalSpec(attack=attack, n=args.n, samples=args.samples, sample_steps=args.sample_steps,
                    ood_sets=args.ood, calibration=args.calibration, topk_ratio=args.topk_ratio,
                    robustbench_entry=args.robustbench_json is not None)


def _eval(args) -> int:
    from . import autoattack as aa
    from .trained import evaluate_checkpoint
    try:
        check_args(args)
        spec = spec_from_args(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"ebjdat eval: {e}", file=sys.stderr)
        return 2
    if args.autoattack and not aa.available():
        print(f"ebjdat eval: {aa.MISSING}", file=sys.stderr)
        return 2
    try:
        with progress.lines(sys.stderr, "eval"):
            res = evaluate_checkpoint(args.checkpoint, spec, out=args.out, device=args.device,
                                      data_root=args.data_root, inception_weights=args.inception_weights,
                                      progress=True)
    except (OSError, ValueError, ImportError) as e:   # OSError: missing or unreadable files
        print(f"ebjdat eval: {e}", file=sys.stderr)
        return 2
    print(format_report(res))
    for path, value in ((args.json, res), (args.robustbench_json, res.get("robustbench"))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(value, indent=1))
            print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """Register ``ebjdat eval`` on an argparse subparsers object."""
    from .spec import NORMS, PROTOCOLS
    from .wrapper import PRECISIONS
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, PGD, AutoAttack, energies, samples, FID",
                       description="Evaluate a training checkpoint: clean accuracy, PGD robustness over a "
                       "curve of radii, random noise, energies, generated samples and their quality, and on "
                       "request AutoAttack, OOD detection and calibration. eps are radii in [0, 1] pixel units "
                       "(8/255 allowed; 0 gives the clean accuracy); the model is attacked through its own "
                       "normalisation. The default (--protocol standard) takes about a minute on the digits "
                       "on 2 CPU cores. --protocol published measures the published setting instead (test-time noise "
                       "N(0, 0.03^2); PGD-20 with eps 8/255 and alpha 1/255 on the [-1, 1] input; APGD-CE, "
                       "APGD-DLR and FAB-T at 20 steps and Square with 5000 queries; FID of the filtered "
                       "replay buffer), which takes minutes more; --protocol both runs the two side by side. A line on "
                       "stderr reports each attack and part as it finishes.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder (its newest checkpoint)")
    p.add_argument("--eps", nargs="+", type=parse_eps, help="radii in pixel units, each in [0, 1] for linf; "
                   "the first is the headline, all form the PGD curve, which always includes 0 (default: 8/255 "
                   "for linf, 0.5 for l2)")
    p.add_argument("--norm", choices=NORMS, default="linf", help="the attacks' norm (default: linf)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--alpha", type=parse_eps, help="PGD step size in pixel units (default: eps * max(1/4, "
                   "2.5/steps))")
    p.add_argument("--restarts", type=int, default=1, help="PGD random restarts (default: 1)")
    p.add_argument("--autoattack", action="store_true", help="also run AutoAttack standard at the headline eps "
                   "(needs torchattacks; minutes on a CPU)")
    p.add_argument("--aa-steps", type=int, default=100, help="AutoAttack iterations (default: 100, the "
                   "standard)")
    p.add_argument("--aa-queries", type=int, default=5000, help="Square attack queries of AutoAttack "
                   "(default: 5000, the standard)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="standard",
                   help="standard: eps in pixel units, the attacks above; published: the published setting "
                   "only (its AutoAttack suite takes minutes); both: the two side by side (default: standard)")
    p.add_argument("--published-aa-steps", type=int, default=20, help="iterations of the published protocol's "
                   "APGD-CE, APGD-DLR and FAB-T (default: 20, the published)")
    p.add_argument("--published-aa-queries", type=int, default=5000, help="Square queries of the published "
                   "protocol (default: 5000, the published)")
    p.add_argument("--topk-ratio", type=float, default=0.9, help="the published FID's per-class filter of the "
                   "replay buffer: a fraction in (0, 1) or a whole count per class (default: 0.9, the published)")
    p.add_argument("--ood", metavar="SETS", help="OOD detection AUROC of log p(x), max p(y|x) and -||grad log "
                   "p(x)|| against these comma-separated sets: noise (U(-1, 1)), interp (midpoints of two test "
                   "images) or dataset names (their test split from the run's data folder or --data-root, "
                   "converted to the run's image shape), e.g. svhn,noise,interp (default: none)")
    p.add_argument("--calibration", action="store_true", help="ECE (15 and 20 bins) and a reliability diagram")
    p.add_argument("--robustbench-json", metavar="FILE", help="write a RobustBench-style model card to FILE "
                   "(a new file: an existing one is refused)")
    p.add_argument("--n", type=int, default=1000, help="test points, the first of the test split (default: "
                   "1000)")
    p.add_argument("--batch-size", type=int, default=256, help="points per batch in attacks and sampling "
                   "(default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N; auto: the GPU when there is "
                   "one (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the model's precision in the attacks (default: fp32)")
    p.add_argument("--samples", action=argparse.BooleanOptionalAction, default=True,
                   help="write sample grids (default: on)")
    p.add_argument("--sample-steps", type=int, default=100, help="SGLD steps of fresh chains (default: 100)")
    p.add_argument("--out", help="folder for the pictures, whose same-named pictures are replaced; a training "
                   "run folder (one holding checkpoints/, metrics.jsonl, summary.json or config.json) is "
                   "refused, so a training's pictures are never replaced (default: <run>/eval_step_N)")
    p.add_argument("--inception-weights", metavar="PATH", help="the Inception weights file for FID and IS, "
                   "weights-inception-2015-12-05-6726825d.pth (default: none, FID and IS skipped with a note)")
    p.add_argument("--json", metavar="FILE", help="write every number to FILE (a new file: an existing "
                   "one is refused)")
    p.add_argument("--data-root", help="the dataset folder (default: where the run had it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts and the sampler "
                   "(default: 0)")
    p.set_defaults(fn=_eval)
