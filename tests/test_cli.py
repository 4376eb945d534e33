"""The `ebjdat` command: the demo's numbers hold and info lists the backends."""
from ebjdat import cli


def test_demo_runs_and_checks_its_numbers(capsys):
    assert cli.main(["demo", "--steps", "150", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "demo OK" in out and "exact stationary value 1.0526" in out


def test_info_lists_backends(capsys):
    assert cli.main(["info"]) == 0
    assert "backends available: torch" in capsys.readouterr().out
