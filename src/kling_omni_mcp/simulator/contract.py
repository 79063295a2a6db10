"""The vendor's Omni-Image contract as data: enums, limits, capability map, prices.

Written from ``shared/reference/kling-api.md`` on purpose, not imported from the client's own
rules: the simulator is the executable contract, so a mistake shared by the client and the
simulator would otherwise pass every test.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_MODEL",
    "DEFAULT_SERIES_AMOUNT",
    "ELEMENT_ID_MAX",
    "FIELDS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_RATIO",
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCES",
    "MIN_IMAGE_SIDE",
    "MODEL_NAMES",
    "MODEL_RESOLUTIONS",
    "MODEL_SERIES",
    "N_RANGE",
    "PAGE_NUM_RANGE",
    "PAGE_SIZE_RANGE",
    "RESOLUTIONS",
    "RESOLUTION_LONG_SIDE",
    "RESULT_TYPES",
    "SERIES_AMOUNT_RANGE",
    "units_per_image",
]

MODEL_NAMES: Final = ("kling-image-o1", "kling-v3-omni")
DEFAULT_MODEL: Final = "kling-image-o1"
RESOLUTIONS: Final = ("1k", "2k", "4k")
RESULT_TYPES: Final = ("single", "series")
ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "auto")

#: Every field the create body may carry. Anything else is refused: the vendor page lists no
#: other field (there is no ``negative_prompt``), and a silently ignored field is a client bug.
FIELDS: Final = frozenset(
    {
        "model_name",
        "prompt",
        "image_list",
        "element_list",
        "resolution",
        "result_type",
        "n",
        "series_amount",
        "aspect_ratio",
        "watermark_info",
        "callback_url",
        "external_task_id",
    }
)

MAX_PROMPT_CHARS: Final = 2500
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
MIN_IMAGE_SIDE: Final = 300
MAX_IMAGE_RATIO: Final = 2.5
MAX_REFERENCES: Final = 10
N_RANGE: Final = (1, 9)
SERIES_AMOUNT_RANGE: Final = (2, 9)
DEFAULT_SERIES_AMOUNT: Final = 4
#: Element ids are the vendor's ``long``: a signed 64-bit integer.
ELEMENT_ID_MAX: Final = 2**63 - 1

PAGE_NUM_RANGE: Final = (1, 1000)
PAGE_SIZE_RANGE: Final = (1, 500)

# Capability map: what each model accepts beyond the shared enums.
MODEL_RESOLUTIONS: Final[dict[str, tuple[str, ...]]] = {
    "kling-image-o1": ("1k", "2k"),
    "kling-v3-omni": ("1k", "2k", "4k"),
}
MODEL_SERIES: Final[dict[str, bool]] = {"kling-image-o1": False, "kling-v3-omni": True}

#: Long side of a result image, in pixels, per resolution (before the simulator's scale knob).
RESOLUTION_LONG_SIDE: Final[dict[str, int]] = {"1k": 1024, "2k": 2048, "4k": 4096}


def units_per_image(model_name: str, resolution: str) -> int:
    """Units one result image costs: 16 for kling-v3-omni at 4k, 8 otherwise."""
    if model_name == "kling-v3-omni" and resolution == "4k":
        return 16
    return 8
