"""What differs between MobileNet V1 and V2, in one table, exactly as TF-slim defines them
(`nets/mobilenet_v1.py`, `nets/mobilenet/mobilenet_v2.py`): the slim scope, the stem, the body's
block layout, the head. The builders read it, and so do the checkpoint loader (to say which width
a checkpoint is) and the export (to find a model's logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


def v1_width(channels: int, alpha: float) -> int:
    """slim's V1 depth(d) = max(int(d * alpha), min_depth=8): truncation, not rounding."""
    return max(int(channels * alpha), 8)


def make_divisible(value: float, divisor: int = 8) -> int:
    """slim's V2 _make_divisible: nearest multiple of `divisor` (at least `divisor`), never 10 % below `value`."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class Family:
    """One MobileNet generation as TF-slim builds it."""

    name: str  # "v1" or "v2", as the catalogue says
    scope: str  # slim's top-level variable scope
    stem_scope: str  # the first, full 3x3 stride-2 convolution
    stem_width: Callable[[float], int]  # its channels at width multiplier alpha
    # V1: (pointwise depth, depthwise stride) of the 13 separable layers Conv2d_1 .. Conv2d_13.
    # V2: (expansion t, channels c, repeats n, stride s of the first repeat) of the inverted-residual
    # blocks; t None is the model's expansion_factor; the first block never expands (slim: expand_input(1)).
    blocks: tuple
    dropout: float  # the head's default dropout rate (slim's dropout_keep_prob: 0.999 for V1, 0.8 for V2)
    head_scope: Optional[str] = None  # V2's last 1x1 convolution before the pool
    head_width: Optional[Callable[[float], int]] = None

    def block_scope(self, index: int) -> str:
        """V2: the scope of inverted-residual block `index` (0-based)."""
        return f"{self.scope}/expanded_conv" + (f"_{index}" if index else "")


V2_STEM_CHANNELS = 32
V2_HEAD_CHANNELS = 1280

V1 = Family(
    name="v1", scope="MobilenetV1", stem_scope="MobilenetV1/Conv2d_0", stem_width=lambda alpha: v1_width(32, alpha),
    blocks=((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)),
    dropout=1e-3,
)
V2 = Family(
    name="v2", scope="MobilenetV2", stem_scope="MobilenetV2/Conv",
    stem_width=lambda alpha: make_divisible(V2_STEM_CHANNELS * alpha),
    blocks=((1, 16, 1, 1), (None, 24, 2, 2), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
            (None, 160, 3, 2), (None, 320, 1, 1)),
    dropout=0.2,
    head_scope="MobilenetV2/Conv_1",
    # Conv_1 is not narrowed below 1280 (slim's finegrain_classification_mode), only widened.
    head_width=lambda alpha: make_divisible(V2_HEAD_CHANNELS * alpha) if alpha > 1.0 else V2_HEAD_CHANNELS,
)
FAMILIES = {family.name: family for family in (V1, V2)}


def family_of(layer_names) -> Optional[Family]:
    """The family whose slim scope the layer names start with, or None."""
    for name in layer_names:
        for family in FAMILIES.values():
            if name.startswith(family.scope):
                return family
    return None
