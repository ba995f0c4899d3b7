import os

import pytest
import torch

from instyle import functional


def _cpu_backends() -> list[str]:
    """Every backend that runs on CPU tensors here (triton only under TRITON_INTERPRET=1)."""
    functional._load_optional_backends()
    probe = torch.zeros(1, 1, 2, 2)
    names = []
    for name in functional.available_backends():
        try:
            functional.select_backend(name, probe)
        except ValueError:
            continue
        names.append(name)
    return names


CPU_BACKENDS = _cpu_backends()


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("INSTYLE_TEST_DEVICE", "cpu"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
