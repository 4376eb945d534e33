"""Print the digits FD's scale points (ebjdat.evaluate.generation.fd_scale_points) as
a markdown table, for several seeds: how a gen_fd of 500 samples reads.

    python scripts/digits_fd_points.py [--n 500] [--seeds 0,1,2]
"""
import argparse
import statistics

from ebjdat.evaluate.generation import fd_scale_points

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--n", type=int, default=500)
p.add_argument("--seeds", default="0,1,2")
args = p.parse_args()
runs = [fd_scale_points(args.n, int(s)) for s in args.seeds.split(",")]
print(f"| {args.n} images against the 359 test digits | digits FD, mean ± std over seeds {args.seeds} |")
print("|---|---:|")
for name in runs[0]:
    v = [r[name] for r in runs]
    print(f"| {name} | {statistics.fmean(v):.1f} ± {statistics.pstdev(v):.1f} |")
