"""Import rules from CONTRIBUTING.md ("Layering"): core is pure maths (no Ray, no timm)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest


def test_core_imports_neither_ray_nor_timm():
    code = (
        "import sys, hgprompt_ray.core, hgprompt_ray.config, hgprompt_ray.errors\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'timm'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_trial_and_the_search_tasks_import_only_what_they_run():
    """A Tune trial's process unpickles ``tuning.trainable.hgprompt_trial``, and the statistics,
    screening and probe-data tasks' processes their modules: none may pull in the driver's side
    (Ray Train and Tune, timm and the data registry, the extraction), which a fresh Ray worker
    would import for nothing (the package ``__init__`` files resolve their names lazily)."""
    code = (
        "import sys\n"
        "import hgprompt_ray.tuning.trainable, hgprompt_ray.tuning.tasks, hgprompt_ray.tuning.probe_metric\n"
        "import hgprompt_ray.tuning, hgprompt_ray.models\n"
        "heavy = ('timm', 'torchvision', 'ray', 'pandas', 'optuna', 'hgprompt_ray.data', 'hgprompt_ray.workers.extract',"
        " 'hgprompt_ray.tuning.run', 'hgprompt_ray.tuning.search', 'hgprompt_ray.models.backbones')\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
        "from hgprompt_ray.tuning import run_search, SearchSpec\n"  # the names still resolve, on first use
        "from hgprompt_ray.models import load_backbone\n"
        "print(run_search.__module__, SearchSpec.__module__, load_backbone.__module__, 'timm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "",
        "hgprompt_ray.tuning.run hgprompt_ray.tuning.spec hgprompt_ray.models.backbones True",
    ]


@pytest.mark.parametrize("package", ["hgprompt_ray.models", "hgprompt_ray.tuning"])
def test_a_lazy_package_lists_each_export_once_everywhere(package):
    """A lazy package names its exports three times (``__all__``, the lazy table, the
    ``TYPE_CHECKING`` imports for type checkers): the three agree, and each name resolves to its
    submodule's object."""
    module = importlib.import_module(package)
    table = {name: sub for sub, names in module._EXPORTS.items() for name in names}
    assert sorted(module.__all__) == sorted(table)
    tree = ast.parse(Path(module.__file__).read_text())
    guarded = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    typed = {alias.name: node.module for block in guarded for node in block.body
             if isinstance(node, ast.ImportFrom) for alias in node.names}  # fmt: skip
    assert typed == {name: f"{package}.{sub}" for name, sub in table.items()}
    for name, sub in table.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"{package}.{sub}"), name)
    assert set(module.__all__) <= set(dir(module))
