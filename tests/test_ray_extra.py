"""``--engine ray`` without Ray installed (the optional extra): one line that says how to get it.
Runs everywhere, Ray or not: a package named ray that fails to import stands in for a missing one."""

import os

from .test_cli import run_cli


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    (tmp_path / "in").mkdir()
    path = os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    result = run_cli("stylize", tmp_path / "in", "-o", tmp_path / "out", "--model", "starry_night", "--engine", "ray",
                     env={"PYTHONPATH": path})  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "instyle stylize: error: --engine ray needs Ray: pip install 'instyle[ray]'"
    assert not (tmp_path / "out").exists()
