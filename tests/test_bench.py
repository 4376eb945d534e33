"""The benchmark harness (ebjdat/bench/) on the CPU: the formulas are right, the command
writes results with their environment, and the report turns results into a table and a
plot. The published loop the step suite times is checked in test_published.py."""
import json

import pytest
import torch
from PIL import Image

from ebjdat.bench import cli, formulas, report, timing
from ebjdat.train import TrainConfig


def test_op_bytes_and_flops():
    x = torch.zeros(4, 3, 8, 8)
    assert formulas.op_bytes("sgld_step", x) == 3 * 768 * 4           # read x, grad; write x
    assert formulas.op_bytes("pgd_step_linf", x.bfloat16()) == 4 * 768 * 2
    assert formulas.op_bytes("pgd_init_linf", x) == 2 * 768 * 4
    per = formulas.model_flops(torch.nn.Linear(10, 5), (10,))
    assert per == {"fwd": 100, "fwd_xgrad": 200, "fwd_train": 200}     # 2*10*5 per matmul
    cfg = TrainConfig.preset("sadajem", dataset="digits", sgld_steps=3, pgd_steps=2,
                             batch_size=4, label_batch_size=6)
    assert formulas.iteration_flops({"fwd": 1, "fwd_xgrad": 2, "fwd_train": 3}, cfg) == \
        3 * 4 * 2 + 6 * 1 + 2 * 6 * 2 + 2 * (2 * 4 + 2 * 6) * 3
    assert formulas.projected_hours(1.0, 128) == pytest.approx(100 * 50_000 / 128 / 3600)


def test_cpu_timer_and_ceilings():
    assert timing.median_us(lambda: sum(range(1000)), "cpu", reps=5) > 0
    c = timing.ceilings("cpu")
    assert c["copy_GBps"] > 0 and c["matmul_TFLOPs"] > 0 and c["matmul_dtype"] == "fp32"


def test_bench_ops_quick_writes_rows_with_environment(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert cli.main(["bench", "ops", "--device", "cpu", "--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"torch", "triton", "commit", "date", "gpu", "driver", "cuda"} <= set(data["environment"])
    timed = [r for r in data["rows"] if "ours_us" in r]
    assert {r["case"].split("/")[0] for r in timed} == set(formulas.OP_TENSORS)
    for r in timed:
        assert r["ours_us"] > 0 and r["baseline_us"] > 0 and r["compile_us"] > 0 and r["GBps"] > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed
    # a line per row as it was measured, before the table
    table_at = printed.index("suite  case")
    for r in timed:
        line = f"ops {r['case']} {r['ours']}: "
        assert line in printed and printed.index(line) < table_at, line
    # on the CPU each row is stated against a copy of its own bytes, never silently above 100 %
    for r in timed:
        assert r["ceiling"] == "copy of same bytes" and r["copy_GBps"] > 0
        assert r["pct_ceiling"] <= 100 or "above 100 %" in (r.get("note") or ""), r
    assert "ebjdat[torch] is the ops' specification" in printed
    assert not any("targets" in r for r in data["rows"])   # GPU targets: not judged on CPU timings
    cpu = {r["case"]: r for r in data["rows"] if "hand_us" in r}   # the CPU targets' rows
    judged = {"sgld_noisy/fp32/512/1-thread", "sgld_noisy/fp32/1M/1-thread", "pgd_linf/fp32/1M/1-thread"}
    assert judged <= set(cpu)
    assert all(isinstance(cpu[c]["cpu_target_met"], bool) and cpu[c]["ratio"] > 0 for c in judged)
    if torch.get_num_threads() > 1:   # the threaded loops, reported beside them
        assert f"sgld_noisy/fp32/1M/{torch.get_num_threads()}-thread" in cpu


def test_ops_targets_are_judged_on_gpu_rows_and_summarised():
    """The ops' GPU targets: >= 85% of copy bandwidth at 256 MiB (pgd_step_ linf 90%),
    >= 3x eager at CIFAR size, never slower than torch.compile; each miss is listed with
    its figure under the table and in the report's markdown."""
    from ebjdat.bench import suite_ops
    fig = {"speedup_vs_compile": 1.2, "pct_ceiling": 89.0, "speedup": 2.9}
    linf = suite_ops.targets("pgd_step_linf", "256MiB", fig)
    assert linf == [{"target": ">= 1x torch.compile", "value": 1.2, "met": True},
                    {"target": ">= 90% of copy bandwidth", "value": 89.0, "met": False}]
    sgld = suite_ops.targets("sgld_step", "256MiB", fig)
    assert [t["met"] for t in sgld] == [True, True]
    cifar = suite_ops.targets("sgld_step", "cifar", {**fig, "speedup_vs_compile": None})
    assert cifar[1]["target"] == ">= 3x eager" and [t["met"] for t in cifar] == [None, False]
    rows = [{"case": "pgd_step_linf/fp32/256MiB", "ours": "ebjdat[cuda]", "targets": linf},
            {"case": "sgld_step/fp32/256MiB", "ours": "ebjdat[cuda]", "targets": sgld},
            {"case": "sgld_step/bf16/cifar", "ours": "ebjdat[triton]", "targets": cifar},
            {"case": "a CPU row"}]
    assert cli.target_lines(rows) == [
        "targets: 1 of 3 GPU rows meet every target of the fused ops",
        "target missed: pgd_step_linf/fp32/256MiB ebjdat[cuda]: >= 90% of copy bandwidth (got 89)",
        "target missed: sgld_step/bf16/cifar ebjdat[triton]: >= 1x torch.compile (got not measured)",
        "target missed: sgld_step/bf16/cifar ebjdat[triton]: >= 3x eager (got 2.9)"]
    assert cli.target_lines(rows[3:]) == []
    md = report.markdown([{"environment": {"commit": "abc"}, "rows": rows}])
    assert "- targets: 1 of 3 GPU rows" in md and "- target missed: sgld_step/bf16/cifar" in md


def test_bench_step_quick_profile(tmp_path):
    result = cli.run_bench("step", "cpu", quick=True, profile=tmp_path)
    steps = [r for r in result["rows"] if not r["case"].startswith("loader")]
    assert [r["ours"] for r in steps] == ["published baseline", "trainer fast fp32", "+channels_last", "+compile",
                                          "+bf16", "+bf16 +compile"]
    timed = [r for r in steps if "skipped" not in r]
    assert [r["ours"] for r in timed] == ["published baseline", "trainer fast fp32", "+channels_last", "+bf16"]
    assert all(r["s_per_iter"] > 0 and r["mfu_pct"] > 0 for r in timed)
    fp32, cl, bf16 = timed[1:]
    assert (fp32["channels_last"], fp32["precision"]) == (False, "fp32") and "loss_rel_diff" not in fp32
    assert (cl["channels_last"], cl["precision"], bf16["precision"]) == (True, "fp32", "bf16")
    assert cl["loss_rel_diff"] < 1e-4 and bf16["loss_rel_diff"] < 0.05   # fp32 layouts agree; bf16 rounds
    assert not any(r["compiled"] for r in timed[1:])
    loaders = result["rows"][len(steps):]   # then the loader beside the model, per image size
    assert [r["case"] for r in loaders] == ["loader 32x32x3/b16", "loader 64x64x3/b16"]
    assert all(r["images_per_s"] > 0 and r["model_images_per_s"] > 0 for r in loaders)
    trace = (tmp_path / "step-trainer_fast_fp32.json").read_text()
    assert "Self CPU" in (tmp_path / "step-trainer_fast_fp32.txt").read_text()   # the top operators
    assert all(f"ebjdat.{p}" in trace for p in ("sampler", "attack", "optimizer"))


def test_report_markdown_and_plot(tmp_path):
    env = {"torch": "2.x", "triton": "3.x", "commit": "abcdef1234", "date": "2026-01-01",
           "gpu": "NVIDIA H100", "driver": "550", "cuda": "12.4"}
    rows = [{"suite": "ops", "case": "sgld_step/fp32/cifar", "baseline": "eager torch", "ours": "ebjdat[triton]",
             "baseline_us": 40.0, "ours_us": 4.0, "speedup": 10.0, "speedup_vs_compile": 2.0,
             "GBps": 2000.0, "pct_ceiling": 80.0, "ceiling": "copy GB/s"},
            {"suite": "step", "case": "sadajem", "baseline": "published baseline", "ours": "+cuda_graph",
             "baseline_us": 2e6, "ours_us": 5e4, "speedup": 40.0, "model_TFLOPs": 300.0, "mfu_pct": 30.0,
             "pct_ceiling": 30.0, "ceiling": "bf16 matmul", "projected_hours": 1.5},
            {"suite": "ops", "case": "x", "ours": "ebjdat[cuda]", "skipped": "no path"}]
    src = tmp_path / "r.json"
    src.write_text(json.dumps({"environment": env, "device": "cuda", "quick": False, "rows": rows,
                               "ceilings": {"copy_GBps": 2500.0, "matmul_TFLOPs": 700.0, "matmul_dtype": "bf16"}}))
    md, png = tmp_path / "t.md", tmp_path / "s.png"
    assert report.main([str(src), "--markdown", str(md), "--plot", str(png)]) == 0
    text = md.read_text()
    assert "NVIDIA H100" in text and "`abcdef12`" in text and "| 10.00x |" in text and "| 1.50 |" in text
    assert text.count("\n| ") == 3          # header + two timed rows (the skipped one is not timed)
    with Image.open(png) as im:
        assert im.size[0] == 1000 and im.size[1] > 80
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert report.main([str(bad)]) == 2


def test_bench_overhead_per_step_by_difference(capsys):
    """The per-step sampler cost: (t(2K) - t(K)) / K with its spread, eager on the CPU;
    the ceilings, the suite and its row are printed as they are measured, before the table."""
    rows = cli.run_bench(["overhead"], "cpu", quick=True)["rows"]
    printed = capsys.readouterr().out
    assert "ceilings: copy" in printed and "suite overhead (--quick sizes)" in printed
    assert printed.index(f"loops {rows[0]['case']} {rows[0]['ours']}: ") < printed.index("suite  case")
    assert [r["ours"] for r in rows] == ["ebjdat SGLD eager"]
    r = rows[0]
    assert r["per_step_us"] == r["ours_us"] and r["steps_difference"] == 5
    assert r["noise_us"] >= 0 and r["baseline_noise_us"] >= 0 and r["baseline_us"] > 0


def test_bench_suites_json_checked_first(tmp_path):
    out = tmp_path / "b.json"
    out.write_text("another run's results")
    with pytest.raises(ValueError, match="already exists"):
        cli.run_bench("ops", "cpu", quick=True, json_path=out)
    assert out.read_text() == "another run's results"
    with pytest.raises(ValueError, match="suite must be"):
        cli.run_bench(["ops", "nope"], "cpu", quick=True)
    assert cli._suites(["step", "ops", "step"]) == ["step", "ops"]
    assert cli._suites("all") == list(cli.SUITES)
    assert cli.main(["bench", "ops", "--device", "cpu", "--quick", "--json", str(out)]) == 2


def test_step_compile_case_needs_its_budget(monkeypatch):
    from ebjdat.bench import suite_step
    monkeypatch.setattr(suite_step.time, "perf_counter", lambda: 1000.0)
    skip = suite_step._compile_skip
    assert skip(False, None, False, True) == "--no-compile"
    assert skip(True, None, False, True) is None and skip(True, None, True, True) is None
    assert skip(True, None, True, False).startswith("--quick on the CPU")
    assert skip(True, 1000.0 + suite_step.COMPILE_RESERVE_S, False, True) is None
    assert "60 s of the budget left" in skip(True, 1060.0, False, True)
    names = [n for n, _ in suite_step.GPU_STAGES]
    assert names == ["trainer fast fp32", "+bf16", "+channels_last", "+cuda_graph", "+compile"]
    # each stage switches on one more optimisation than the one before
    on = [{k for k, v in o.items() if v not in (False, "fp32")} for _, o in suite_step.GPU_STAGES]
    assert all(len(b - a) == 1 and a < b for a, b in zip(on, on[1:]))


def test_l2_note_and_environment_commit(monkeypatch):
    assert timing.fits_in_l2(1 << 20, "cpu") is None           # no L2 figure on the CPU
    monkeypatch.setattr(timing, "l2_bytes", lambda device="cuda": 60 << 20)
    assert "fits in the 60 MiB L2" in timing.fits_in_l2(3 * 786432 * 4)
    assert timing.fits_in_l2(256 << 20) is None
    # a tree without .git (the device machine's copy) takes the commit from the environment
    monkeypatch.setattr(timing, "_cmd", lambda *a: "")
    monkeypatch.setenv("EBJDAT_COMMIT", "f" * 40)
    monkeypatch.setenv("EBJDAT_DIRTY", "1")
    env = timing.environment()
    assert env["commit"] == "f" * 40 and env["dirty"] is True


def test_bench_threads_quiet_and_loaded():
    before = torch.get_num_threads()
    rows = cli.run_bench(["threads"], "cpu", quick=True)["rows"]
    assert torch.get_num_threads() == before
    assert [r["case"] for r in rows] == ["sadajem/digits iteration, quiet",
                                         "sadajem/digits iteration, one core busy"]
    assert all(r["ours"] == "1 thread" and r["ours_us"] > 0 and r["baseline_us"] > 0 for r in rows)


def test_small_ratios_keep_their_significant_digits():
    """A speed-up of 0.0015 (the torch specification backend on the CPU) read "0.00x"."""
    assert cli._num(0.0015, 2) == "0.00150" and cli._num(0.0838, 2) == "0.0838"
    assert cli._num(2.1949, 2) == "2.19" and cli._num(274.1, 2) == "274.10" and cli._num(0.35, 2) == "0.35"
    assert cli._num(0.00407, 1) == "0.00407" and cli._num(6.71, 1) == "6.7" and cli._num(0, 2) == "0.00"
    assert cli._num(None, 2) == "-"
    row = {"suite": "ops", "case": "sgld_step/fp32/b8", "baseline": "eager torch", "ours": "ebjdat[torch]",
           "baseline_us": 95.0, "ours_us": 63450.0, "speedup": 95.0 / 63450.0, "GBps": 0.0041,
           "pct_ceiling": 0.024, "ceiling": "copy of same bytes"}
    line = cli.table_lines([row])[1]
    assert "0.00150x" in line and "0.00410 GB/s" in line and "0.0240% copy of same bytes" in line


def test_rows_are_reported_as_they_are_added():
    seen = []
    rows = timing.Rows(seen.append)
    rows.append({"a": 1})
    rows += [{"b": 2}]
    rows.extend([{"c": 3}])
    assert seen == [{"a": 1}, {"b": 2}, {"c": 3}] and list(rows) == seen
    assert cli.progress_line({"suite": "step", "case": "c", "ours": "+compile", "skipped": "--no-compile"}) == \
        "step c +compile: skipped: --no-compile"
    line = cli.progress_line({"suite": "loops", "case": "sgld10", "ours": "ebjdat SGLD eager", "baseline": "plain",
                              "baseline_us": 2000.0, "ours_us": 1000.0, "speedup": 2.0})
    assert line == "loops sgld10 ebjdat SGLD eager: 1.000 ms against 2.000 ms plain, 2.00x"
