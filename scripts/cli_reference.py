#!/usr/bin/env python
"""Generate the command reference of README.md from the click command tree of ``xai-loc``.

Every group and command, nested, in ``--help``'s order, gets a ``#### xai-loc WORDS`` heading, its short help and a
table ``| option | default | what |`` of its options and arguments: the flags as ``--help`` writes them, the default
as ``--help`` shows it (a ``show_default`` text or a ``[default: ...]`` that ends the help text; a callable default is
never called, so the text is the same on every machine and under any ``XAI_LOC_*`` variables) and the help text in
one line. README.md holds it between ``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->``; the test
suite checks that it is current. Building it imports no torch: the CLI's help path stays light.

Usage::

    python scripts/cli_reference.py                    # print the reference
    python scripts/cli_reference.py --check README.md  # exit 1, in one line, where README's section is stale
    python scripts/cli_reference.py --write README.md  # rewrite README's section (atomically)
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from xai_loc.errors import InputError
from xai_loc.script_args import Parser, run_main

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
#: Longest list of choices written beside the flag (``--model [loccnn|samplecnn]``); a longer one goes to the help.
INLINE_CHOICES = 40


def walk(command: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """``command`` and every group and command below it, depth first in ``--help``'s order, each with its
    context (whose ``command_path`` is its words)."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _text(text: str) -> str:
    """``text`` in one line, the characters that markdown would read (backslash, pipe, ``<``, ``*``, backtick)
    escaped so that they show as written."""
    return re.sub(r"([\\|<*`])", r"\\\1", " ".join(text.split()))


def _code(text: str) -> str:
    """``text`` as a code span of a table cell (a pipe escaped: GitHub reads it as a cell border even there)."""
    return "`" + text.replace("|", "\\|") + "`"


def _trailing_default(help_text: str) -> tuple[str, str]:
    """``(help, default)``: a ``[default: ...]`` that ends ``help_text`` (before a final period) taken out of it, where
    it is the only one; else ``(help_text, "")``."""
    body = help_text.rstrip().removesuffix(".")
    if not body.endswith("]") or help_text.count("[default:") != 1:
        return help_text, ""
    depth = 0
    for i in range(len(body) - 1, -1, -1):  # back to the "[" that matches the final "]"
        depth += {"]": 1, "[": -1}.get(body[i], 0)
        if not depth:
            break
    else:
        return help_text, ""
    inner = body[i + 1:-1]
    if not inner.startswith("default: "):
        return help_text, ""
    kept = body[:i].rstrip()
    return (f"{kept}." if kept and not kept.endswith((".", ":", ";")) else kept), inner.removeprefix("default: ")


def row(param: click.Parameter, ctx: click.Context) -> tuple[str, str, str] | None:
    """``(option, default, what)`` of ``param`` as ``--help`` shows it, unescaped; None for a hidden option. Choices
    longer than :data:`INLINE_CHOICES` characters are listed after the help text, the flag then reads ``CHOICE``."""
    if isinstance(param, click.Argument):
        return param.make_metavar(ctx), "required" if param.required else "", f"Argument ({param.type.name})."
    record = param.get_help_record(ctx)
    if record is None:
        return None
    extra = param.get_help_extra(ctx)
    what, default = _trailing_default(param.help or "")
    if "default" in extra:  # click writes a show_default text in parentheses
        default = extra["default"][1:-1] if isinstance(param.show_default, str) else extra["default"]
    envvars = f"env var: {', '.join(extra['envvars'])}" if "envvars" in extra else ""
    shown = (default, envvars, extra.get("range", ""), extra.get("required", ""))
    option, metavar = record[0], param.make_metavar(ctx)
    if isinstance(param.type, click.Choice) and len(metavar) > INLINE_CHOICES:
        option = option.replace(metavar, "CHOICE")
        what = f"{what} One of: {', '.join(map(str, param.type.choices))}.".lstrip()
    return option, "; ".join(part for part in shown if part), what


def reference(root: click.Command | None = None, name: str = "xai-loc") -> str:
    """The markdown command reference of ``root`` (default: ``xai_loc.cli.main``), called ``name``."""
    if root is None:
        from xai_loc.cli import main as root
    lines = []
    for command, ctx in walk(root, click.Context(root, info_name=name, **root.context_settings)):
        lines += [f"#### {ctx.command_path}", "", _text(command.get_short_help_str(limit=10**6)), ""]
        rows = [r for r in (row(p, ctx) for p in command.params) if r]  # not -h/--help, which every command has
        if rows:
            lines += ["| option | default | what |", "|---|---|---|"]
            lines += [f"| {_code(option)} | {_text(default)} | {_text(what)} |" for option, default, what in rows]
            lines.append("")
    return "\n".join(lines)


def framed(generated: str) -> str:
    """What lies between the markers: ``generated`` on its own lines, a blank line before the end marker."""
    return f"\n{generated}\n"


def section(text: str, path: Path) -> tuple[int, int]:
    """Offsets of what lies between the markers in ``text`` (of ``path``); one line where they are not there once
    each, in order."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise InputError(f"{path} has no section between {START} and {END} (each once, in that order); add them")
    return text.index(START) + len(START), text.index(END)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path} cannot be read: {getattr(err, 'strerror', None) or err}") from None


def check(path: Path, generated: str) -> str | None:
    """None where the section of ``path`` is ``generated``, else the one line that says where it differs."""
    text = _read(path)
    start, end = section(text, path)
    if text[start:end] == framed(generated):
        return None
    have, want = text[start:end].split("\n"), framed(generated).split("\n")
    first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want)))
    line = text[:start].count("\n") + 1 + first
    return (f"{path}: the command reference differs from the CLI's at line {line}; "
            f"run python scripts/cli_reference.py --write {path}")


def write(path: Path, generated: str) -> Path:
    """Rewrite the section of ``path`` with ``generated``, atomically; the rest of the file is kept."""
    from xai_loc.io import write_text_atomic

    text = _read(path)
    start, end = section(text, path)
    return write_text_atomic(path, text[:start] + framed(generated) + text[end:])


def main(argv: list[str] | None = None) -> int:
    """The command line (``argv``: its arguments, default ``sys.argv[1:]``); returns the exit status."""
    parser = Parser(prog="cli_reference.py", description="Print the xai-loc command reference (markdown), or check "
                    "or rewrite the section of a README between its cli-reference:start and :end markers.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", type=Path, metavar="FILE",
                      help="exit 1 with one line where FILE's section differs from the generated text")
    mode.add_argument("--write", type=Path, metavar="FILE", help="rewrite FILE's section (atomically)")
    args = parser.parse_args(argv)
    generated = reference()
    if args.check:
        stale = check(args.check, generated)
        if stale:
            print(stale, file=sys.stderr)
            return 1
    elif args.write:
        print(write(args.write, generated))
    else:
        sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    run_main(main)
