"""The entry points' arguments: ``key=value`` overrides anywhere on the line, as users type them; the
``paric`` console script and its commands; configs by packaged name; an install outside the checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_full_accepts_overrides_before_and_after_flags():
    """What pipelines/full.py and pipelines/families.py parse (``cli.run_stages``)."""
    from paric import cli

    args = cli.stage_parser(None).parse_args(["maps.K=8", "--force", "data,vlm", "train.epochs=3", "--quick",
                                              "--force", "sweep"])
    assert args.overrides == ["maps.K=8", "train.epochs=3"] and cli.forced(args) == ["data", "vlm", "sweep"]
    assert args.quick
    for name in ("run", "families"):
        assert "cli.run_stages(" in (REPO / "paric" / "commands" / f"{name}.py").read_text(), name


def test_the_shared_parser_takes_overrides_anywhere():
    """Every entry point builds on ``cli.parser``, so this is what precompute, sweep and train parse."""
    from paric import cli

    p = cli.parser(None)
    p.add_argument("--methods")
    args = p.parse_args(["--methods", "gals", "train.epochs=3", "--quick", "maps.K=8"])
    assert args.overrides == ["train.epochs=3", "maps.K=8"] and args.methods == "gals" and args.quick
    for name in ("precompute", "sweep", "train", "zeroshot", "config"):
        assert "cli.parser(" in (REPO / "paric" / "commands" / f"{name}.py").read_text(), name


def test_force_stage_names_come_from_the_cache_without_torch():
    """``--help`` lists the cache's stages (one list, no copy) without importing torch or Ray."""
    code = ("import sys; from paric import cli; from paric.stages.cache import STAGES; "
            "h = cli.parser('x').format_help(); "
            "assert all(s in h for s in STAGES); assert 'torch' not in sys.modules and 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "train", "sweep", "precompute", "zeroshot", "families"])
def test_a_config_typo_is_refused_before_torch_or_ray_is_imported(command):
    """Issue 29: a command loads the config's keys and types torch-free first and imports its stages
    (torch, Ray) only after that, so a typo is refused in well under a second, not after the imports."""
    code = (f"import sys; from paric.commands.{command} import main; rc = main(['trian.epochs=3']); "
            "assert rc == 2, rc; assert 'torch' not in sys.modules and 'ray' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "unknown key 'trian'" in out.stderr


def test_a_stage_is_named_from_the_one_list_that_force_offers(tmp_path):
    """Issue 29: ``STAGES`` (``--force``'s choices) and the stage declarations cannot drift apart: a
    ``Stage`` whose name is not in it is refused when declared, naming the list."""
    from paric.stages.cache import STAGES
    from paric.stages.runner import Stage

    assert Stage("vlm", tmp_path, ("vlm",)).name in STAGES
    assert Stage("sweep gals", tmp_path, ("sweep",)).name == "sweep gals"  # a kind and what it is for
    for name in ("vlm_v2", "sweeps gals"):
        with pytest.raises(ValueError, match="not in paric.stages.cache.STAGES"):
            Stage(name, tmp_path, ("vlm",))


def test_every_pipeline_script_is_its_paric_command():
    """``python pipelines/X.py`` (what ``ray job submit`` runs) and ``paric <command>`` are one ``main``."""
    from paric.commands import COMMANDS

    scripts = {"full": "run", "precompute": "precompute", "train": "train", "sweep": "sweep",
               "zeroshot": "zeroshot", "families": "families"}
    assert sorted(p.stem for p in (REPO / "pipelines").glob("*.py")) == sorted(scripts)
    for script, command in scripts.items():
        assert f"from {COMMANDS[command][0]} import main" in (REPO / "pipelines" / f"{script}.py").read_text()


def test_paric_help_lists_commands_configs_and_profiles(capsys):
    from paric import cli
    from paric.commands import COMMANDS

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert "default" in out and "quick" in out and "paper" in out
    assert cli.main(["nonesuch"]) == 2 and "unknown command 'nonesuch'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_config_by_packaged_name_and_profile_fallback(tmp_path, capsys):
    """``--config default`` is the packaged file; a config of one's own still finds the packaged profiles."""
    from paric import cli
    from paric.config import ConfigError

    assert cli.resolve_config("default") == cli.CONF_DIR / "default.yaml"
    assert (REPO / "conf" / "default.yaml").resolve() == (cli.CONF_DIR / "default.yaml").resolve()
    own = tmp_path / "mine.yaml"
    own.write_text("run:\n  name: mine\n")
    assert cli.resolve_config(str(own)) == own
    with pytest.raises(ConfigError, match="--config nonesuch: no such file, and not a packaged config"):
        cli.resolve_config("nonesuch")
    assert cli.main(["config", "--config", str(own), "--quick", f"run.output_dir={tmp_path / 'o'}"]) == 0
    out = capsys.readouterr().out
    assert "name: quick" in out and "K: 4" not in out.split("maps:")[0]  # the quick overlay applied over mine.yaml
    assert cli.main(["config", "--profile", "nonesuch"]) == 2
    assert "--profile nonesuch" in capsys.readouterr().err


def test_config_keys_cover_the_schema(capsys):
    from paric import cli

    assert cli.main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    for key in ("run.output_dir", "maps.K", "train.seeds", "sweep.seeds", "vlm.pretrain.epochs", "eval.faith_blur"):
        assert f"\n{key}  [" in "\n" + out, key


def test_seeds_flag():
    from paric import cli
    from paric.catalog import load_config
    from paric.config import ConfigError

    cfg = load_config(REPO / "conf" / "default.yaml")
    assert cli.seeds_from(cfg, None) == [cfg.run.seed] and cli.seeds_from(cfg, "all") == list(cfg.train.seeds)
    assert cli.seeds_from(cfg, "3,4") == [3, 4]
    with pytest.raises(ConfigError, match="--seeds x: expected 'all' or comma-separated integers"):
        cli.seeds_from(cfg, "x")


@pytest.mark.slow
def test_installed_outside_the_checkout(tmp_path, tiny_overrides):
    """``pip install <checkout>`` into a fresh venv (a real wheel build, no editable link) carries the
    configs, profiles and the tiny towers' model configs; its ``paric`` script runs from a directory with
    no checkout in sight. The venv is bare when paric goes in; the dependencies (torch, ray, ... minutes
    to download) then come from this environment through a ``.pth`` line, and every ``Requires-Dist`` of
    the installed metadata is checked against them, so a missing or mis-pinned dependency fails here."""
    import shutil
    import site
    import venv

    # built from a copy of the tracked files (what a clone has): a build leaves build/ in its source
    env_dir, src = tmp_path / "venv", tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for rel in filter(None, tracked.stdout.split("\0")):
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            dest.symlink_to(Path(REPO / rel).readlink())
        elif (REPO / rel).is_file():
            shutil.copy2(REPO / rel, dest)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # the wheel is built here (this environment has the build backend), then installed into the bare venv
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (whl,) = (tmp_path / "dist").glob("paric-*.whl")
    build = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(whl)],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert build.returncode == 0, build.stderr[-3000:]
    installed = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    for rel in ("conf/default.yaml", "conf/profiles/quick.yaml", "vlm/model_configs/paric-tiny-cnn16.json",
                "commands/run.py"):
        assert (Path(installed) / "paric" / rel).is_file(), rel
    # the dependencies: this environment's site-packages, behind the venv's own (paric resolves there)
    (Path(installed) / "_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    unmet = subprocess.run([str(py), "-c", (
        "from importlib.metadata import requires, version; from packaging.requirements import Requirement\n"
        "bad = []\n"
        "for r in map(Requirement, requires('paric')):\n"
        "    if r.marker and not r.marker.evaluate({'extra': ''}): continue\n"
        "    try: v = version(r.name)\n"
        "    except Exception: bad.append(str(r)); continue\n"
        "    bad += [] if r.specifier.contains(v, prereleases=True) else [f'{r} (have {v})']\n"
        "print(bad)")], capture_output=True, text=True, timeout=120)
    assert unmet.returncode == 0 and unmet.stdout.strip() == "[]", unmet.stdout + unmet.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = lambda *a: subprocess.run([str(env_dir / "bin" / "paric"), *a], cwd=work, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    where = subprocess.run([str(py), "-c", "import paric; print(paric.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert where.stdout.strip().startswith(installed), where.stdout + where.stderr
    shown = run("config", "--quick")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: quick" in shown.stdout and f"output_dir: {work / 'outputs' / 'quick'}" in shown.stdout
    # the whole pipeline from the installed copy: the quick profile at the tests' toy sizes, one seed. Its
    # VLM is built from the installed package's model config (a separate build of paric-tiny-cnn16, whose
    # config is checked above, cost a 4-s interpreter and was dropped in issue 31)
    quick = run("run", "--quick", "--no-progress", *tiny_overrides, "train.seeds=[0]", "train.compare=[vanilla,paric_mean]",
                "sweep.methods=[]", "train.epochs=2", f"run.output_dir={work / 'out'}")
    assert quick.returncode == 0, (quick.stdout + quick.stderr)[-3000:]
    assert (work / "out" / "report" / "report.md").is_file() and "pipeline finished" in quick.stdout
