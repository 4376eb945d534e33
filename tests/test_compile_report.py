"""ebjdat.bench.compile_report: the ptxas/SASS parsers on fixed text, one real Triton
compile through the CLI (in a child process: conftest sets TRITON_INTERPRET), one real
nvcc compile of kernels/sgld.cu, and the exit status / markdown on made-up variants."""
import json
import os
import re
import subprocess
import sys

import pytest

from ebjdat.bench import compile_report as cr

PTXAS_LOG = """\
ptxas info    : 24 bytes gmem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for __internal_trig_reduction
    40 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Function properties for _Z3fooPf
    32 bytes stack frame, 16 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 32 bytes cumulative stack size
ptxas info    : Compile time = 86.852 ms
ptxas info    : Compiling entry function 'bar' for 'sm_90a'
ptxas info    : Function properties for bar
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers, 616 bytes cmem[0]
"""

SASS = """\
\tcode for sm_90
\t\tFunction : bar
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                           /* 0x000ff00000000800 */
        /*0010*/                   LDG.E.64 R4, desc[UR8][R4.64+0x8] ;    /* 0x0000080804047981 */
        /*0020*/              @!P3 LDG.E.U16.CONSTANT R0, desc[UR8][R20.64] ; /* 0x0 */
        /*0030*/               @P0 BRA 0x60 ;                              /* 0x0 */
        /*0040*/                   EXIT ;                                  /* 0x0 */
        /*0050*/                   BRA 0x50;                               /* 0x0 */
        /*0060*/                   NOP;                                    /* 0x0 */
\t\t..........
\t\tFunction : foo
        /*0000*/                   LDG.E.128.CONSTANT R12, desc[UR8][R20.64+-0x8] ; /* 0x0 */
        /*0010*/                   STG.E.128 desc[UR8][R2.64], R12 ;       /* 0x0 */
        /*0020*/                   EXIT ;                                  /* 0x0 */
"""

RES_USAGE = """\
Resource usage:
 Common:
  GLOBAL:24 CONSTANT[4]:8
 Function _Z3fooPf:
  REG:48 STACK:32 SHARED:1040 LOCAL:0 CONSTANT[0]:617 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function bar:
  REG:30 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:617 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_parse_ptxas_log_takes_each_entrys_own_properties():
    assert cr.parse_ptxas_log(PTXAS_LOG) == {
        "_Z3fooPf": dict(registers=48, stack_bytes=32, spill_bytes=20),  # not the callee's 40/16
        "bar": dict(registers=30, stack_bytes=0, spill_bytes=0)}


def test_parse_sass_counts_real_instructions_and_128_bit_loads():
    # bar: LDC, LDG.E.64, LDG.E.U16, @P0 BRA (forward), EXIT; not the self-BRA nor the NOP
    assert cr.parse_sass(SASS) == {"bar": dict(sass_instructions=5, vector_loads=False, hot_instructions=5),
                                   "foo": dict(sass_instructions=3, vector_loads=True, hot_instructions=3)}


def test_hot_loop_is_the_smallest_loop_with_a_vector_load():
    code = [(0x00, "LDC", "R1, c[0x0][0x0]"),
            (0x10, "LDG.E.128", "R4, desc[UR4][R2.64]"),   # outer loop 0x10 .. 0x60
            (0x20, "LDG.E.128", "R8, desc[UR4][R6.64]"),   # inner loop 0x20 .. 0x40
            (0x30, "FADD", "R4, R4, R8"),
            (0x40, "BRA", "0x20"),
            (0x50, "STG.E.128", "desc[UR4][R2.64], R4"),
            (0x60, "BRA", "0x10"),
            (0x70, "LDG.E", "R1, desc[UR4][R2.64]"),       # a scalar tail loop 0x70 .. 0x80
            (0x80, "BRA", "0x70"),
            (0x90, "EXIT", "")]
    assert cr.hot_loop(code) == 3
    assert cr.hot_loop([c for c in code if c[0] != 0x40]) == 5       # only the outer loop
    assert cr.hot_loop([(0, "LDG.E", ""), (0x10, "BRA", "0x0")]) == 2  # no vector load: all


def test_parse_res_usage():
    assert cr.parse_res_usage(RES_USAGE) == {"_Z3fooPf": 48, "bar": 30}


def test_nvcc_flags_follow_cmakelists():
    """The report must compile the kernels as the extension's Release build does."""
    cmake = (cr.ROOT / "CMakeLists.txt").read_text()
    for flag in ("--fmad=false", "-Xcompiler=-ffp-contract=off", "EBJDAT_DEVICE_CODE=1"):
        assert flag in cmake and any(flag in f for f in cr.NVCC_FLAGS), flag
    assert "CMAKE_CUDA_STANDARD 17" in cmake and "-std=c++17" in cr.NVCC_FLAGS
    assert {"-O3", "-DNDEBUG"} <= set(cr.NVCC_FLAGS)  # CMake's Release defaults
    assert cr.cuda_elems_per_thread() == {True: 8, False: 4}  # kernels/device.cuh


def test_triton_variants_through_the_cli(tmp_path):
    """The CLI as users run it; TRITON_INTERPRET=1 from conftest forces the child path."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    r = subprocess.run([sys.executable, "-m", "ebjdat.bench.compile_report", "--arch", "90",
                        "--backend", "triton", "--only", r"^sgld_step fp32 (no-)?noise n%16",
                        "--json", str(out), "--markdown", str(md)],
                       capture_output=True, text=True, cwd=cr.ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["arch"] == 90 and report["environment"]["triton"]
    v = {e["variant"]: e for e in report["variants"]}
    assert set(v) == {"sgld_step fp32 no-noise n%16=0", "sgld_step fp32 noise n%16=0",
                      "sgld_step fp32 no-noise n%16!=0", "sgld_step fp32 noise n%16!=0"}
    for e in v.values():
        assert e["backend"] == "triton" and e["kernel"] == "_sgld_kernel"
        assert e["ok"] and e["error"] is None, e["error"]
        # small tensors get blocks of 512 (two programs per SM): one 16-byte vector per thread
        assert e["registers"] > 0 and e["spill_bytes"] == 0 and e["elements_per_thread"] == 4
    cifar = v["sgld_step fp32 no-noise n%16=0"]
    assert cifar["vector_loads"] and 0 < cifar["sass_instructions"] < 1000
    # n not a multiple of 16: Triton cannot prove 16-byte alignment of the masked loads
    assert not v["sgld_step fp32 no-noise n%16!=0"]["vector_loads"]
    assert v["sgld_step fp32 noise n%16=0"]["sass_instructions"] > 3 * cifar["sass_instructions"]  # Philox + Box-Muller
    assert re.search(r"\| triton \| sgld_step noise \| 2 \|", md.read_text())


def test_cuda_variants_of_sgld_cu():
    found = cr.cuda_variants(90, sources=[cr.ROOT / "kernels" / "sgld.cu"])
    v = {e["variant"]: e for e in found}
    assert len(v) == 48  # 4 x dtypes * 4 grad dtypes * (no noise, noise, noise channels_last)
    assert all(e["ok"] and e["registers"] > 0 and e["sass_instructions"] > 0 for e in found)
    plain = v["ebjdat::sgld_step_kernel<float, float, false, false>"]
    assert plain["kernel"] == "sgld_step_kernel" and plain["family"] == "sgld_step no-noise"
    assert plain["vector_loads"] and plain["spill_bytes"] == 0 and plain["elements_per_thread"] == 4
    noisy = v["ebjdat::sgld_step_kernel<ebjdat::bf16, ebjdat::bf16, true, false>"]
    assert noisy["family"] == "sgld_step noise" and noisy["elements_per_thread"] == 8
    assert noisy["sass_instructions"] > plain["sass_instructions"]
    gathered = v["ebjdat::sgld_step_kernel<ebjdat::bf16, ebjdat::bf16, true, true>"]
    assert gathered["family"] == "sgld_step noise channels_last"
    # one Philox call per four elements in logical order, one per element when gathered
    fp32 = [v[f"ebjdat::sgld_step_kernel<float, float, true, {cl}>"]["sass_instructions"] for cl in ("false", "true")]
    assert fp32[0] < fp32[1]
    # the signature: fp32 noise at <= 45 instructions per element in the hot loop
    # (one Philox call per 4 elements, log_unit, the special-function unit's sin / cos)
    hot = v["ebjdat::sgld_step_kernel<float, float, true, false>"]["hot_instructions"]
    assert hot / 4 <= 45, hot
    assert plain["hot_instructions"] < hot < v["ebjdat::sgld_step_kernel<float, float, true, false>"]["sass_instructions"]


def test_missing_nvcc_is_one_failed_entry(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cr, "nvcc_path", lambda: None)
    assert cr.main(["--backend", "cuda", "--json", str(tmp_path / "r.json")]) == 1
    (e,) = json.loads((tmp_path / "r.json").read_text())["variants"]
    assert not e["ok"] and "nvcc" in e["error"]
    assert "failed to compile" in capsys.readouterr().err


def _made_up(variant, family, **kw):
    fields = dict(registers=32, spill_bytes=0, stack_bytes=0, vector_loads=True,
                  sass_instructions=800, hot_instructions=400, elements_per_thread=8)
    return cr.entry("triton", "_k", variant, family, **{**fields, **kw})


def test_spills_set_the_exit_status_and_markdown_summarises(monkeypatch, tmp_path, capsys):
    made_up = [_made_up("a", "sgld_step noise"),
               _made_up("b", "sgld_step noise", registers=64, vector_loads=False,
                        sass_instructions=1600),
               _made_up("c", "pgd_init l2", spill_bytes=48)]
    monkeypatch.setattr(cr, "triton_variants", lambda arch, only: made_up)
    assert cr.main(["--backend", "triton", "--json", str(tmp_path / "r.json"),
                    "--markdown", str(tmp_path / "r.md")]) == 1
    assert "1 variant(s) spill registers: c" in capsys.readouterr().err
    rows = (tmp_path / "r.md").read_text().splitlines()
    assert rows[2] == "| triton | sgld_step noise | 2 | 32–64 | 0 | 0 | 1 of 2 | 100–200 | 50 |"
    assert rows[3] == "| triton | pgd_init l2 | 1 | 32 | 48 | 0 | all | 100 | 50 |" and len(rows) == 6
    monkeypatch.setattr(cr, "triton_variants", lambda arch, only: made_up[:2])
    assert cr.main(["--backend", "triton", "--json", str(tmp_path / "r2.json")]) == 0
    # an existing output file is refused before any work
    monkeypatch.setattr(cr, "triton_variants", lambda arch, only: pytest.fail("must not run"))
    with pytest.raises(SystemExit) as e:
        cr.main(["--backend", "triton", "--json", str(tmp_path / "r2.json")])
    assert e.value.code == 2 and "already exists" in capsys.readouterr().err


def test_cuda_family_names_the_pgd_kernels():
    """Every pgd.cu kernel maps to a family, with the elements one thread handles per pass."""
    f = cr.cuda_family
    assert f("pgd_init_linf_kernel", ["float", "false"]) == ("pgd_init linf", 4)
    assert f("pgd_init_linf_kernel", ["ebjdat::bf16", "true"]) == ("pgd_init linf channels_last", 8)
    for k in ("pgd_step_l2_kernel", "pgd_step_l2_partial_kernel", "pgd_step_l2_finish_kernel",
              "pgd_init_l2_kernel", "pgd_init_l2_partial_kernel", "pgd_init_l2_finish_kernel"):
        family, ept = f(k, ["float", "false"])
        assert " l2" in family and ept == 4   # a 16-byte vector (or a run of 4 normals) per pass
    assert f("pgd_init_l2_finish_kernel", ["ebjdat::f16", "false"]) == ("pgd_init l2_finish", 8)
    assert f("pgd_init_l2_kernel", ["float", "true"]) == ("pgd_init l2 channels_last", 4)
