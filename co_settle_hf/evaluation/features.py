"""Dense per-frame features for the label-propagation benchmarks.

An *encoder* here is any object with ``image_mean``, ``image_std`` (3 floats each),
``patch_size`` (int) and ``__call__(pixel_values (B, 3, H, W)) -> (B, h, w, D)``. Both the
Co-Settle model and a bare-backbone wrapper provide this, so every benchmark scores the
two through exactly the same code path.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence

import torch
import torch.nn.functional as F


class DenseEncoder(Protocol):
    """What the evaluation code needs from a model: normalisation constants and a patch grid."""

    image_mean: Sequence[float]
    image_std: Sequence[float]
    patch_size: int

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


def _encoder_device(encoder: Any) -> torch.device:
    """The device of the encoder's parameters (CPU for parameter-free encoders)."""
    if isinstance(encoder, torch.nn.Module):
        for tensor in encoder.parameters():
            return tensor.device
    device = getattr(encoder, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


def _encoder_dtype(encoder: Any) -> torch.dtype:
    """Feed the encoder the floating dtype of its weights (float32 if it has none)."""
    if isinstance(encoder, torch.nn.Module):
        for tensor in encoder.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def extract_video_features(
    encoder: DenseEncoder,
    frames: torch.Tensor,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    normalise: bool = True,
) -> torch.Tensor:
    """Encode a video's frames into L2-normalised patch features (raw ones with ``normalise=False``).

    Args:
        encoder: see the module docstring.
        frames: uint8 tensor (T, H, W, 3).
        size: (height, width) to resize every frame to (bilinear, antialiased) before
            encoding; ``None`` keeps the frames' size.
        batch_size: frames per forward pass (memory vs speed).

    Returns:
        float32 tensor (T, h, w, D) on the encoder's device (so propagation runs there
        too), unit norm over D, so that dot products are cosine similarities as label
        propagation expects.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (T, H, W, 3) tensor, got {shape}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with positive entries, got {size}")

    def batches() -> Iterable[torch.Tensor]:
        for begin in range(0, frames.shape[0], batch_size):
            batch = frames[begin : begin + batch_size].permute(0, 3, 1, 2).float() / 255.0
            if size is not None and tuple(batch.shape[-2:]) != tuple(size):
                batch = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
            yield batch

    # Concatenating outside inference mode gives an ordinary tensor callers may modify.
    return torch.cat([F.normalize(feats, dim=-1) if normalise else feats for feats in encode_images(encoder, batches())])


def encode_images(encoder: DenseEncoder, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Raw float32 features (b, h, w, D) of each batch of [0, 1] RGB images (b, 3, H, W).

    The one encoding loop of the evaluation code: normalisation with the encoder's mean/std,
    its device and dtype, inference mode, and a check of what the encoder returns.
    """
    device, dtype = _encoder_device(encoder), _encoder_dtype(encoder)
    mean = torch.tensor(encoder.image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            batch = ((batch.to(device) - mean) / std).to(dtype)
            feats = encoder(batch)
            feats = getattr(feats, "features", feats)  # an adapter's output carries (B, h, w, D) as .features
            if feats.ndim != 4 or feats.shape[0] != batch.shape[0]:
                raise ValueError(f"encoder must return (B, h, w, D), got {tuple(feats.shape)} for B = {batch.shape[0]}")
            outputs.append(feats.float())
    return outputs


def project_backbone_tokens(encoder: Any, tokens: torch.Tensor) -> torch.Tensor:
    """An adapter's float32 features from its frozen backbone's raw ``tokens`` (..., D): only the
    projection runs, so a backbone pass can serve the base and every adapter on it."""
    with torch.inference_mode():
        return encoder.project(tokens).float()


def fit_to_patches(size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Round (height, width) down to multiples of ``patch_size`` (at least one patch each).

    Encoding at such a size makes the patch grid tile the image exactly, so labels
    resized to the grid stay aligned with the pixels each patch sees.
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    return tuple(max(patch_size, s // patch_size * patch_size) for s in size)  # type: ignore[return-value]
