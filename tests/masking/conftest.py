"""Shared tiny inputs for the masking tests: a real (tiny) U-Net and small images."""

from __future__ import annotations

import pytest
import torch

from smsweep.method.models import tiny_unet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the test machines have 2 shared cores


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_unet()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(123))  # (B, C, H, W)
