"""Bad input to the commands and the API: exit code 2 with one line on stderr naming the
flag (commands), or a ValueError / TypeError naming the argument (API), before any work
runs and before any file is written."""
import os

import pytest

from ebjdat import charts
import torch
from PIL import Image

from ebjdat import cli, plots, validate
from ebjdat.evaluate import trained as eval_checkpoint
from ebjdat.evaluate.core import eps_list
from ebjdat.ops import backends

NO_GPU = "no CUDA GPU is visible to torch"


@pytest.fixture(scope="module")
def run(tiny_run):
    """conftest's one-step training checkpoint."""
    return tiny_run


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a GPU, on GPU machines too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_triton(monkeypatch, no_gpu):
    """Triton counts as unavailable: no GPU and no TRITON_INTERPRET (the tests set it)."""
    monkeypatch.setattr(backends, "interpreting", lambda: False)


def fails(capsys, argv, *words) -> str:
    """cli.main(argv) exits 2 with one stderr line "ebjdat <cmd>: ..." holding every word."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ebjdat {argv[0]}: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def no_work(monkeypatch, target, name):
    """Make target.name fail the test if called: the error must come before the work."""
    def called(*a, **k):
        raise AssertionError(f"{name} ran although the arguments were bad")
    monkeypatch.setattr(target, name, called)


# ---------------------------------------------------------------- ebjdat sample
def test_sample_bad_checkpoint(run, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    fails(capsys, ["sample", "--checkpoint", str(tmp_path / "missing.pt"), "--out", out], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(capsys, ["sample", "--checkpoint", str(empty), "--out", out], "no checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    fails(capsys, ["sample", "--checkpoint", str(junk), "--out", out], str(junk))
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("flags,words", [
    (["--n", "0"], ["--n 0", ">= 1"]),
    (["--n", "-4"], ["--n -4"]),
    (["--steps", "-3"], ["--steps -3", ">= 0"]),
    (["--y", "-1"], ["--y -1"]),
    (["--out", "s.gif"], ["--out", "'.gif'", ".png"]),
    (["--out", "samples"], ["--out", "no suffix"]),
])
def test_sample_bad_flags_fail_before_loading(flags, words, tmp_path, monkeypatch, capsys):
    no_work(monkeypatch, eval_checkpoint, "load_trained")
    monkeypatch.chdir(tmp_path)
    fails(capsys, ["sample", "--checkpoint", "whatever", *flags], *words)
    assert list(tmp_path.iterdir()) == []


def test_sample_n_beyond_the_buffer_is_refused_unless_fresh(run, tmp_path, capsys):
    out = tmp_path / "s.png"
    fails(capsys, ["sample", "--checkpoint", str(run), "--n", "300", "--out", str(out)],
          "holds 256", "--fresh")
    assert not out.exists()
    assert cli.main(["sample", "--checkpoint", str(run), "--n", "300", "--fresh", "--steps", "0",
                     "--out", str(out)]) == 0
    assert "wrote 300 samples after 0 SGLD steps" in capsys.readouterr().out


def test_sample_class_out_of_range(run, tmp_path, capsys):
    fails(capsys, ["sample", "--checkpoint", str(run), "--y", "10", "--out", str(tmp_path / "s.png")],
          "--y 10", "[0, 10)")
    assert cli.main(["sample", "--checkpoint", str(run), "--y", "9", "--n", "4", "--steps", "1",
                     "--out", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("name,fmt", [("s.jpg", "JPEG"), ("s.JPEG", "JPEG"), ("s.png", "PNG"), ("s.bmp", "BMP")])
def test_sample_writes_the_format_its_suffix_names(run, tmp_path, name, fmt):
    out = tmp_path / "new" / name   # missing folders are created, as eval does
    assert cli.main(["sample", "--checkpoint", str(run), "--n", "4", "--steps", "0", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == fmt and im.mode == "RGB"


def test_sample_keeps_existing_files_and_checks_the_path(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.png"
    out.write_bytes(b"another run's picture")
    fails(capsys, ["sample", "--checkpoint", str(run), "--out", str(out)], "exists", "--force")
    assert out.read_bytes() == b"another run's picture"
    fails(capsys, ["sample", "--checkpoint", str(run), "--out", str(out / "s.png")], "is a file, not a folder")
    folder = tmp_path / "pics.png"
    folder.mkdir()
    fails(capsys, ["sample", "--checkpoint", str(run), "--out", str(folder)], "is a folder")
    assert cli.main(["sample", "--checkpoint", str(run), "--n", "4", "--steps", "0", "--out", str(out),
                     "--force"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_sample_unwritable_folder(run, tmp_path, monkeypatch, capsys):
    """os.access stands in for a read-only folder: chmod does not stop root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(plots.os, "access", lambda p, mode: os.fspath(p) != os.fspath(ro))
    no_work(monkeypatch, eval_checkpoint, "load_trained")
    fails(capsys, ["sample", "--checkpoint", str(run), "--out", str(ro / "s.png")], "not writable")


def test_sample_device_and_backend_that_cannot_run(run, tmp_path, no_triton, capsys):
    out = str(tmp_path / "s.png")
    fails(capsys, ["sample", "--checkpoint", str(run), "--device", "cuda", "--out", out], "--device cuda", NO_GPU)
    fails(capsys, ["sample", "--checkpoint", str(run), "--backend", "triton", "--out", out],
          "--backend triton", "needs a CUDA GPU", "--backend torch or auto")


# ---------------------------------------------------------------- ebjdat eval
@pytest.mark.parametrize("flags,words", [
    (["--sample-steps", "-5"], ["--sample-steps -5"]),
    (["--n", "0"], ["--n 0"]),
    (["--steps", "-1"], ["--steps -1"]),
    (["--restarts", "0"], ["--restarts 0"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--aa-steps", "0"], ["--aa-steps 0"]),
    (["--aa-queries", "-1"], ["--aa-queries -1"]),
    (["--seed", "-1"], ["--seed -1"]),
    (["--alpha", "-0.1"], ["--alpha"]),
    (["--eps", "2"], ["--eps", "<= 1 for linf"]),
    (["--eps", "8/255", "2"], ["--eps", "<= 1 for linf"]),
    (["--eps", "-0.1"], ["eps must be >= 0"]),
])
def test_eval_bad_numbers_fail_before_any_work(run, flags, words, monkeypatch, capsys):
    no_work(monkeypatch, eval_checkpoint, "evaluate_checkpoint")
    fails(capsys, ["eval", "--checkpoint", str(run), *flags], *words)


@pytest.mark.parametrize("flags", [["--eps", "8/255", "4/255"], ["--norm", "l2", "--eps", "2", "0.5"],
                                   ["--steps", "0", "--sample-steps", "0", "--eps", "1"], ["--eps", "0"],
                                   ["--norm", "l2", "--eps", "0"]])
def test_eval_good_numbers_pass_the_checks(run, flags, monkeypatch, capsys):
    def reached(*a, **k):
        raise ValueError("reached the evaluation")
    monkeypatch.setattr(eval_checkpoint, "evaluate_checkpoint", reached)
    fails(capsys, ["eval", "--checkpoint", str(run), "--out", str(run / "e"), *flags], "reached the evaluation")


def test_eps_list_range():
    assert eps_list(0.0, "linf") == [0.0]          # the sanity check's eps 0 still works
    assert eps_list([1.0, 8 / 255], "linf") == [1.0, 8 / 255]
    assert eps_list(2.0, "l2") == [2.0]
    with pytest.raises(ValueError, match="eps must be <= 1 for linf"):
        eps_list(2.0, "linf")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        eps_list(-1.0, "l2")


def test_eval_output_paths_are_checked_first(run, tmp_path, monkeypatch, capsys):
    no_work(monkeypatch, eval_checkpoint, "evaluate_checkpoint")
    file = tmp_path / "file"
    file.write_text("kept")
    ck = ["eval", "--checkpoint", str(run)]
    fails(capsys, ck + ["--out", str(file)], "--out", "is a file, not a folder")
    fails(capsys, ck + ["--out", str(file / "pngs")], "--out", "cannot be created", "is a file")
    fails(capsys, ck + ["--out", str(tmp_path), "--json", str(file)], "--json", "exists")
    fails(capsys, ck + ["--out", str(tmp_path), "--json", str(file / "r.json")], "--json", "cannot be created")
    fails(capsys, ck + ["--out", str(tmp_path), "--json", str(tmp_path)], "--json", "is a folder")
    assert file.read_text() == "kept"
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(plots.os, "access", lambda p, mode: not os.fspath(p).startswith(os.fspath(ro)))
    fails(capsys, ck + ["--out", str(ro)], "--out", "not writable")
    fails(capsys, ck + ["--out", str(ro / "new" / "pngs")], "--out", "cannot be created", "not writable")
    fails(capsys, ck + ["--out", str(tmp_path), "--json", str(ro / "r.json")], "--json", "not writable")
    fails(capsys, ck + ["--checkpoint", str(ro / "missing.pt")], "does not exist")


def test_eval_default_out_needs_a_writable_run_folder(run, monkeypatch, capsys):
    no_work(monkeypatch, eval_checkpoint, "evaluate_checkpoint")
    monkeypatch.setattr(plots.os, "access", lambda p, mode: os.fspath(p) != os.fspath(run))
    fails(capsys, ["eval", "--checkpoint", str(run)], "run folder", "--out")


def test_eval_device_without_gpu(run, no_gpu, monkeypatch, capsys):
    no_work(monkeypatch, eval_checkpoint, "evaluate_checkpoint")
    fails(capsys, ["eval", "--checkpoint", str(run), "--device", "cuda"], "--device cuda", NO_GPU, "cpu or auto")


# ---------------------------------------------------------------- devices and backends
@pytest.mark.parametrize("name,words", [("cuda", [NO_GPU]), ("cuda:3", [NO_GPU]), ("tpu", ["not a device"]),
                                        ("mps", ["cpu or cuda"]), ("cuda:x", ["not a device"])])
def test_resolve_device_without_gpu(no_gpu, name, words):
    with pytest.raises(ValueError, match=f"--device {name}") as e:
        validate.resolve_device(name)
    assert all(w in str(e.value) for w in words)
    assert validate.resolve_device("auto") == torch.device("cpu")
    assert validate.resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_gpu_index_beyond_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"--device cuda:2: torch sees 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        validate.resolve_device("cuda:2")
    assert validate.resolve_device("cuda:1") == torch.device("cuda", 1)


def test_train_device_and_backend_that_cannot_run(tmp_path, no_triton, capsys):
    fails(capsys, ["train", "--device", "cuda", "--out", str(tmp_path / "a")], "--device cuda", NO_GPU)
    fails(capsys, ["train", "--backend", "triton", "--out", str(tmp_path / "b")], "triton", "needs a CUDA GPU",
          "--backend")


def test_demo_device_backend_and_steps(no_triton, capsys):
    fails(capsys, ["demo", "--device", "cuda"], "--device cuda", NO_GPU)
    fails(capsys, ["demo", "--backend", "triton"], "--backend triton", "needs a CUDA GPU",
          "TRITON_INTERPRET=1", "--backend torch or auto")
    fails(capsys, ["demo", "--backend", "torch", "--steps", "0"], "--steps 0")


def test_demo_triton_on_cpu_tensors_of_a_gpu_machine(monkeypatch, capsys):
    """A GPU, but CPU tensors without the interpreter: the first op would fail mid-demo."""
    monkeypatch.setattr(backends, "interpreting", lambda: False)
    monkeypatch.setattr(backends, "triton_status", lambda: None)
    fails(capsys, ["demo", "--device", "cpu", "--backend", "triton"], "--backend triton", "CUDA tensors")


# ---------------------------------------------------------------- plots
@pytest.mark.parametrize("suffix,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".webp", "WEBP")])
def test_pictures_are_in_the_format_their_suffix_names(tmp_path, suffix, fmt):
    if fmt == "WEBP" and not plots.features.check("webp"):
        with pytest.raises(ValueError, match="WebP"):
            plots.save_grid(tmp_path / f"g{suffix}", torch.zeros(4, 1, 8, 8))
        return
    for path in (plots.save_grid(tmp_path / f"g{suffix}", torch.zeros(4, 1, 8, 8)),
                 charts.save_histograms(tmp_path / f"h{suffix}", {"a": torch.randn(50)})):
        with Image.open(path) as im:
            assert im.format == fmt


@pytest.mark.parametrize("name", ["g.gif", "g", "g.pdf", "g.png.txt"])
def test_unknown_picture_suffixes_are_refused_before_drawing(tmp_path, name):
    with pytest.raises(ValueError, match="name the image format"):
        plots.save_grid(tmp_path / name, torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="name the image format"):
        charts.save_histograms(tmp_path / name, {"a": torch.randn(5)})
    assert list(tmp_path.iterdir()) == []


def test_check_output(tmp_path):
    f = tmp_path / "f.json"
    f.write_text("{}")
    assert plots.check_output(f) == f                       # overwriting is the caller's choice
    with pytest.raises(ValueError, match="out .* exists"):
        plots.check_output(f, name="out", overwrite=False)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        plots.check_output(f, folder=True)
    with pytest.raises(ValueError, match="is a folder"):
        plots.check_output(tmp_path)
    assert plots.check_output(tmp_path / "a" / "b", folder=True) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()                    # checking writes nothing
    with pytest.raises(ValueError, match="cannot be created"):
        plots.check_output(f / "x.png")
