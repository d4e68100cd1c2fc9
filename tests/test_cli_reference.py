"""README's command reference (``scripts/cli_reference.py``): it is the text generated from the click tree, it names
every command and option, ``--check`` says in one line where a stale copy differs, and the text is the same on every
machine without importing torch."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from xai_loc.cli import main
from xai_loc.errors import InputError

TREE = Path(__file__).resolve().parents[1]
README = TREE / "README.md"


@pytest.fixture(scope="module")
def cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference_under_test", TREE / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(cli_reference) -> str:
    return cli_reference.reference()


def _section(cli_reference) -> str:
    text = README.read_text(encoding="utf-8")
    start, end = cli_reference.section(text, README)
    return text[start:end]


def _walk(group: click.Group, path=()):
    """Every group and command below ``group``, by its words."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


def test_readme_section_is_the_generated_reference(cli_reference, generated):
    assert _section(cli_reference) == cli_reference.framed(generated), \
        "README's command reference is stale: run python scripts/cli_reference.py --write README.md"


def test_every_command_option_and_argument_is_in_its_block(cli_reference):
    """Found by the click tree, not by the generator: each command's heading, and each of its flags (both spellings
    of an on/off flag) and arguments in the block below that heading."""
    blocks = {}
    for block in _section(cli_reference).split("\n#### ")[1:]:
        heading, _, body = block.partition("\n")
        blocks[heading] = body
    commands = [((), main), *_walk(main)]
    assert len(blocks) == len(commands)
    for words, command in commands:
        heading = " ".join(("xai-loc", *words))
        assert heading in blocks, heading
        for param in command.params:
            if isinstance(param, click.Argument):
                names = [param.human_readable_name]
            else:
                names = [*param.opts, *param.secondary_opts]
            for name in names:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", blocks[heading]), (heading, name)


def test_check_says_in_one_line_where_a_changed_cell_is(cli_reference, generated, tmp_path, capsys):
    lines = README.read_text(encoding="utf-8").split("\n")
    row = next(i for i, line in enumerate(lines) if line.startswith("| `--windows INTEGER` | 4 |"))
    changed = tmp_path / "README.md"
    changed.write_text("\n".join([*lines[:row], lines[row].replace("| 4 |", "| 8 |"), *lines[row + 1:]]),
                       encoding="utf-8")
    assert cli_reference.main(["--check", str(changed)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (f"{changed}: the command reference differs from the CLI's at line {row + 1}; "
                                 f"run python scripts/cli_reference.py --write {changed}\n")
    assert cli_reference.main(["--write", str(changed)]) == 0
    assert changed.read_bytes() == README.read_bytes()
    assert cli_reference.main(["--check", str(changed)]) == 0


def test_a_file_without_the_markers_is_refused_in_one_line(cli_reference, tmp_path):
    plain = tmp_path / "README.md"
    plain.write_text("# no reference here\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no section between <!-- cli-reference:start --> and"):
        cli_reference.main(["--write", str(plain)])
    assert plain.read_text(encoding="utf-8") == "# no reference here\n"


def test_the_reference_needs_no_torch_and_reads_no_machine_setting(generated, tmp_path):
    """Built in a fresh interpreter under odd XAI_LOC_* values and a narrow terminal: the same text, torch not
    imported."""
    script = str(TREE / "scripts" / "cli_reference.py")
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('cli_reference', {script!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "sys.stdout.write(module.reference())\n"
            "sys.exit(3 if 'torch' in sys.modules else 0)\n")
    env = {**os.environ, "XAI_LOC_DATA": str(tmp_path / "odd | data"), "XAI_LOC_RESULTS": str(tmp_path / "r*s"),
           "XAI_LOC_PRETRAINED": str(tmp_path), "XAI_LOC_THREADS": "1", "COLUMNS": "20"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr or "torch was imported"
    assert done.stdout == generated
    assert str(tmp_path) not in generated and str(TREE) not in generated
