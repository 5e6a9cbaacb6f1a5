"""README.md's commands and setting names are the configs' own: every script command it shows composes (its
config choices exist, its settings are spelt as the configs spell them), and every dotted setting its prose names
is a key of some config file, or is added with ``+``. A command Hydra would refuse (an unknown option, a key the
configs lack given without ``+``) is a broken instruction, found here without running anything."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from tests.conftest import ROOT, compose_script

SCRIPTS = {"train.py": "train", "eval.py": "eval", "cluster.py": "cluster", "retrieve.py": "retrieve"}
COMMAND = re.compile(r"python (?:train|eval|cluster|retrieve)\.py\b")


def readme_commands(text: str) -> list[str]:
    """The script commands of README's ```bash blocks (continuation lines joined) and of its inline code."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if COMMAND.match(line.strip()):
                commands.append(line.strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        if COMMAND.match(span):
            commands.append(" ".join(span.split()))
    return commands


def overrides_of(command: str) -> tuple[str, list[str]]:
    """(config name, overrides) of a README command: placeholders (``<time>``, ``...``) become a plain value,
    ``[a | b]`` alternatives the first one, and a sweep's settings their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    command = re.sub(r"<[^>]*>", "x", command)
    command = re.sub(r"\[([^\]|]*?)\s*\|[^\]]*\]", r"\1", command)
    words = [w for w in shlex.split(command, comments=True) if w not in ("-m", "--multirun", "...")]
    words = [re.sub(r"=\.\.\.$", "=x", w) for w in words]
    script, args = words[1], words[2:]
    overrides = []
    for override in OverridesParser.create().parse_overrides(args):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={first}")
        else:
            overrides.append(override.input_line)
    return SCRIPTS[script], overrides


COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_shows_commands_of_every_script():
    assert {c.split()[1] for c in COMMANDS} == set(SCRIPTS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=[re.sub(r"\s+#.*", "", c)[:80] for c in COMMANDS])
def test_readme_command_composes(command):
    name, overrides = overrides_of(command)
    if any(o.startswith("hydra/launcher=") and not o.endswith("=basic") for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    compose_script(name, *overrides, hydra=True)


def test_a_key_the_configs_lack_fails_composition():
    """What the test above relies on: Hydra refuses a setting no config has unless it is added with ``+``."""
    from hydra.errors import ConfigCompositionException

    name, overrides = overrides_of("python train.py -m trainer.gradient_clip_val=0.5,1")
    assert overrides == ["trainer.gradient_clip_val=0.5"]  # a sweep's first value
    with pytest.raises(ConfigCompositionException):
        compose_script(name, *overrides, hydra=True)
    name, overrides = overrides_of("python train.py -m +trainer.gradient_clip_val=0.5,1")
    assert compose_script(name, *overrides).trainer.gradient_clip_val == 0.5


#: Names README shows as mistakes (the Errors section's hint for a misspelt setting).
SHOWN_AS_WRONG = {"data.preset"}


def config_keys() -> set[str]:
    """Every key of every file under configs/, dotted under the package the file lands in (its group, or the
    ``@package`` it names): ``trainer.sync_batchnorm`` (strategy/ddp.yaml), ``hydra.launcher.partition``."""
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                keys.add(prefix + str(key))
                walk(value, f"{prefix}{key}.")

    for path in (ROOT / "configs").rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        group = path.parent.relative_to(ROOT / "configs").as_posix()
        package = re.search(r"^# @package (\S+)", text, flags=re.M)
        package = package.group(1) if package else group.replace("/", ".")
        walk(yaml.safe_load(text) or {}, "" if package in ("_global_", ".") else package + ".")
    return keys


def readme_settings(text: str) -> set[str]:
    """The dotted settings README's code shows being set (``key=value``, ``+`` additions left out)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    code = re.findall(r"`([^`]+)`", prose) + re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    tops = set(compose_script("train").keys()) | {"hydra"}
    found = set()
    for match in re.finditer(r"(?<![\w.+~])([a-z_]+(?:\.[A-Za-z_0-9]+)+)=", "\n".join(code)):
        if match.group(1).split(".")[0] in tops:
            found.add(match.group(1))
    return found


def test_readme_settings_are_config_keys():
    settings = readme_settings((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(settings) > 40  # the scan found README's settings at all
    assert sorted(settings - config_keys() - SHOWN_AS_WRONG) == []


def readme_results_example() -> dict:
    """The results.json README shows (its ```json block)."""
    (block,) = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return json.loads(block)
