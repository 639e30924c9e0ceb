"""U-Nets from segmentation-models-pytorch, built without downloads, and the A2MIM masked U-Net.

Reconstruction models are `build_unet(encoder, classes=3, activation="sigmoid")`: the sigmoid
keeps the output in [0, 1], the range of the images, the SSIM constants and the fills. For
fine-tuning, build the same encoder with `classes=<number of classes>` and no activation (logits)
and load the pretrained encoder with `encoder_weights=<file>`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from torch import Tensor, nn

from smsweep.errors import SpecError

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# Encoders whose stages MaskedUnet can run one at a time (torchvision-style ResNets).
STAGED_ENCODERS = tuple(
    sorted(name for name, entry in SMP_ENCODERS.items() if entry["encoder"] is ResNetEncoder)
)


def build_unet(
    encoder: str,
    *,
    classes: int,
    encoder_weights: str | Path | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    activation: str | None = None,
    in_channels: int = 3,
) -> smp.Unet:
    """An smp U-Net. Never downloads: `encoder_weights` is None (random init) or a local file
    holding an encoder state dict (keys may carry an "encoder." prefix, e.g. a full U-Net state
    dict: only those keys are used). `decoder_channels` defaults to the first `encoder_depth` of
    smp's (256, 128, 64, 32, 16)."""
    if encoder not in SMP_ENCODERS and not encoder.startswith("tu-"):
        close = difflib.get_close_matches(encoder, list(SMP_ENCODERS), n=3)
        raise SpecError(
            f"unknown encoder {encoder!r} (did you mean one of {close}?); valid names: "
            f"segmentation_models_pytorch.encoders.get_encoder_names()"
        )
    if not isinstance(encoder_depth, int) or not 1 <= encoder_depth <= 5:
        raise SpecError(f"encoder_depth must be an integer in 1..5, got {encoder_depth!r}")
    if not isinstance(classes, int) or classes < 1:
        raise SpecError(f"classes must be a positive integer, got {classes!r}")
    channels = tuple(decoder_channels or DEFAULT_DECODER_CHANNELS[:encoder_depth])
    if len(channels) != encoder_depth:
        raise SpecError(
            f"decoder_channels needs one entry per encoder stage ({encoder_depth}), got {channels}"
        )
    unet = smp.Unet(
        encoder_name=encoder,
        encoder_depth=encoder_depth,
        encoder_weights=None,
        decoder_channels=channels,
        in_channels=in_channels,
        classes=classes,
        activation=activation,
    )
    drop_unused_stages(unet)
    if encoder_weights is not None:
        load_encoder_weights(unet, encoder_weights)
    return unet


def drop_unused_stages(unet: smp.Unet) -> None:
    """Delete the ResNet stages a shallow encoder never runs (smp keeps layer3/layer4 at depth
    3): their parameters get no gradient, which DistributedDataParallel refuses, and they waste
    optimizer state. `load_encoder_weights` ignores those stages in a full-depth weights file."""
    encoder = unet.encoder
    if isinstance(encoder, ResNetEncoder):
        for name in ("layer1", "layer2", "layer3", "layer4")[max(encoder._depth - 1, 0) :]:
            delattr(encoder, name)


def load_encoder_weights(unet: smp.Unet, path: str | Path) -> None:
    """Load a local encoder state dict into `unet.encoder`; SpecError names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"encoder weights file {str(path)!r} does not exist: smsweep never downloads weights; "
            f"pass the path of a local file saved with torch.save(model.encoder.state_dict(), ...)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise SpecError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__})")
    if any(key.startswith("encoder.") for key in state):
        state = {
            k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
        }
    dropped = {f"layer{i}" for i in range(1, 5)} - {
        k.split(".")[0] for k in unet.encoder.state_dict()
    }
    state = {k: v for k, v in state.items() if k.split(".")[0] not in dropped}
    try:
        unet.encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_lines = "\n".join(str(error).splitlines()[:4])
        raise SpecError(
            f"encoder weights in {str(path)!r} do not match this encoder "
            f"(same encoder name, depth and in_channels?):\n{first_lines}"
        ) from None


def tiny_unet(classes: int = 3, activation: str | None = "sigmoid") -> smp.Unet:
    """A small, fast reconstruction U-Net for tests and smoke runs (resnet18, 3 stages)."""
    return build_unet(
        "resnet18",
        classes=classes,
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
        activation=activation,
    )


class MaskedUnet(nn.Module):
    """An smp U-Net with A2MIM's learnable mask token added at encoder stage `mask_stage`.

    forward(x, pixel_mask): x (B, C, H, W) (already filled at the input, e.g. with the image mean),
    pixel_mask (B, 1, H, W) bool or None. The output z of stage s becomes z + token * D(mask),
    D = max-pool by the stage's stride, token (1, C_s, 1, 1) initialised at 0 (A2MIM eq. 2).
    Stage 0 is the input (any encoder). Stages 1..depth run the encoder one stage at a time,
    which is supported for the ResNet family (`STAGED_ENCODERS`). The patch size must be a
    multiple of the stage's stride (2**s for ResNets) so that patches map onto whole feature
    cells: `check_patch_size` validates it (and the constructor, for `patch_sizes`).
    With mask_stage=None it is the plain U-Net and the mask is ignored.
    """

    takes_pixel_mask = True  # read by smsweep.method.masking.scorer.reconstruct

    def __init__(
        self, unet: smp.Unet, mask_stage: int | None = None, patch_sizes: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.unet = unet
        self.mask_stage = mask_stage
        self.token: nn.Parameter | None = None
        if mask_stage is not None:
            encoder = unet.encoder
            depth = encoder._depth
            if not isinstance(mask_stage, int) or not 0 <= mask_stage <= depth:
                raise SpecError(
                    f"mask_stage must be an integer in 0..{depth} (0 = input, {depth} = encoder "
                    f"depth), got {mask_stage!r}"
                )
            if mask_stage > 0 and not isinstance(encoder, ResNetEncoder):
                raise SpecError(
                    f"a mask token inside the encoder (mask_stage >= 1) needs an encoder whose "
                    f"stages can run one at a time; supported: {list(STAGED_ENCODERS)} (got "
                    f"{type(encoder).__name__}); or use mask_stage 0 (the input)"
                )
            self.token = nn.Parameter(torch.zeros(1, encoder.out_channels[mask_stage], 1, 1))
        for patch_size in patch_sizes:
            self.check_patch_size(patch_size)

    @property
    def encoder(self) -> nn.Module:
        """The U-Net's encoder (saliency reads its deepest feature map)."""
        return self.unet.encoder

    @property
    def stride(self) -> int:
        """Downsampling factor of the mask stage's output (1 at the input or without a stage)."""
        if self.mask_stage is None:
            return 1
        return min(2**self.mask_stage, self.unet.encoder._output_stride)

    def check_patch_size(self, patch_size: int) -> None:
        """SpecError unless `patch_size` is a multiple of the mask stage's stride."""
        if patch_size % self.stride:
            raise SpecError(
                f"patch_size={patch_size} is not a multiple of the stride {self.stride} of encoder "
                f"stage {self.mask_stage}, where the mask token is added: use a patch size that is "
                f"a multiple of {self.stride}, or an earlier mask_stage"
            )

    def forward(self, x: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        if self.token is None or pixel_mask is None:
            return self.unet(x)
        if self.mask_stage == 0:
            return self.unet(self._add_token(x, pixel_mask))
        self.unet.check_input_shape(x)
        features = [x]
        for index, stage in enumerate(self._stages(), start=1):
            x = stage(x)
            if index == self.mask_stage:
                x = self._add_token(x, pixel_mask)
            features.append(x)
        return self.unet.segmentation_head(self.unet.decoder(features))

    def _add_token(self, features: Tensor, pixel_mask: Tensor) -> Tensor:
        cells = F.max_pool2d(pixel_mask.to(features.dtype), self.stride)  # (B, 1, H/s, W/s)
        return features + self.token * cells

    def _stages(self) -> list[Callable[[Tensor], Tensor]]:
        """smp ResNetEncoder.forward, split at its feature outputs (stages 1..depth)."""
        encoder = self.unet.encoder
        stages = [
            lambda t: encoder.relu(encoder.bn1(encoder.conv1(t))),
            lambda t: encoder.layer1(encoder.maxpool(t)),
            lambda t: encoder.layer2(t),
            lambda t: encoder.layer3(t),
            lambda t: encoder.layer4(t),
        ]
        return stages[: encoder._depth]  # deeper stages were deleted by drop_unused_stages
