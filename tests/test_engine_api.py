"""The engine's public names, and that importing its config stays free of torch."""

import subprocess
import sys

import pytest


def test_public_api_builds_the_paper_model():
    from diffbench.engine import build_model, load_preset

    model = build_model(load_preset("paper").model)
    assert sum(p.numel() for p in model.parameters()) == 22_874_922


def test_unknown_name_is_an_attribute_error():
    import diffbench.engine

    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        diffbench.engine.nonsense  # noqa: B018


def test_importing_the_config_does_not_import_torch():
    code = "import sys, diffbench.engine.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
