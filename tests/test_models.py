"""U-Net building without downloads, local encoder weights, and the A2MIM MaskedUnet."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from smsweep.errors import SpecError
from smsweep.method.models import STAGED_ENCODERS, MaskedUnet, build_unet, tiny_unet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return tiny_unet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _mask(size: int = 32, patch: int = 8) -> torch.Tensor:
    grid = torch.rand(2, size // patch, size // patch, generator=torch.Generator().manual_seed(1))
    grid = grid > 0.5
    return grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1)


def test_reconstruction_unet_outputs_rgb_in_unit_range(unet, images):
    out = unet(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_encoder_weights_load_from_a_local_file(unet, tmp_path):
    encoder_file, unet_file = tmp_path / "encoder.pt", tmp_path / "unet.pt"
    torch.save(unet.encoder.state_dict(), encoder_file)
    torch.save(unet.state_dict(), unet_file)  # a whole U-Net: its "encoder." keys are used
    for path in (encoder_file, unet_file):
        segmenter = build_unet(
            "resnet18", classes=5, encoder_depth=3, decoder_channels=(8, 8, 8), encoder_weights=path
        )
        for key, value in unet.encoder.state_dict().items():
            assert torch.equal(segmenter.encoder.state_dict()[key], value)


def test_missing_or_mismatched_weights_name_the_file(unet, tmp_path):
    with pytest.raises(SpecError, match=r"no-such\.pt.*never downloads"):
        build_unet("resnet18", classes=2, encoder_weights=tmp_path / "no-such.pt")
    state = unet.encoder.state_dict()
    state.pop("conv1.weight")
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(SpecError, match=r"broken\.pt.*do not match"):
        build_unet("resnet18", classes=2, encoder_depth=3, encoder_weights=broken)


def test_bad_build_arguments_are_spec_errors():
    with pytest.raises(SpecError, match="resnet18"):
        build_unet("resnet-18", classes=2)
    with pytest.raises(SpecError, match="one entry per encoder stage"):
        build_unet("resnet18", classes=2, encoder_depth=3, decoder_channels=(8, 8))


def test_masked_unet_without_a_mask_is_the_unet(unet, images):
    masked = MaskedUnet(unet, mask_stage=2).eval()
    torch.nn.init.normal_(masked.token)
    expected = unet(images)
    torch.testing.assert_close(masked(images), expected)
    # the stage-by-stage encoder reproduces smp's forward: an all-False mask changes nothing
    torch.testing.assert_close(
        masked(images, torch.zeros(2, 1, 32, 32, dtype=torch.bool)), expected
    )
    assert not torch.allclose(masked(images, _mask()), expected)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_mask_token_gets_gradients(unet, images, stage):
    masked = MaskedUnet(copy.deepcopy(unet), mask_stage=stage, patch_sizes=[8])
    masked(images, _mask()).sum().backward()
    assert masked.token.grad is not None and masked.token.grad.abs().sum() > 0
    assert pickle.loads(pickle.dumps(masked)).mask_stage == stage


@pytest.mark.parametrize(("stage", "patch_size"), [(2, 6), (3, 4), (1, 3)])
def test_patch_size_must_be_a_multiple_of_the_stage_stride(unet, stage, patch_size):
    with pytest.raises(SpecError, match=f"multiple of {2**stage}"):
        MaskedUnet(unet, mask_stage=stage, patch_sizes=[patch_size])
    MaskedUnet(unet, mask_stage=stage, patch_sizes=[2**stage * 2])


def test_mask_stage_range_and_supported_encoders(unet):
    with pytest.raises(SpecError, match=r"0\.\.3"):
        MaskedUnet(unet, mask_stage=4)
    other = build_unet("mobilenet_v2", classes=3, encoder_depth=3, decoder_channels=(16, 8, 8))
    with pytest.raises(SpecError, match="resnet34"):
        MaskedUnet(other, mask_stage=1)
    MaskedUnet(other, mask_stage=0)  # the input stage works with any encoder
    assert "resnet18" in STAGED_ENCODERS and "resnet50" in STAGED_ENCODERS


def test_shallow_encoders_keep_no_unused_stages(tmp_path):
    """DDP refuses parameters without gradients; a full-depth weights file still loads."""
    full = build_unet("resnet18", classes=3)
    torch.save(full.encoder.state_dict(), tmp_path / "full.pt")
    shallow = build_unet(
        "resnet18",
        classes=3,
        encoder_depth=3,
        decoder_channels=(8, 8, 8),
        encoder_weights=tmp_path / "full.pt",
    )
    shallow(torch.rand(1, 3, 32, 32)).mean().backward()
    assert [n for n, p in shallow.named_parameters() if p.grad is None] == []
    assert torch.equal(shallow.encoder.layer2[0].conv1.weight, full.encoder.layer2[0].conv1.weight)
