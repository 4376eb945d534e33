"""examples/ebm_2d.py (a short run, its outputs and its refusal to write into a used
folder) and the README's CPU library snippet, run as written."""
import importlib.util
import re
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("ebm_2d", ROOT / "examples" / "ebm_2d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ebm_2d_runs_and_writes_its_picture(tmp_path, capsys):
    out = tmp_path / "ebm"
    assert _example().main(["--iters", "4", "--steps", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "buffer samples:" in text and "of 8 modes covered" in text and "PGD-10" in text
    with Image.open(out / "samples.png") as img:
        assert img.size == (640, 344)


def test_ebm_2d_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("another run's file")
    assert _example().main(["--iters", "1", "--out", str(tmp_path)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "kept.txt").read_text() == "another run's file"


def test_ebm_2d_coverage_counts_points_near_modes():
    mod = _example()
    centres = mod.centres("cpu")
    share, modes = mod.coverage(torch.cat([centres, torch.full((8, 2), 5.0)]))
    assert (share, modes) == (0.5, 8)


def test_readme_cpu_library_snippet_runs():
    """The first python block of the README's library section, with its free names
    (batches, classifier, x, y) bound to two small batches and a small classifier."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    names = {"batches": [torch.rand(256, 2) * 2 - 1 for _ in range(2)],
             "classifier": torch.nn.Linear(2, 2), "x": torch.rand(16, 2) * 2 - 1,
             "y": torch.randint(0, 2, (16,))}
    exec(compile(code, "README.md", "exec"), names)
    assert names["x_adv"].shape == (16, 2) and (names["x_adv"] - names["x"]).abs().max() <= 0.15 + 1e-6
    assert names["buf"].data.shape == (4096, 2)


def test_api_page_lists_every_public_name():
    """docs/API.md names every entry of ebjdat.__all__ and every fused op, and every
    file it cites exists."""
    import ebjdat
    from ebjdat import ops
    text = (ROOT / "docs" / "API.md").read_text()
    for name in ebjdat.__all__:
        assert f"`{name}" in text or f"`ebjdat.{name}" in text, name
    for op in ops.OPS:
        assert f"`{op}(" in text, op
    for path in re.findall(r"`((?:examples|docs|ebjdat|scripts|tests)/[\w/.]+)`", text):
        assert (ROOT / path).exists(), path
