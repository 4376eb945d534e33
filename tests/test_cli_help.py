"""Every subcommand's --help: a description, each option's default, the closed sets of
values listed, and only words a user can act on (no module or file names of the code)."""
import argparse

import pytest

from ebjdat import cli

# words that name the code's own modules or files outside the repository, never the user's business
FORBIDDEN = ("suite_", "timing.", ".py", "REFERENCE.md", "DESIGN.md", "TrainConfig", "``")
# subcommand -> option dest -> the values its help must list (the closed sets)
CLOSED = {
    "train": {"variant": ("jem", "jempp", "sadajem"), "objective": ("ebjdat", "standard", "at", "jem"),
              "dataset": ("digits", "cifar10", "imagefolder", "synthetic"), "mode": ("fast", "published"),
              "precision": ("auto", "fp32", "bf16"), "backend": ("auto", "torch", "cuda")},
    "eval": {"norm": ("linf", "l2"), "protocol": ("standard", "published", "both"), "precision": ("fp32", "bf16")},
    "sample": {"backend": ("auto", "torch", "cuda")},
    "bench": {"suite": ("ops", "loops", "overhead", "attack", "step", "threads", "all")},
    "demo": {"backend": ("auto", "torch", "cuda")},
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _one_line_helps() -> dict[str, str]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {a.dest: a.help for a in sub._choices_actions}


def _options(p: argparse.ArgumentParser):
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def _shown(default) -> list[str]:
    """The texts that show a default in a help line."""
    if isinstance(default, (list, tuple)):
        return [str(v) for v in default]
    return [str(default)]


def test_every_subcommand_is_listed_with_a_line_and_has_a_description():
    subs, helps = _subparsers(), _one_line_helps()
    assert set(subs) == {"train", "eval", "sample", "bench", "demo", "info"}
    for name, p in subs.items():
        assert helps.get(name), f"{name}: no one-line help in `ebjdat --help`"
        assert p.description and len(p.description) > 40, f"{name}: no description"


@pytest.mark.parametrize("name", ["train", "eval", "sample", "bench", "demo", "info"])
def test_help_names_no_module_identifier_or_outside_file(name):
    text = _subparsers()[name].format_help()
    for word in FORBIDDEN:
        assert word not in text, f"ebjdat {name} --help mentions {word!r}"


@pytest.mark.parametrize("name", ["train", "eval", "sample", "bench", "demo", "info"])
def test_every_option_with_a_default_shows_it(name):
    p = _subparsers()[name]
    for a in _options(p):
        flag = a.option_strings[0] if a.option_strings else a.dest
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            continue   # a switch, or one of a pair whose other half says which is the default
        if a.default is None:
            continue
        help_text = (a.help or "") % {"default": a.default}
        assert "default" in help_text, f"ebjdat {name} {flag}: its help does not state the default {a.default!r}"
        if not isinstance(a.default, bool):
            assert all(t in help_text for t in _shown(a.default)), f"ebjdat {name} {flag}: default {a.default!r}"


def test_train_options_state_their_defaults():
    """train's flags override the variant's settings, so argparse holds no default: the help
    states the setting each takes when the flag is left out (steps, epochs, seed, ...)."""
    p = _subparsers()["train"]
    for a in _options(p):
        if a.option_strings[0] in cli.TRAIN_FLAGS:
            assert "default" in a.help, f"ebjdat train {a.option_strings[0]}: no default in its help"
    text = " ".join(p.format_help().split())
    assert "(default: 0)" in text and "epochs of the labelled data (default: 120 on the digits" in text
    assert "every 400 iterations" not in text and "(default: 400 on the digits, 500 elsewhere)" in text


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_sets_are_choices_listed_in_the_help(name):
    p = _subparsers()[name]
    text = p.format_help()
    by_dest = {a.dest: a for a in _options(p)}
    for dest, values in CLOSED[name].items():
        assert by_dest[dest].choices is not None, f"ebjdat {name} {dest}: a free string"
        for v in values:
            assert v in by_dest[dest].choices and v in text, f"ebjdat {name} {dest}: {v} not listed"


def test_closed_sets_refuse_other_values(capsys):
    for argv in (["train", "--variant", "jemm"], ["train", "--dataset", "mnist"], ["train", "--mode", "slow"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert "invalid choice" in capsys.readouterr().err


def test_eval_help_says_zero_eps_and_the_default_protocol():
    text = " ".join(_subparsers()["eval"].format_help().split())
    assert "0 gives the clean accuracy" in text
    assert "(default: standard)" in text and "--protocol published" in text
