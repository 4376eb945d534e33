"""The `ebjdat` command: the demo's numbers hold and info lists the backends."""
from ebjdat import cli


def test_demo_runs_and_checks_its_numbers(capsys):
    assert cli.main(["demo", "--steps", "150", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "demo OK" in out and "exact stationary value 1.0526" in out


def test_info_lists_backends(capsys):
    assert cli.main(["info"]) == 0
    assert "backends available: torch" in capsys.readouterr().out


def test_info_says_what_runs_without_a_gpu(monkeypatch, capsys):
    """Without a GPU the cuda backend runs its host path only: info must not sell it as CUDA."""
    import torch

    from ebjdat import ops
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ops, "available_backends", lambda: ["torch", "cuda"])
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends available: torch, cuda (host path only: CPU tests; no GPU here)" in out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli.main(["info"]) == 0
    assert "backends available: torch, cuda (selected" in capsys.readouterr().out
