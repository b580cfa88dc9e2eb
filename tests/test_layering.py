"""Import rules from CONTRIBUTING.md ("Layering"): core is pure maths (no Ray, no timm)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_neither_ray_nor_timm():
    code = (
        "import sys, hgprompt_ray.core, hgprompt_ray.config, hgprompt_ray.errors\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'timm'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
