"""The package as installed: a regular (non-editable) wheel carries the config tree, the analysis
package and the task YAMLs, and its entrypoints work from any directory; ``--help`` lists exactly
the public presets of conf/.

The wheel is built offline from a copy of the sources (``pip wheel --no-deps --no-build-isolation
--no-index``, the setuptools of this environment), installed with ``pip install --target`` into a
temporary folder and run from another temporary folder with only that folder added to the path
(the dependencies come from this interpreter's environment)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CONF, ROOT, compose

SOURCES = ["pyproject.toml", "README.md", "less", "conf", "analysis"]  # what the build reads


def pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (an in-place build would leave build/ behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", "-w", str(tmp / "dist"), str(src),
        cwd=tmp)
    (whl,) = (tmp / "dist").glob("less-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(site folder holding the installed wheel, a working directory outside the repository, the
    environment that puts the site folder first on the path)."""
    tmp = tmp_path_factory.mktemp("installed")
    site = tmp / "site"
    pip("install", "--no-deps", "--no-index", "--no-cache-dir", "--target", str(site), str(wheel), cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "LESS_CACHE_DIR": str(tmp / "cache")}
    return site, work, env


def run_in(work: Path, env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_wheel_holds_the_config_tree_analysis_and_task_yamls(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = {f"less/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert "less/conf/config.yaml" in conf and "less/conf/experiment/_tiny.yaml" in conf
    assert conf <= names, sorted(conf - names)
    for package in ("less", "analysis"):  # every module and YAML of every (sub)package: none left out of pyproject
        files = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*")
                 if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
        assert files <= names, sorted(files - names)
    assert {"analysis/__main__.py", "less/tasks/less_synthetic_color.yaml", "less/evaluation/paper_bbh.yaml",
            "less/cli.py"} <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^less-run = less\.cli:main$", scripts, re.M), scripts
    assert re.search(r"^less-analysis = less\.cli:analysis$", scripts, re.M), scripts


def test_the_installed_package_works_from_another_directory(installed):
    site, work, env = installed
    code = ("import json, less, analysis, hydra; from less.paths import conf_dir\n"
            "with hydra.initialize_config_dir(config_dir=str(conf_dir()), version_base='1.3'):\n"
            "    cfg = hydra.compose(config_name='config', overrides=['experiment=main_table_tiny'])\n"
            "print(json.dumps({'less': less.__file__, 'analysis': analysis.__file__, 'conf': str(conf_dir()),"
            " 'name': cfg.name, 'model': cfg.model.name}))")
    got = json.loads(run_in(work, env, sys.executable, "-c", code).stdout)
    assert got == {"less": str(site / "less" / "__init__.py"), "analysis": str(site / "analysis" / "__init__.py"),
                   "conf": str(site / "less" / "conf"), "name": "main_table_tiny", "model": "tiny-llama"}
    assert "usage: python -m analysis" in run_in(work, env, sys.executable, "-m", "analysis", "--help").stdout
    assert "usage: python -m analysis" in run_in(work, env, str(site / "bin" / "less-analysis"), "--help").stdout
    assert "== Config groups" in run_in(work, env, str(site / "bin" / "less-run"), "--help").stdout


def test_the_installed_entrypoint_plans_a_run_and_a_sweep_in_the_working_directory(installed):
    site, work, env = installed
    out = run_in(work, env, str(site / "bin" / "less-run"), "plan=true", "logger=none").stdout
    assert "plan default:" in out and "prepare to run" in out
    (run_dir,) = (work / "outputs" / "default").iterdir()  # Hydra's output dir, relative to the working directory
    assert (run_dir / "plan.json").is_file() and (run_dir / "run.log").is_file()
    out = run_in(work, env, str(site / "bin" / "less-run"), "-m", "selection=random,less", "plan=true",
                 "logger=none").stdout
    assert out.count("plan default:") == 2 and "selection=random" in out and "selection=less" in out
    assert len(list((work / "multirun" / "default").glob("*/[01]/plan.json"))) == 2
    assert not (work / "cache").exists()  # LESS_CACHE_DIR: nothing is built by a plan


# -- python run.py --help --------------------------------------------------------------------------

def help_groups(text: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The groups section of the help (format described in conf/hydra/help/less.yaml):
    ({group: options as listed}, {group: its default, marked *})."""
    section = text.split("== Config groups", 1)[1].split("\n==", 1)[0].splitlines()[1:]
    groups: dict[str, list[str]] = {}
    group, more = "", False
    for line in section:
        m = re.match(r"(\w+): (.*)$", line)
        if m:
            group, rest = m.groups()
            groups[group] = []
        elif more and line.startswith(" "):
            rest = line.strip()
        else:
            more = False
            continue
        groups[group] += [o.strip() for o in rest.rstrip(",").split(",")]
        more = rest.endswith(",")
    defaults = {g: o.rstrip("*") for g, opts in groups.items() for o in opts if o.endswith("*")}
    return {g: [o.rstrip("*") for o in opts] for g, opts in groups.items()}, defaults


@pytest.fixture(scope="module")
def help_text() -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_help_lists_every_public_preset_and_no_private_one(help_text):
    groups, defaults = help_groups(help_text)
    public = {d.name: sorted(f.stem for f in d.glob("*.yaml") if not f.name.startswith("_"))
              for d in CONF.iterdir() if d.is_dir() and d.name != "hydra"}
    assert {g: sorted(o) for g, o in groups.items()} == public  # a preset added to conf/ goes into conf/hydra/help/less.yaml
    for g, opts in groups.items():
        assert len(opts) == len(set(opts)), (g, opts)
    private = [f.stem for f in CONF.rglob("_*.yaml")]
    assert "_tiny" in private and "_paper" in private
    for name in private:
        assert not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", help_text), f"private preset {name} in --help"
    choices = compose().hydra.runtime.choices
    assert defaults == {g: choices[g] for g in public if choices.get(g) is not None}


def test_help_explains_the_app_and_the_common_overrides(help_text):
    assert help_text.startswith("LESS harness")
    for needle in ("prepare -> warmup -> datastore -> select -> train -> eval", "stages=[", "selection.fraction=",
                   "cache_dir=", "$LESS_CACHE_DIR", "device=", "logger.mode=online", "plan=true", "-m selection=",
                   "-m experiment=", "hydra/launcher=", "--cfg job", "less-run", "less-analysis", "README.md",
                   "experiments/README.md"):
        assert needle in help_text, needle
