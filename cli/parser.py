"""The `gani` command's arguments: sub-commands, help with examples and exit codes, and
"did you mean" for a mistyped flag or sub-command.

Abbreviated flags are refused (`allow_abbrev=False`): `--p` silently meaning `--params` or
`--profile` depending on the version is a trap in a nightly job. An unknown flag or
sub-command is answered with the closest known one (difflib), exit 2 as argparse does.
"""
from __future__ import annotations

import argparse
import difflib
import re
from typing import Optional, Sequence

EXIT_CODES = """\
exit status:
  0  the run finished; every image is done or quarantined (a quarantined file is a bad
     input, recorded with its reason in summary.json, not a failure of the run)
  1  anything unexpected, or a storage fault that stopped the run (disk full, read-only
     store); one line on stderr (GANI_TRACEBACK=1 for the traceback)
  2  bad usage or configuration (unknown flag or profile, no --profile, invalid parameter,
     missing input, credentials in a URI); nothing was processed
  3  a checkpoint is missing (every missing file listed, with where to get it), corrupt,
     unsafe or of another architecture; nothing was processed
  4  the run finished but images failed (listed on stderr and in summary.json; a re-run
     retries them)"""

EXAMPLES = """\
examples:
  gani demo                                              the trained testbed on bundled data
  gani invert photos/ --out results/ --profile ffhq      faces (checkpoints imported first)
  gani invert s3://bucket/photos --out s3://bucket/inversions --profile cars
  gani invert photos/ --out results/ --profile ffhq --set tune.steps=50 --set tune.method=pti
  gani invert photos/ --out results/ --profile ffhq --json > summary.json
  gani checkpoints list                                  every known file, source, licence
  gani checkpoints import ~/Downloads/stylegan2-ffhq-config-f.pt

parameters: the defaults ship with the package; a params.yaml in the working directory, or
--params FILE, is used instead (start from a copy of the defaults: gani/config/params.yaml);
--set KEY=VALUE wins over the file."""

PROFILES = ("ffhq, cars, church, horse, afhq_wild (real domains: their checkpoints must be "
            "imported); demo (the 32-px testbed trained on procedural faces) and demo_random "
            "(random networks) are for trying the pipeline, not for real photos")


class GaniParser(argparse.ArgumentParser):
    """argparse with suggestions: an unknown flag or sub-command names the closest one.

    Every parser of the tree records itself when it parses (`_seen`), so the top-level
    error about unrecognised arguments can look up the flags of the sub-command the user
    was typing."""

    _seen: list["GaniParser"] = []
    _argv: list[str] = []

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        GaniParser._seen.append(self)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):
        import sys

        GaniParser._seen = []
        GaniParser._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def known_flags(self) -> list[str]:
        """The flags of every parser seen in this parse (the sub-command's included)."""
        flags: list[str] = []
        for parser in GaniParser._seen or [self]:
            for action in parser._actions:
                flags += list(action.option_strings)
        return sorted(set(flags))

    def error(self, message: str):
        hint = suggestion(message, self.known_flags(), GaniParser._argv)
        super().error(message + (f"\n{hint}" if hint else ""))


def suggestion(message: str, flags: list[str], argv: Sequence[str] = ()) -> str:
    """'did you mean ...?' for every unknown flag on the command line (whatever argparse
    complained about first, e.g. a required --out that was typed --ouput) and for an
    invalid sub-command."""
    hints = []
    for token in argv:
        name = token.split("=", 1)[0]
        if not name.startswith("-") or name in flags or name in ("-", "--"):
            continue
        close = difflib.get_close_matches(name, [f for f in flags if f.startswith("--")],
                                          n=1, cutoff=0.6)
        hints.append(f"unknown flag {name}" + (f": did you mean {close[0]}?" if close else ""))
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found:
        choices = re.findall(r"'([^']*)'", found.group(2))
        close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.5)
        if close:
            hints.append(f"did you mean {close[0]!r}?")
    return "\n".join(hints)


def _add_run_options(p: argparse.ArgumentParser, default_profile: Optional[str]) -> None:
    p.add_argument("--profile", default=None,        # None: cli.main.chosen_profile decides
                   help=("domain profile: " + PROFILES) if default_profile is None else
                   f"profile (default {default_profile}): " + PROFILES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. --set tune.steps=50 (repeatable)")
    p.add_argument("--params", default=None, metavar="FILE",
                   help="parameters file, used instead of the packaged defaults (default: "
                        "./params.yaml when there is one, else the packaged defaults)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show Prefect's task-run lines and MLflow's set-up lines (hidden by "
                        "default), no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print the run's summary.json to stdout as JSON (the readable output "
                        "goes to stderr)")


def build_parser() -> GaniParser:
    """The whole `gani` command line."""
    parser = GaniParser(prog="gani", description="GANI StyleGAN2 inversion pipeline: align, "
                        "encode (e4e), tune (PTI; GANI with --set tune.method=gani), edit, evaluate, "
                        "log to MLflow.",
                        epilog=f"{EXAMPLES}\n\n{EXIT_CODES}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the whole pipeline on bundled demo data",
                          description="The whole pipeline on bundled demo data (profile demo: "
                          "the 32-px testbed shipped in the package).",
                          epilog=f"examples:\n  gani demo\n  gani demo --set tune.steps=60 "
                          f"--out outputs/demo60\n\n{EXIT_CODES}")
    _add_run_options(demo, "demo")
    demo.add_argument("--out", default="outputs/demo", help="output root (default outputs/demo)")

    inv = sub.add_parser("invert", help="invert every image under INPUT (folder or s3:// prefix)",
                         description="Invert every image under INPUT into --out; --profile "
                         "is required (which networks: a wrong guess would run the wrong "
                         "networks on real photos).", epilog=f"{EXAMPLES}\n\n{EXIT_CODES}")
    inv.add_argument("input", help="local folder or s3://bucket/prefix of images; hidden "
                     "files and other extensions are skipped and counted in summary.json; "
                     "symlinks to files and folders are followed alike, except loops, "
                     "repeats and links into the output (docs/pipeline.md#symlinks)")
    inv.add_argument("--out", required=True, help="output root: local folder or s3:// URI")
    inv.add_argument("--dataset", default=None, help="dataset name for MLflow (default: INPUT's name)")
    _add_run_options(inv, None)

    ck = sub.add_parser("checkpoints", help="list, verify or import pretrained checkpoints",
                        epilog="examples:\n  gani checkpoints list\n  gani checkpoints list "
                        "--json\n  gani checkpoints verify\n  gani checkpoints import "
                        "~/Downloads/e4e_ffhq_encode.pt\n\nexit status: 0 ok, 2 bad usage, "
                        "3 a corrupt checkpoint (verify, import)")
    ck_sub = ck.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "every known checkpoint: file, source, licence, state"),
                         ("verify", "hash every present checkpoint against its known sha256")):
        a = ck_sub.add_parser(action, help=text, description=text)
        a.add_argument("--data-dir", default="data")
        a.add_argument("--json", action="store_true", help="one JSON object per checkpoint, "
                       "in a list, for scripts")
    imp = ck_sub.add_parser("import", help="copy checkpoint files into data/checkpoints and verify")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--name", default=None, help="registry name, when the file name differs")
    imp.add_argument("--data-dir", default="data")
    return parser
