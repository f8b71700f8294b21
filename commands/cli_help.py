"""How every ``mimic`` command's help reads: flags shown as flags, usage lines in the usual
``VIDEO`` / ``[FILES]...`` form, value labels that say what to type, ranges as ``[range: LO..HI]``,
no help text cut off at any width, and generation settings with their range and effective defaults.

Why this exists: Typer 0.29's rich help asks every option for a type label
(``TyperOption.display_type_rich``) without checking ``is_flag``, so ``--validate`` and even
``--help`` render as ``--help <bool>``; its usage line wraps required arguments in braces
(``mimic pose [OPTIONS] {video}``); an option declared with ``min=``/``max=`` reads ``<int range>
[x>=1]``, a repeatable one ``<list[int]>``, a free-text one ``<str>``; and its tables end a word
longer than their column with ``…`` (``openjd_progress/openjd_…`` at 80 columns). ``MimicGroup``
is the class of the root ``mimic`` group (``cli.py``); it adopts every command below it when it is
looked up, and each command's parameters when they are listed (``MimicOption``,
``MimicArgument``), so the command modules stay plain Typer apps and a new command gets the same
help without doing anything:

* a value is labelled by its metavar if the option names one, else by its element type once
  (``<int>``, ``<path>``; a repeatable option says "(repeat)" in its help, a variadic argument
  reads ``FILES...``), and free text (``<str>``) by ``conventions.METAVARS`` or the option's name
  in capitals;
* ``min=``/``max=`` become ``[range: >= 1]`` / ``[range: LO..HI]`` at the end of the help text;
* a word too long for its column is folded onto the next line, never cut.

Options in the ``Generation settings`` panel (``SETTINGS_PANEL``; ``commands/options.py`` makes them
from ``mimic.model.config.SETTINGS``) get their range and their default for each preset appended when
help is shown; given ``--preset NAME`` or ``--weights DIR`` before ``--help``, only the chosen one's.
"""
from __future__ import annotations

import contextlib
import re

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

SETTINGS_PANEL = "Generation settings"
_ARGV_KEY = "mimic.argv"


def adopt(command):
    """Give a Typer command or group built by ``typer.main`` this module's help (in place)."""
    if type(command) in (TyperCommand, TyperGroup):
        command.__class__ = MimicCommand if type(command) is TyperCommand else MimicGroup
        if command.help:  # its short help in its group's command list reads as one paragraph too
            command.help = _reflow(command.help)
    return command


def _tidy(params: list) -> list:
    """Flags take no value: no type label. Arguments are named in capitals, as in the usage line
    (``FILES...`` when they take several). Options and arguments get this module's labels."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = MimicOption
        elif type(param) is TyperArgument:
            param.__class__ = MimicArgument
        if isinstance(param, TyperOption) and (param.is_flag or param.count) and param.metavar is None:
            param.metavar = ""  # typer renders the metavar in place of the type label
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
    return params


def _value_label(param, ctx) -> str | None:
    """What a value of ``param`` looks like: typer's ``<type>`` label with one element of a list
    (``<list[int]>`` -> ``<int>``), no ``range`` (``<int range>`` -> ``<int>``: the range is in the
    help text), path types in lower case, and free text (``<str>``) named by
    ``conventions.METAVARS`` or after the option (``--args`` -> ``ARGS``); ``None`` for a free-text
    argument, whose name says it."""
    label = param.display_type(ctx)  # typer's own label: <int>, <list[Path]>, <int range>, ...
    if not (label.startswith("<") and label.endswith(">")):
        return label
    inner = label[1:-1]
    if (element := re.fullmatch(r"list\[(.*)\]", inner)) is not None:
        inner = element.group(1)
    inner = re.sub(r"^(\w+) range$", r"\1", inner)
    if re.fullmatch(r"[A-Za-z_]\w*", inner):
        inner = inner.lower()  # Path -> path, as typer writes a single path
    if inner != "str":
        return f"<{inner}>"
    if isinstance(param, TyperArgument):
        return None
    from mimic.commands.conventions import METAVARS

    flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    name = getattr(ctx.command, "name", None)
    return METAVARS.get(f"{name} {flag}") or METAVARS.get(flag) or flag.lstrip("-").upper()


class MimicOption(TyperOption):
    """A Typer option labelled by ``_value_label``; its ``min``/``max`` are shown in the help text
    (``_describe``), not as typer's ``[x>=1]``."""

    def display_type_rich(self, ctx) -> str | None:
        if self.metavar is not None:
            return self.metavar
        return _value_label(self, ctx)

    def _get_number_range_help_str(self) -> str | None:
        return None


class MimicArgument(TyperArgument):
    """A Typer argument labelled by ``_value_label``; its range is in the help text."""

    def display_type_rich(self, ctx) -> str | None:
        return _value_label(self, ctx)

    def _get_number_range_help_str(self) -> str | None:
        return None


def _usage_pieces(command, ctx) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.display_name_raw.removesuffix("...")  # FILES... (our metavar of a variadic argument)
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        else:
            pieces.extend(param.get_usage_pieces(ctx))
    return pieces


def _chosen_weights(argv: list[str]) -> tuple[str | None, bool]:
    """(--preset value, whether --weights was given) from the raw arguments of this command."""
    preset, weights = None, False
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
        elif arg == "--weights" or arg.startswith("--weights="):
            weights = True
    return preset, weights


def _value(v, setting=None) -> str:
    """A default as help shows it: ``2``, ``0.5``, ``--no-draw-face`` for a switch that is off, what
    ``None`` means for a setting that says so (``Setting.unset``)."""
    if v is None:
        return getattr(setting, "unset", "") or "none"
    if isinstance(v, bool) and setting is not None:
        return setting.flag if v else "--no-" + setting.flag.removeprefix("--")
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_help(name: str, argv: list[str]) -> str:
    """``[range: 1..1000] [default: 25 with --weights; 8 with --preset tiny; ...]`` for a setting
    (``mimic.model.config.SETTINGS``; the defaults of each preset from ``mimic.model.presets``)."""
    from mimic.model.config import SETTINGS
    from mimic.model.presets import PRESET_NAMES, default_generation  # torch-free

    setting = SETTINGS[name]
    parts = [setting.range_text()]
    preset, weights = _chosen_weights(argv)
    if preset in PRESET_NAMES:
        parts.append(f"[default with --preset {preset}: {_value(getattr(default_generation(preset), name), setting)}]")
    elif weights:
        parts.append(f"[default: {_value(getattr(default_generation(None), name), setting)} (released settings)]")
    else:
        each = {"--weights": _value(getattr(default_generation(None), name), setting)}
        each |= {f"--preset {p}": _value(getattr(default_generation(p), name), setting) for p in PRESET_NAMES}
        if len(set(each.values())) == 1:
            parts.append(f"[default: {each['--weights']}]")
        else:
            parts.append(f"[default: {'; '.join(f'{v} with {k}' for k, v in each.items())}]")
    return " ".join(part for part in parts if part)


def _describe(params: list, argv: list[str], rich_markup: bool) -> None:
    """Set each option's help for this rendering: a repeatable option says "(repeat)", ``min``/``max``
    read ``[range: ...]``, settings get their range and defaults; in rich mode the text is escaped,
    so ``[range: 1..1000]`` shows instead of being read as markup."""
    from mimic.commands.conventions import in_range
    from mimic.model.config import COMPOSITES, FLAGS

    by_flag = {flag: name for name, flag in FLAGS.items()} | {f"--{key}": names[-1] for key, names in COMPOSITES.items()}
    for param in params:
        if not isinstance(param, (TyperOption, TyperArgument)):
            continue
        if not hasattr(param, "_mimic_help"):
            param._mimic_help = param.help or ""
        text = param._mimic_help
        name = next((by_flag[o] for o in param.opts if o in by_flag), None)
        if isinstance(param, TyperOption) and param.multiple and "repeat" not in text.lower():
            text = f"{text} (repeat)".strip()
        if isinstance(param, TyperOption) and param.rich_help_panel == SETTINGS_PANEL and name is not None:
            text = f"{text} {settings_help(name, argv)}".strip()
        if (param.min is not None or param.max is not None) and not getattr(param, "count", False) and "[range:" not in text:
            text = f"{text} {in_range(param.min, param.max)}".strip()
        if rich_markup:
            from rich.markup import escape

            text = escape(text)
        param.help = text


def _reflow(text: str) -> str:
    """Help paragraphs wrapped in the source read as one paragraph each (rich keeps line breaks)."""
    return "\n\n".join(" ".join(line.strip() for line in para.splitlines()) for para in text.split("\n\n"))


@contextlib.contextmanager
def _no_cut_words():
    """While help renders, nothing is cut: rich ends a word longer than its table column with ``…``
    (``openjd_progress/openjd_…`` at 80 columns), and squeezes every column of a narrow table, option
    names too (``--image-embed-stren…``). Here the option names and value labels keep their width
    (their columns do not wrap: the help column, the last, gives way), and a word longer than its
    column folds onto the next line. Typer makes a help table's text with its module's highlighters
    (names, help text, command descriptions), a ``[default: ...]`` in ``_get_parameter_help`` and
    the tables with ``Table``: each is wrapped for the rendering. Should a Typer release rename
    them, help still renders (and tests/test_cli_conventions.py finds the ``…``)."""
    from rich.highlighter import Highlighter
    from rich.table import Table
    from rich.text import Text
    from typer import rich_utils

    class NamesWhole(Table):
        def add_row(self, *renderables, **kwargs) -> None:
            super().add_row(*renderables, **kwargs)
            for column in self.columns[:-1]:
                column.no_wrap = True

    class Folding(Highlighter):
        def __init__(self, wrapped) -> None:
            self.wrapped = wrapped

        def highlight(self, text: Text) -> None:
            self.wrapped.highlight(text)
            text.overflow = "fold"

    def folding_cell(make):
        def wrapped(*args, **kwargs):
            cell = make(*args, **kwargs)
            for item in getattr(cell, "renderables", [cell]):  # Columns(help, [default: ...], ...)
                if isinstance(item, Text):
                    item.overflow = "fold"
            return cell

        return wrapped

    saved = {name: getattr(rich_utils, name) for name in ("highlighter", "negative_highlighter", "_get_parameter_help", "Table")
             if hasattr(rich_utils, name)}
    for name, original in saved.items():
        if isinstance(original, Highlighter):
            setattr(rich_utils, name, Folding(original))
        elif original is Table:
            setattr(rich_utils, name, NamesWhole)
        else:
            setattr(rich_utils, name, folding_cell(original))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(rich_utils, name, original)


def _help_methods(base):
    """``get_params``, ``parse_args`` and ``format_help`` of a ``base`` (TyperCommand or TyperGroup) subclass."""

    def get_params(self, ctx):
        return _tidy(base.get_params(self, ctx))

    def parse_args(self, ctx, args):
        ctx.meta[_ARGV_KEY] = list(args)  # what the user typed before --help: --preset/--weights
        return base.parse_args(self, ctx, args)

    def format_help(self, ctx, formatter) -> None:
        if self.help:
            self.help = _reflow(self.help)
        _describe(self.get_params(ctx), ctx.meta.get(_ARGV_KEY, []), getattr(self, "rich_markup_mode", None) == "rich")
        with _no_cut_words():
            return base.format_help(self, ctx, formatter)

    return get_params, parse_args, format_help


# Single inheritance on purpose: adopt() assigns __class__, which a mixin's layout would refuse.
class MimicCommand(TyperCommand):
    get_params, parse_args, format_help = _help_methods(TyperCommand)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return _usage_pieces(self, ctx)


class MimicGroup(TyperGroup):
    get_params, parse_args, format_help = _help_methods(TyperGroup)

    def collect_usage_pieces(self, ctx) -> list[str]:
        metavar = self.subcommand_metavar
        if self.invoke_without_command and not metavar.startswith("["):  # `mimic bench` runs as it is
            metavar = f"[{metavar}]"
        return _usage_pieces(self, ctx) + [metavar]

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        return adopt(command) if command is not None else None
