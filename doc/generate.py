"""Generate xenlvm's man page, doc/xenlvm.8, and its bash completion, doc/xenlvm.bash-completion,
from the sources that --help and the README's key lists come from, so that they cannot drift:

- commands and options: the click command tree of xenlvm.cli (its help texts are --help's);
- configuration keys: the fields of xenlvm.config.model, which declare which keys exist, with the
  value and the comment that config.example.yaml gives each (every key must have one there).

    python3 doc/generate.py          # rewrite both files
    python3 doc/generate.py --check  # exit 1 when either is not what the sources give

The completion is a plain bash function with the words written out: pressing TAB never starts
xenlvm (a root tool), and it works whatever click version the host has (click's own completion
calls back into the program, with an instruction that differs between click 7 and 8).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import click  # noqa: E402

from xenlvm import __version__  # noqa: E402
from xenlvm.cli import main  # noqa: E402
from xenlvm.config import load as config_file  # noqa: E402
from xenlvm.config import model as config  # noqa: E402

MAN_PAGE = REPO / "doc" / "xenlvm.8"
COMPLETION = REPO / "doc" / "xenlvm.bash-completion"
EXAMPLE = REPO / "config.example.yaml"

# Each section of the configuration, and its keys (with their parsers), as xenlvm.config.model declares them.
SECTIONS = config_file.sections()

_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<hash>#\s*)?(?P<item>- )?(?P<key>[a-z_]+):(?P<rest>\s.*|)$")


# ---------------------------------------------------------------------------------------------
# The configuration keys, from config.example.yaml


def example_keys(text: str) -> dict[str, tuple[str, str]]:
    """Given config.example.yaml, return 'section.key' -> (value, description) for every key it
    shows, commented out or not: the description is the key's own comment, else the comment
    lines right above it. The first job stands for all (jobs.NAME), list items for their list
    (volumes[])."""
    keys: dict[str, tuple[str, str]] = {}
    stack: list[list] = []  # [indent, key] of the keys this line lies below
    above: list[str] = []
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            comment = line.strip()
            above = above + [comment.lstrip("#").strip()] if comment.startswith("#") else []
            continue
        indent = len(match["indent"])
        if match["hash"]:  # "    #   key:" lies at the indent the key has once uncommented
            indent += len(match["hash"]) - 2
        if match["item"]:
            indent += 2
        value, _, comment = match["rest"].partition(" #")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if match["item"] and stack:  # a list: its items' keys are documented once, as key[]
            stack[-1][1] = stack[-1][1].rstrip("[]") + "[]"
        parents = [name for _, name in stack]
        if parents[:1] == ["jobs"] and len(parents) >= 2:
            parents[1] = "NAME"
        path = ".".join(parents + [match["key"]])
        description = comment.strip() or " ".join(above)
        keys.setdefault(path, (value.strip(), description))
        stack.append([indent, match["key"]])
        above = []
    return keys


def config_keys() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Every section with its keys, each with the example's value and description; raise
    ValueError when config.example.yaml lacks a key the parsers know, or shows one they do not."""
    shown = example_keys(EXAMPLE.read_text())
    problems, sections = [], []
    for section, parsers in SECTIONS.items():
        prefix = f"{section}." if section else ""
        known = set(parsers)
        in_example = {path[len(prefix):] for path in shown
                      if path.startswith(prefix) and "." not in path[len(prefix):]}
        problems += [f"config.example.yaml does not show {prefix}{key}" for key in sorted(known - in_example)]
        problems += [f"config.example.yaml shows {prefix}{key}, which xenlvm.config.model does not know"
                     for key in sorted(in_example - known)]
        entries = []
        for key in parsers:
            value, description = shown.get(prefix + key, ("", ""))
            if section and prefix + key in shown and not description:
                problems.append(f"config.example.yaml has no comment for {prefix}{key}")
            entries.append((key, value, description))
        sections.append((section, entries))
    if problems:
        raise ValueError("\n".join(problems))
    return sections


# ---------------------------------------------------------------------------------------------
# The command tree


def _contexts() -> list[tuple[str, click.Command, click.Context]]:
    top = click.Context(main, info_name="xenlvm", **main.context_settings)
    found = [("", main, top)]
    for name in main.commands:  # in the order cli.py adds them
        command = main.commands[name]
        found.append((name, command, click.Context(command, info_name=name, parent=top)))
    return found


def _options(command: click.Command, ctx: click.Context) -> list[click.Option]:
    return [p for p in command.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]


def _value_name(option: click.Option) -> str | None:
    if option.is_flag or option.count:
        return None
    return option.metavar or option.type.name.upper()


def _paragraphs(text: str | None) -> list[str]:
    text = inspect.cleandoc(text or "")
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


# ---------------------------------------------------------------------------------------------
# roff


def _roff(text: str) -> str:
    """Plain text as roff: backslashes escaped, option dashes as \\-, no line starting a request."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w/])-(?=[-\w])", r"\\-", text)
    text = re.sub(r"(?<=\\-)-", r"\\-", text)
    return "\n".join("\\&" + line if line[:1] in ".'" else line for line in text.splitlines())


def _option_lines(option: click.Option) -> list[str]:
    names = ", ".join(f"\\fB{_roff(name)}\\fR" for name in option.opts + option.secondary_opts)
    value = _value_name(option)
    head = names + (f" \\fI{value}\\fR" if value else "")
    help_text = option.help or ""
    if option.show_default and isinstance(option.default, str):
        help_text += f" [default: {option.default}]"
    return [".TP", head, _roff(help_text)]


def man_page() -> str:
    contexts = _contexts()
    _, _, top = contexts[0]
    summary = _paragraphs(main.help)[0].rstrip(".")
    lines = [
        '.\\" Generated by doc/generate.py from xenlvm\'s command line and configuration parsers.',
        '.\\" Do not edit: run "python3 doc/generate.py".',
        f'.TH XENLVM 8 "" "xenlvm {__version__}" "System Administration"',
        ".SH NAME",
        "xenlvm \\- " + _roff(summary[:1].lower() + summary[1:]),
        ".SH SYNOPSIS",
        ".B xenlvm",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
        ".br",
        ".B /opt/sesam/bin/sesam/sbc_pre",
        "[\\fISESAM_ARGS\\fR]",
        ".br",
        ".B /opt/sesam/bin/sesam/sbc_post",
        "[\\fISESAM_ARGS\\fR]",
        ".SH DESCRIPTION",
    ]
    for paragraph in _paragraphs(main.help)[1:]:
        lines += [_roff(paragraph), ".PP"]
    lines += [_roff("The hooks sbc_pre and sbc_post are written by xenlvm install-hooks and run "
                    "xenlvm pre and xenlvm post with the options and arguments described there.")]
    lines.append(".SH GLOBAL OPTIONS")
    for option in _options(main, top):
        lines += _option_lines(option)
    lines.append(".SH COMMANDS")
    for name, command, ctx in contexts[1:]:
        arguments = [p for p in command.get_params(ctx) if isinstance(p, click.Argument)]
        usage = " ".join(f"[{p.name.upper()}...]" if p.nargs == -1 else p.name.upper() for p in arguments)
        lines += [f".SS {_roff(name)}", f".B xenlvm {_roff(name)}", "[\\fIOPTIONS\\fR]" + (
            f" \\fI{usage}\\fR" if usage else ""), ".PP"]
        for paragraph in _paragraphs(command.help):
            lines += [_roff(paragraph), ".PP"]
        lines.pop()
        lines += [".RS"]
        for option in _options(command, ctx):
            lines += _option_lines(option)
        lines += [".RE"]
    lines += [
        ".SH CONFIGURATION",
        _roff(f"The file {config.DEFAULT_CONFIG_PATH} (or --config FILE, or $XENLVM_CONFIG) is YAML. "
              "Every key is checked before anything runs; a mistake exits 2 naming the file, the line, "
              "the key and what is wrong. The file must be owned by root and writable only by root. "
              "Each key is shown with the value that the example configuration, "
              "/usr/share/doc/xenlvm/examples/config.example.yaml, gives it; under settings these "
              "are the defaults."),
    ]
    for section, entries in config_keys():
        if not section:
            continue
        title = {"jobs.NAME": "jobs.NAME (one per job)",
                 "jobs.NAME.volumes[]": "jobs.NAME.volumes (a list; each item)"}.get(section, section)
        lines.append(f'.SS "{title}"')
        for key, value, description in entries:
            lines += [".TP", f"\\fB{key}\\fR" + (f": {_roff(value)}" if value else ""), _roff(description)]
    lines += [
        ".SH EXIT STATUS",
        ".TP", "0", "Success (for pre: the snapshots are mounted and ready, or no job matched).",
        ".TP", "1", "The operation failed: for pre, the backup must not run; for post, cleanup failed "
        "or a snapshot became invalid and the backup of this run cannot be trusted.",
        ".TP", "2", "Usage or configuration error; nothing was run.",
        ".SH ENVIRONMENT",
        ".TP", ".B XENLVM_CONFIG", "The configuration file when --config is not given.",
        ".SH FILES",
        ".TP", f".I {config.DEFAULT_CONFIG_PATH}", "The configuration.",
        ".TP", ".I /opt/sesam/bin/sesam/sbc_pre, sbc_post",
        "The hooks, written by xenlvm install-hooks; an admin's own hooks kept as sbc_pre.local, "
        "sbc_post.local.",
        ".TP", ".I /var/log/xenlvm.log", "Every command run, with its arguments, exit status and duration.",
        ".TP", ".I /var/lib/xenlvm/JOB/state.json", "The last pre and post of a job.",
        ".TP", ".I /run/xenlvm", "Locks and watchdog pid files.",
        ".SH SEE ALSO",
        ".BR lvcreate (8),",
        ".BR lvs (8),",
        ".BR xl (1),",
        "/usr/share/doc/xenlvm/README.md.gz",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# bash completion


def bash_completion() -> str:
    contexts = _contexts()
    takes_file, takes_dir, takes_word = set(), set(), set()
    options: dict[str, list[str]] = {}
    for name, command, ctx in contexts:
        params = _options(command, ctx)
        options[name] = [opt for o in params for opt in o.opts + o.secondary_opts]
        for option in params:
            value = _value_name(option)
            if value is None:
                continue
            target = takes_file if value == "FILE" else takes_dir if "dir" in option.name else takes_word
            target.update(option.opts)
    global_valued = [o for o in _options(main, contexts[0][2]) if _value_name(o)]
    skip = "|".join(opt for o in global_valued for opt in o.opts)
    cases = "\n".join(f'        {name or chr(34) * 2}) options="{" ".join(opts)}" ;;'
                      for name, opts in options.items())
    return f"""\
# bash completion for xenlvm(8). Generated by doc/generate.py from xenlvm's command line: do
# not edit. Plain words, so that TAB never starts xenlvm itself.

_xenlvm() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local command="" options words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            {skip}) ((i++)) ;;
            -*) ;;
            *) command=${{COMP_WORDS[i]}}; break ;;
        esac
    done
    case $prev in
        {'|'.join(sorted(takes_file))}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        {'|'.join(sorted(takes_dir))}) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        {'|'.join(sorted(takes_word))}) COMPREPLY=(); return ;;
    esac
    case $command in
{cases}
        *) options="" ;;
    esac
    # Like click: options once a dash is typed; else the commands, or nothing after one.
    case $cur in
        -*) words=$options ;;
        *) [ -n "$command" ] && words="" || words="{" ".join(main.commands)}" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _xenlvm xenlvm
"""


def main_(argv: list[str]) -> int:
    outputs = {MAN_PAGE: man_page(), COMPLETION: bash_completion()}
    if argv[1:] == ["--check"]:
        stale = [str(path.relative_to(REPO)) for path, text in outputs.items()
                 if not path.exists() or path.read_text() != text]
        if stale:
            print(f"not current: {', '.join(stale)}; run: python3 doc/generate.py", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv))
