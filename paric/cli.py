"""What every ``pipelines/*.py`` entry point shares: the config arguments (file, profiles,
``key=value`` overrides, progress) and the log format, so the commands read and fail alike."""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from paric.config import Config, load_config, profile_overlays
from paric.stages.cache import write_invocation_config, write_resolved_config
from paric.stages.lock import OutputDirInUse, OutputLock


class _Parser(argparse.ArgumentParser):
    """``parse_args`` accepts ``key=value`` overrides anywhere on the line (``--force data k=v``),
    as users type them; plain argparse stops filling a ``nargs="*"`` positional at the first flag."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return self.parse_intermixed_args(args, namespace)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with --config, --profile, --quick, --no-progress and the overrides."""
    p = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/default.yaml", help="YAML config file")
    p.add_argument("--profile", action="append", default=[],
                   help="overlay profiles/<name>.yaml beside the config file (e.g. conf/profiles/quick.yaml)")
    p.add_argument("--quick", action="store_true", help="same as --profile quick")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    return p


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    """:func:`parser` and ``--force STAGE`` (repeatable or comma-separated), for the entry points that
    run every stage."""
    from paric.stages.cache import STAGES

    p = parser(doc)
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help=f"redo a stage even if cached (repeatable or comma-separated): {', '.join(STAGES)}")
    return p


def forced(args: argparse.Namespace) -> list[str]:
    return [s.strip() for f in args.force for s in f.split(",") if s.strip()]


def run_stages(doc: str | None, argv: list[str] | None, check: Callable[[Config], object],
               run: Callable[..., dict]) -> dict | None:
    """The shape of the stage-running entry points: parse (with ``--force``), load and ``check`` the
    config (a problem prints ``config error: …`` and returns None, before any stage), then ``run`` it
    holding ``run.output_dir``. Returns ``run``'s result."""
    from paric.stages.cache import set_forced

    args = stage_parser(doc).parse_args(argv)
    setup_logging()
    force = forced(args)
    try:
        cfg = config_from(args)
        check(cfg)
        set_forced(force)
    except ValueError as exc:  # ConfigError is a ValueError
        print(f"config error: {exc}", file=sys.stderr)
        return None
    with exclusive(cfg):  # one invocation per run.output_dir
        return run(cfg, force=force, progress=not args.no_progress)


def config_from(args: argparse.Namespace) -> Config:
    """The config the arguments name (raises ConfigError naming the file, profile or override)."""
    profiles = (["quick"] if args.quick else []) + list(args.profile)
    return load_config(args.config, args.overrides, overlays=profile_overlays(args.config, profiles))


def setup_logging() -> None:
    """Our ``[stage]`` lines at INFO; other libraries' chatter (open_clip, MLflow, Ray Data) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paric").setLevel(logging.INFO)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines; the [stage] lines say it


@contextmanager
def exclusive(cfg: Config) -> Iterator[None]:
    """Hold ``run.output_dir`` for this invocation (a second one exits at once, status 3, saying who
    holds it); record the config in ``invocations/`` at the start and as ``config.resolved.yaml`` once
    the invocation has succeeded."""
    lock = OutputLock(cfg.output_path())
    try:
        lock.acquire()
    except OutputDirInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    try:
        write_invocation_config(cfg)
        yield
        write_resolved_config(cfg)  # only after success: it describes the outputs beside it
    finally:
        lock.release()
