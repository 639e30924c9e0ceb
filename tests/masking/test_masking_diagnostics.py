"""Diagnostics on a hand-made label map, checked against numbers computed by hand."""

from __future__ import annotations

import math

import torch

from smsweep.method.masking import PatchMask
from smsweep.method.masking.diagnostics import boundary_patches, mask_diagnostics


def _labels() -> torch.Tensor:
    """4x4 pixels, patches of 2 (a 2x2 grid):

    0 0 | 0 1      patch (0,0): {0}        no boundary
    0 0 | 1 1      patch (0,1): {0, 1}     boundary
    ----+----
    2 2 | 255 255  patch (1,0): {2}        no boundary
    2 2 | 255 1    patch (1,1): {1} + ignore, no boundary (ignore does not count)
    """
    return torch.tensor(
        [[[0, 0, 0, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 1]]], dtype=torch.long
    )


def test_boundary_patches():
    assert boundary_patches(_labels(), 2).tolist() == [[[False, True], [False, False]]]


def test_mask_diagnostics_by_hand():
    mask = PatchMask(torch.tensor([[[False, True], [True, False]]]), patch_size=2)
    result = mask_diagnostics(_labels(), mask)
    # masked patches: (0,1) boundary, (1,0) not -> 1/2; all patches: 1/4
    assert result["boundary_fraction"] == 0.5
    assert result["boundary_fraction_all"] == 0.25
    # labeled pixels: 13 (3 ignored): class 0: 5, class 1: 4, class 2: 4
    assert result["image_share/0"] == 5 / 13
    assert result["image_share/1"] == 4 / 13
    assert result["image_share/2"] == 4 / 13
    # masked pixels: patch (0,1) = {0, 1, 1, 1}, patch (1,0) = {2, 2, 2, 2}: 8 labeled
    assert result["mask_share/0"] == 1 / 8
    assert result["mask_share/1"] == 3 / 8
    assert result["mask_share/2"] == 4 / 8


def test_nothing_masked_gives_nan_fractions():
    mask = PatchMask(torch.zeros(1, 2, 2, dtype=torch.bool), patch_size=2)
    result = mask_diagnostics(_labels(), mask)
    assert math.isnan(result["boundary_fraction"]) and math.isnan(result["mask_share/0"])
    assert result["boundary_fraction_all"] == 0.25
