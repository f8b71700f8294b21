"""How every ``mimic`` command's help reads: flags shown as flags, usage lines in the usual
``VIDEO`` / ``[FILES]...`` form, and generation settings with their range and effective defaults.

Why this exists: Typer 0.29's rich help asks every option for a type label
(``TyperOption.display_type_rich``) without checking ``is_flag``, so ``--validate`` and even
``--help`` render as ``--help <bool>``; and its usage line wraps required arguments in braces
(``mimic pose [OPTIONS] {video}``). ``MimicGroup`` is the class of the root ``mimic`` group
(``cli.py``); it adopts every command below it when it is looked up, so the command modules stay
plain Typer apps and a new command gets the same help without doing anything.

Options in the ``Generation settings`` panel (``SETTINGS_PANEL``; ``commands/options.py`` makes them
from ``mimic.model.config.SETTINGS``) get their range and their default for each preset appended when
help is shown; given ``--preset NAME`` or ``--weights DIR`` before ``--help``, only the chosen one's.
"""
from __future__ import annotations

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
    """Flags take no value: no type label. Arguments are named in capitals, as in the usage line."""
    for param in params:
        if isinstance(param, TyperOption) and (param.is_flag or param.count) and param.metavar is None:
            param.metavar = ""  # typer renders the metavar in place of the type label
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = param.name.upper()
    return params


def _usage_pieces(command, ctx) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.display_name_raw if param.required else f"[{param.display_name_raw}]"
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


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_help(name: str, argv: list[str]) -> str:
    """``[range: 1..1000] [default: 25 with --weights; 8 with --preset tiny; ...]`` for a setting
    (``mimic.model.config.SETTINGS``; the defaults of each preset from ``mimic.model.presets``)."""
    from mimic.model.config import SETTINGS
    from mimic.model.presets import PRESET_NAMES, default_generation  # torch-free

    parts = [SETTINGS[name].range_text()]
    preset, weights = _chosen_weights(argv)
    if preset in PRESET_NAMES:
        parts.append(f"[default with --preset {preset}: {_value(getattr(default_generation(preset), name))}]")
    elif weights:
        parts.append(f"[default: {_value(getattr(default_generation(None), name))} (released settings)]")
    else:
        each = {"--weights": _value(getattr(default_generation(None), name))}
        each |= {f"--preset {p}": _value(getattr(default_generation(p), name)) for p in PRESET_NAMES}
        if len(set(each.values())) == 1:
            parts.append(f"[default: {each['--weights']}]")
        else:
            parts.append(f"[default: {'; '.join(f'{v} with {k}' for k, v in each.items())}]")
    return " ".join(parts)


def _describe(params: list, argv: list[str], rich_markup: bool) -> None:
    """Set each option's help for this rendering: settings get their range and defaults; in rich
    mode the text is escaped, so ``[range: 1..1000]`` shows instead of being read as markup."""
    from mimic.model.config import COMPOSITES, FLAGS

    by_flag = {flag: name for name, flag in FLAGS.items()} | {f"--{key}": names[-1] for key, names in COMPOSITES.items()}
    for param in params:
        if not isinstance(param, (TyperOption, TyperArgument)):
            continue
        if not hasattr(param, "_mimic_help"):
            param._mimic_help = param.help or ""
        text = param._mimic_help
        name = next((by_flag[o] for o in param.opts if o in by_flag), None)
        if isinstance(param, TyperOption) and param.rich_help_panel == SETTINGS_PANEL and name is not None:
            text = f"{text} {settings_help(name, argv)}".strip()
        if rich_markup:
            from rich.markup import escape

            text = escape(text)
        param.help = text


def _reflow(text: str) -> str:
    """Help paragraphs wrapped in the source read as one paragraph each (rich keeps line breaks)."""
    return "\n\n".join(" ".join(line.strip() for line in para.splitlines()) for para in text.split("\n\n"))


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
