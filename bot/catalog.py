"""What each Gemini image model accepts, and the aliases users type.

Facts from ../shared/research/gemini-api.md (sections 0, 1 and 5). Unknown model ids pass
through with the most permissive Gemini 3 rules, so a new model works before we list it.
"""

from __future__ import annotations

from dataclasses import dataclass

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"
FLASH_25 = "gemini-2.5-flash-image"

ALIASES: dict[str, str] = {"flash": FLASH, "pro": PRO, "nano-banana-2": FLASH, "nano-banana-pro": PRO}

_BASE_ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_EXTREME_ASPECTS = ("1:4", "4:1", "1:8", "8:1")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    aspect_ratios: tuple[str, ...]
    image_sizes: tuple[str, ...]  # empty: the model takes no imageSize (fixed 1K output)
    input_token_limit: int
    signed: bool  # Gemini 3 models sign their parts and validate them strictly
    # Output tokens per image by size, for the cost table (research §5).
    output_tokens: dict[str, int]
    usd_per_output_image: dict[str, float]


MODELS: dict[str, ModelSpec] = {
    FLASH: ModelSpec(
        FLASH,
        "Nano Banana 2",
        _BASE_ASPECTS + _EXTREME_ASPECTS,
        ("512", "1K", "2K", "4K"),
        131_072,
        True,
        {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
        {"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
    ),
    PRO: ModelSpec(
        PRO,
        "Nano Banana Pro",
        _BASE_ASPECTS,
        ("1K", "2K", "4K"),
        65_536,
        True,
        {"1K": 1120, "2K": 1120, "4K": 2000},
        {"1K": 0.134, "2K": 0.134, "4K": 0.24},
    ),
    FLASH_25: ModelSpec(
        FLASH_25,
        "Nano Banana",
        _BASE_ASPECTS,
        (),
        32_768,
        False,
        {"1K": 1290},
        {"1K": 0.039},
    ),
}


class SettingRejected(ValueError):
    """A model, aspect ratio or size the chosen model does not take. The message is for users."""


def resolve_model(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name.lower(), name)


def check_model(name: str) -> str:
    """The model id for a name someone typed. Ids we have no entry for still pass when they look
    like a Gemini image model (new ones appear faster than releases), so a typo is caught here
    rather than as a 404 after the turn was queued."""
    model = resolve_model(name)
    if model in MODELS or (model.startswith("gemini-") and "image" in model):
        return model
    raise SettingRejected(
        f"I don't know the model '{name.strip()[:60]}'; use flash, pro, or a Gemini image model id "
        f"such as {PRO}.")


def spec_for(model: str) -> ModelSpec:
    known = MODELS.get(model)
    if known:
        return known
    return ModelSpec(
        model,
        model,
        _BASE_ASPECTS + _EXTREME_ASPECTS,
        ("512", "1K", "2K", "4K"),
        65_536,
        True,
        MODELS[FLASH].output_tokens,
        MODELS[FLASH].usd_per_output_image,
    )


def label_for(model: str) -> str:
    return spec_for(model).label


def normalise_size(size: str) -> str:
    """Accept what people type ('2k', '4K', '512px') and return the API's exact spelling."""
    s = size.strip().upper().removesuffix("PX")
    return s


def check_aspect(model: str, aspect: str | None) -> str | None:
    if aspect is None:
        return None
    aspect = aspect.strip().replace("x", ":").replace("/", ":")
    spec = spec_for(model)
    if aspect not in spec.aspect_ratios:
        raise SettingRejected(
            f"{spec.label} ({spec.id}) does not take aspect ratio {aspect}; "
            f"choose one of {', '.join(spec.aspect_ratios)}."
        )
    return aspect


def check_size(model: str, size: str | None) -> str | None:
    if size is None:
        return None
    spec = spec_for(model)
    norm = normalise_size(size)
    if not spec.image_sizes:
        if norm == "1K":
            return None  # the model's only size; it must not be sent
        raise SettingRejected(f"{spec.label} ({spec.id}) makes 1K images only; it takes no size.")
    if norm not in spec.image_sizes:
        raise SettingRejected(
            f"{spec.label} ({spec.id}) does not take size {size}; "
            f"choose one of {', '.join(spec.image_sizes)}."
        )
    return norm
