"""Masked Representation Modeling (MRM, papers/mrm_masked_representation_modeling.md): masking
and reconstruction in the encoder's latent space, as an auxiliary task of fine-tuning.

During fine-tuning the `Rebuilder` masks a share of the positions of one encoder stage's feature
map (a learnable token takes their place), rebuilds them from the visible ones with a few
Transformer blocks, and the reconstruction error on the masked positions, times `mrm.weight`, is
added to the segmentation loss. The segmentation path itself is untouched, and the Rebuilder is
only used in training: `WithRebuilder.segmentation_model` is the plain U-Net that is validated
and exported (no extra parameter at inference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Rebuilder(nn.Module):
    """Rebuilds the masked positions of a (B, C, h, w) feature map from its visible ones:
    1x1 projection to `dim`, mask token, a depthwise 3x3 convolution for position, `blocks`
    Transformer blocks over the h*w positions, 1x1 projection back to C."""

    def __init__(self, channels: int, ratio: float, dim: int = 128, blocks: int = 1) -> None:
        super().__init__()
        self.ratio = ratio
        self.project_in = nn.Conv2d(channels, dim, 1)
        self.token = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.position = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        heads = 4 if dim % 4 == 0 else 1
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.project_out = nn.Conv2d(dim, channels, 1)
        nn.init.normal_(self.token, std=0.02)

    def mask(self, features: Tensor) -> Tensor:
        """(B, 1, h, w) bool, True where a position is masked: `ratio` of each image's
        positions, at least one, drawn from torch's generator."""
        batch, _, height, width = features.shape
        positions = height * width
        masked = max(1, round(self.ratio * positions))
        order = torch.rand(batch, positions, device=features.device).argsort(dim=1)
        chosen = torch.zeros(batch, positions, dtype=torch.bool, device=features.device)
        chosen.scatter_(1, order[:, :masked], True)
        return chosen.view(batch, 1, height, width)

    def forward(self, features: Tensor, masked: Tensor) -> Tensor:
        tokens = self.project_in(features)
        tokens = torch.where(masked, self.token.to(tokens.dtype), tokens)
        tokens = tokens + self.position(tokens)
        batch, dim, height, width = tokens.shape
        sequence = self.blocks(tokens.flatten(2).transpose(1, 2))
        rebuilt = sequence.transpose(1, 2).reshape(batch, dim, height, width)
        return self.project_out(rebuilt)


def reconstruction_loss(rebuilt: Tensor, features: Tensor, masked: Tensor) -> Tensor:
    """Mean squared error on the masked positions, against the features normalised over their
    channels at each position (the target carries no gradient: the encoder is not pulled
    towards features that are easy to rebuild)."""
    target = features.detach().float()
    target = (target - target.mean(dim=1, keepdim=True)) / (target.std(dim=1, keepdim=True) + 1e-6)
    error = (rebuilt.float() - target).pow(2).mean(dim=1, keepdim=True)  # (B, 1, h, w)
    return error[masked].mean()


class WithRebuilder(nn.Module):
    """An smp U-Net with a Rebuilder on encoder stage `stage`, for fine-tuning: in training,
    `forward` returns (logits, weight x reconstruction loss); in evaluation, the logits alone."""

    def __init__(
        self, unet: nn.Module, stage: int, ratio: float, weight: float, dim: int, blocks: int
    ) -> None:
        super().__init__()
        self.unet, self.stage, self.weight = unet, stage, weight
        channels = unet.encoder.out_channels[stage]
        self.rebuilder = Rebuilder(channels, ratio, dim=min(dim, channels), blocks=blocks)

    @property
    def segmentation_model(self) -> nn.Module:
        return self.unet

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if not self.training:
            return self.unet(images)
        features = self.unet.encoder(images)
        logits = self.unet.segmentation_head(self.unet.decoder(features))
        latent = features[self.stage]
        masked = self.rebuilder.mask(latent)
        loss = reconstruction_loss(self.rebuilder(latent, masked), latent, masked)
        return logits, self.weight * loss


def with_rebuilder(unet: nn.Module, settings) -> nn.Module:
    """`unet` wrapped for MRM when `settings.enabled` (the spec's `mrm` section), else itself."""
    if not settings.enabled:
        return unet
    stage = settings.stage if settings.stage is not None else len(unet.encoder.out_channels) - 1
    return WithRebuilder(
        unet, stage, settings.ratio, settings.weight, settings.dim, settings.blocks
    )


def segmentation_part(model: nn.Module) -> nn.Module:
    """The model a trial validates and exports: the U-Net without its Rebuilder."""
    return model.segmentation_model if isinstance(model, WithRebuilder) else model
