"""What the Omni-Image API accepts: the models, their options and every limit, written once.

``MODEL_CAPABILITIES`` is the source the rest of the project is built from: the wire models'
types, the MCP tool signatures, the tool descriptions, the request rules and the cost estimates.
Adding a model is one entry in the map (plus its tests).

Source: ``shared/reference/kling-api.md`` (vendor Omni-Image reference and capability map).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_MODEL",
    "DEFAULT_SERIES_AMOUNT",
    "MAX_IMAGE_BYTES",
    "MAX_REFERENCES",
    "MAX_RESULT_IMAGES",
    "MODEL_CAPABILITIES",
    "MODEL_NAMES",
    "N_RANGE",
    "PROMPT_MAX_CHARS",
    "RESOLUTIONS",
    "SERIES_AMOUNT_RANGE",
    "SERIES_AUTO_ESTIMATE",
    "AspectRatio",
    "ModelCapabilities",
    "ModelName",
    "Resolution",
    "ResultType",
    "describe_models",
]

PROMPT_MAX_CHARS = 2500
#: Reference images + elements together.
MAX_REFERENCES = 10
#: The most images one task can make (``n`` or ``series_amount``).
MAX_RESULT_IMAGES = 9
N_RANGE = (1, MAX_RESULT_IMAGES)
SERIES_AMOUNT_RANGE = (2, MAX_RESULT_IMAGES)
#: What the vendor uses when a series task gives no ``series_amount``.
DEFAULT_SERIES_AMOUNT = 4
#: ``series_amount="auto"`` lets the vendor choose; estimates count it as the maximum (9) so a
#: cost shown to a user is never lower than what may be charged.
SERIES_AUTO_ESTIMATE = MAX_RESULT_IMAGES
#: "at most 10 MB" per input image; read as MiB (assumption: the vendor does not say which).
MAX_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ModelCapabilities:
    """What one model accepts, per the vendor's capability map, and what it costs."""

    name: str
    label: str
    resolutions: tuple[str, ...]
    supports_series: bool
    #: False when ``aspect_ratio="auto"`` is refused for pure text-to-image (no images, no elements).
    auto_aspect_for_text_only: bool
    #: Units charged per generated image, by resolution.
    units_per_image: Mapping[str, int] = field(default_factory=dict)

    def units_for(self, resolution: str) -> int:
        """Units per image at ``resolution`` (raises ``KeyError`` for an unsupported one)."""
        return self.units_per_image[resolution]


MODEL_CAPABILITIES: Mapping[str, ModelCapabilities] = MappingProxyType(
    {
        "kling-image-o1": ModelCapabilities(
            name="kling-image-o1",
            label="Kling Image O1",
            # 4k is in the request enum but not in o1's capability map.
            resolutions=("1k", "2k"),
            supports_series=False,
            auto_aspect_for_text_only=True,
            units_per_image=MappingProxyType({"1k": 8, "2k": 8}),
        ),
        "kling-v3-omni": ModelCapabilities(
            name="kling-v3-omni",
            label="Kling V3 Omni",
            resolutions=("1k", "2k", "4k"),
            supports_series=True,
            auto_aspect_for_text_only=False,
            units_per_image=MappingProxyType({"1k": 8, "2k": 8, "4k": 16}),
        ),
    }
)

#: The models, in the map's order; the first is the default.
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CAPABILITIES)
DEFAULT_MODEL = MODEL_NAMES[0]
#: Every resolution some model accepts, in the order first seen.
RESOLUTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(res for caps in MODEL_CAPABILITIES.values() for res in caps.resolutions)
)
ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "auto")

# The types are built from the tuples above, so a new model or resolution needs no second edit.
# A static checker cannot evaluate that, so it sees plain ``str`` (pydantic and the MCP tool
# schemas see the exact enum at run time).
if TYPE_CHECKING:
    ModelName = str
    Resolution = str
    AspectRatio = str
else:
    ModelName = Literal[MODEL_NAMES]
    Resolution = Literal[RESOLUTIONS]
    AspectRatio = Literal[ASPECT_RATIOS]
ResultType = Literal["single", "series"]


def describe_models() -> str:
    """One short line per model for tool descriptions: price per image, series, aspect rule."""
    parts = []
    for caps in MODEL_CAPABILITIES.values():
        prices = "/".join(f"{res} {units}u" for res, units in caps.units_per_image.items())
        extras = ["series" if caps.supports_series else "single only"]
        if not caps.auto_aspect_for_text_only:
            extras.append("text-only needs an aspect_ratio")
        parts.append(f"{caps.name} ({prices} per image; {', '.join(extras)})")
    return "Models: " + "; ".join(parts) + "."
