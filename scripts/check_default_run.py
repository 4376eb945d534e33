"""The default run's floors, as CI checks them: all three pillars of the trilemma.

    python scripts/check_default_run.py runs/<time>/summary.json

Accuracy: clean >= 0.90. Robustness: PGD-10 accuracy at the digits' budget (36/255, the
trade-off's headline radius) >= PGD_FLOOR, a floor standard training fails and EB-JDAT
passes with margin over three seeds (docs/tradeoff.md). Generation (issue 12's floor): the
digits network assigns >= 80 % of the buffer samples to the class the model gives them
(gen_cond_acc), and their digits FD (gen_fd) is at most halfway between the class-Gaussian
initial samples and real digits (ebjdat.evaluate.generation.fd_scale_points, same sample
count). Also: the fresh chains' FD (gen_fd_fresh) is below that of the class-Gaussian
samples they start from (the sampler improves on its start). Exits 1 naming every floor
missed.
"""
import json
import sys

from ebjdat.evaluate.generation import fd_scale_points
from ebjdat.runs.config import DIGITS_EPS

# PGD-10 at 36/255 in the closing evaluation, seeds 0, 1, 2 of the trade-off run
# (docs/tradeoff.md): standard training 0.134, 0.195, 0.198; EB-JDAT 0.376, 0.432, 0.454
PGD_FLOOR = 0.28

s = json.load(open(sys.argv[1]))
if abs(s["config"]["eval_eps"] - DIGITS_EPS) > 1e-9:
    sys.exit(f"the default run attacked at eval_eps {s['config']['eval_eps']:.4f}, not at the digits' budget "
             f"{DIGITS_EPS:.4f} the robustness floor is set for")
ref = fd_scale_points(n=s["gen_n"])
fresh_ref = ref if s["gen_n_fresh"] == s["gen_n"] else fd_scale_points(n=s["gen_n_fresh"])
floors = [("clean_acc", s["clean_acc"] >= 0.90, ">= 0.90"),
          ("pgd_acc", s["pgd_acc"] >= PGD_FLOOR, f">= {PGD_FLOOR} (PGD-10 at {round(DIGITS_EPS * 255)}/255)"),
          ("gen_cond_acc", s["gen_cond_acc"] >= 0.80, ">= 0.80"),
          ("gen_fd", s["gen_fd"] <= ref["halfway"],
           f"<= {ref['halfway']:.2f} (halfway between the class-Gaussian samples, {ref['class_gaussian']:.2f}, "
           f"and real digits, {ref['train']:.2f})"),
          ("gen_fd_fresh", s["gen_fd_fresh"] < fresh_ref["class_gaussian"],
           f"< {fresh_ref['class_gaussian']:.2f} (the class-Gaussian initial samples')")]
keys = ("step", "clean_acc", "pgd_acc", "gen_fd", "gen_cond_acc", "gen_fd_fresh", "gen_cond_acc_fresh", "wall_time_s")
print("default run:", {k: round(s[k], 4) for k in keys})
missed = [f"{name} {s[name]:.4g}, needs {want}" for name, ok, want in floors if not ok]
if missed:
    sys.exit("default run below its floors: " + "; ".join(missed))
print("default run: every floor met")
