"""What every command shares (``paric <command>`` and the ``pipelines/*.py`` scripts that call the same
code): the config arguments (a file or a packaged config's name, profiles, ``key=value`` overrides,
``--force``, progress) and the log format, so the commands read and fail alike."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Callable

from paric.config import Config, ConfigError, profile_overlays
from paric.config import load_config as load_unchecked
from paric.stages.cache import STAGES
from paric.stages.lock import exclusive


class _Parser(argparse.ArgumentParser):
    """``parse_args`` accepts ``key=value`` overrides anywhere on the line (``--force data k=v``),
    as users type them; plain argparse stops filling a ``nargs="*"`` positional at the first flag."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return self.parse_intermixed_args(args, namespace)


#: the configs and profiles that ship inside the package (``conf/`` in a checkout links here)
CONF_DIR = Path(__file__).resolve().parent / "conf"


def packaged_configs() -> list[str]:
    """Names ``--config`` takes besides a path (``default``, ``waterbirds95`` …)."""
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def packaged_profiles() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "profiles").glob("*.yaml"))


def resolve_config(name: str) -> Path:
    """``--config``: an existing file, or the name of a packaged config (``default`` → paric/conf/default.yaml)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    packaged = CONF_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise ConfigError(f"--config {name}: no such file, and not a packaged config "
                      f"(packaged: {', '.join(packaged_configs())})")


def parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """The flags every command takes: --config, --profile, --quick, --force, --no-progress and the overrides."""
    p = _Parser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=f"packaged configs: {', '.join(packaged_configs())}\n"
                       f"profiles: {', '.join(packaged_profiles())}\n"
                       "every config key: paric config --keys")
    p.add_argument("--config", default="default",
                   help="YAML config file, or a packaged config's name (default: default)")
    p.add_argument("--profile", action="append", default=[],
                   help="overlay profiles/<name>.yaml (beside the config file, else the packaged one)")
    p.add_argument("--quick", action="store_true", help="same as --profile quick")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help=f"redo a stage even if cached (repeatable or comma-separated): {', '.join(STAGES)}")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    return p


def selection_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--methods`` and ``--seeds``, for the commands that train a chosen set of runs."""
    p.add_argument("--methods", default=None,
                   help="comma-separated methods, or 'compare' (train.compare); the default depends on the command")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, or 'all' (train.seeds)")
    return p


def stage_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """Kept for callers of the earlier name: every parser now takes ``--force``."""
    return parser(doc, prog)


def forced(args: argparse.Namespace) -> list[str]:
    return [s.strip() for f in args.force for s in f.split(",") if s.strip()]


def seeds_from(cfg: Config, arg: str | None) -> list[int]:
    """``--seeds``: ``all`` (train.seeds), comma-separated integers, or None (run.seed)."""
    if arg is None:
        return [cfg.run.seed]
    if arg == "all":
        return list(cfg.train.seeds)
    try:
        return [int(s) for s in arg.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {arg}: expected 'all' or comma-separated integers") from None


def lazy(target: str) -> Callable:
    """``"module:function"`` as a callable that imports the module when first called.

    Why: a command's stages import torch and Ray (seconds); naming them lazily lets the command refuse a
    bad flag or config key before paying for that.
    """
    module, _, name = target.partition(":")

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def run_stages(doc: str | None, argv: list[str] | None, check: Callable[[Config], object],
               run: Callable[..., dict], prog: str | None = None) -> dict | None:
    """The shape of the stage-running entry points: parse (with ``--force``), load and ``check`` the
    config (a problem prints ``config error: …`` and returns None, before any stage), then ``run`` it
    holding ``run.output_dir``. Returns ``run``'s result."""
    from paric.stages.cache import check_forced

    args = parser(doc, prog).parse_args(argv)
    setup_logging()
    force = forced(args)
    try:
        cfg = config_from(args)
        check(cfg)
        check_forced(force)
    except ValueError as exc:  # ConfigError is a ValueError
        print(f"config error: {exc}", file=sys.stderr)
        return None
    with exclusive(cfg):  # one invocation per run.output_dir
        return run(cfg, force=force, progress=not args.no_progress)


def config_from(args: argparse.Namespace) -> Config:
    """The config the arguments name (raises ConfigError naming the file, profile or override)."""
    profiles = (["quick"] if args.quick else []) + list(args.profile)
    path = resolve_config(args.config)
    overlays = profile_overlays(path, profiles, CONF_DIR / "profiles")
    with warnings.catch_warnings():  # an old key's deprecation is shown (Python hides DeprecationWarnings)
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"paric\.config")
        load_unchecked(path, args.overrides, overlays=overlays)  # keys and types, torch-free: a typo fails fast
        from paric.catalog import load_config  # then names against the registries (torch)

        return load_config(path, args.overrides, overlays=overlays)


def setup_logging() -> None:
    """Our ``[stage]`` lines at INFO; other libraries' chatter (open_clip, MLflow, Ray Data) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paric").setLevel(logging.INFO)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines; the [stage] lines say it


def main(argv: list[str] | None = None) -> int:
    """``paric <command> [flags] [key=value ...]``: one console script for every entry point."""
    import importlib

    from paric import __version__
    from paric.commands import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()]
        print("usage: paric <command> [--config NAME|FILE] [--profile NAME] [--quick] [--force STAGE]\n"
              "                       [--no-progress] [key=value ...]\n\n"
              "Language-guided attention regularisation (GALS, PARIC and their relatives) on Ray.\n\n"
              "commands:\n" + "\n".join(lines) + "\n\n"
              f"packaged configs: {', '.join(packaged_configs())}\n"
              f"profiles: {', '.join(packaged_profiles())}\n"
              "every config key: paric config --keys;  a command's flags: paric <command> --help")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"paric {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"paric: unknown command '{name}' (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "data":  # its own sub-commands (check)
        return module.main(rest)
    return module.main(rest, prog=f"paric {name}")


if __name__ == "__main__":
    sys.exit(main())
