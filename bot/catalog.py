"""What each Gemini image model accepts, and the aliases users type.

Facts from ../shared/research/gemini-api.md (sections 0, 1 and 5) and interactions-api.md
(section 6, the models as of late 2026). Unknown model ids pass through with the most permissive
Gemini 3 rules, so a new model works before we list it; a model Google has shut down is refused
with one sentence naming its replacement, before anything is sent or charged.
"""

from __future__ import annotations

from dataclasses import dataclass

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"
FLASH_LITE = "gemini-3.1-flash-lite-image"
FLASH_25 = "gemini-2.5-flash-image"
# Nano Banana 2.1 (October 2026) is reported by third parties only (research section 6.2): it is
# accepted and sent as typed, with the permissive rules of an unknown model; its sizes, ratios,
# input limit and price are not guessed here.
NANO_BANANA_21 = "gemini-nano-banana-2.1"
PASS_THROUGH = frozenset({NANO_BANANA_21})

ALIASES: dict[str, str] = {
    "flash": FLASH, "pro": PRO, "lite": FLASH_LITE,
    "nano-banana-2": FLASH, "nano-banana-pro": PRO, "nano-banana-2-lite": FLASH_LITE,
    "nano-banana-2.1": NANO_BANANA_21,
}

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


# The models offered (settings forms list these).
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
    # Nano Banana 2 Lite, GA 2026-06-30 (research interactions-api.md 6.1, from its model card):
    # 1K only, 65,536 input tokens, no context caching. Aspect ratios: the Gemini API card lists
    # these 10 (Vertex adds 1:4, 4:1, 1:8, 8:1, unverified on the Gemini API). The price is from
    # third parties (three agree; Google's pricing page was not read): $30 per million image
    # tokens x 1,120 = $0.0336 an image, input $0.25 per million.
    FLASH_LITE: ModelSpec(
        FLASH_LITE,
        "Nano Banana 2 Lite",
        _BASE_ASPECTS,
        ("1K",),
        65_536,
        True,
        {"1K": 1120},
        {"1K": 0.0336},
    ),
}


@dataclass(frozen=True)
class Retirement:
    spec: ModelSpec  # still needed to show and price the versions it made
    shut_down: str
    replacement: str  # an alias people can type


# Shut down by Google: calls answer 404. Sessions keep their versions; new turns are refused.
RETIRED: dict[str, Retirement] = {
    FLASH_25: Retirement(
        ModelSpec(FLASH_25, "Nano Banana", _BASE_ASPECTS, (), 32_768, False, {"1K": 1290},
                  {"1K": 0.039}),
        "2026-10-02", "flash"),
}


class SettingRejected(ValueError):
    """A model, aspect ratio or size the chosen model does not take. The message is for users."""


class ModelRetired(SettingRejected):
    """A model Google has shut down. `instead` is the advice, for use after a setting's name."""

    def __init__(self, model: str) -> None:
        gone = RETIRED[model]
        new = resolve_model(gone.replacement)
        self.instead = (f"names a model Google shut down on {gone.shut_down}; use "
                        f"{gone.replacement} ({label_for(new)}, {new}) instead")
        super().__init__(
            f"{gone.spec.label} ({model}) was shut down by Google on {gone.shut_down}; switch the "
            f"session to {gone.replacement} ({label_for(new)}, {new}).")


def resolve_model(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name.lower(), name)


def check_model(name: str) -> str:
    """The model id for a name someone typed. Ids we have no entry for still pass when they look
    like a Gemini image model (new ones appear faster than releases), so a typo is caught here
    rather than as a 404 after the turn was queued. A retired model raises ModelRetired."""
    model = resolve_model(name)
    check_served(model)
    if model in MODELS or model in PASS_THROUGH or (model.startswith("gemini-") and "image" in model):
        return model
    raise SettingRejected(
        f"I don't know the model '{name.strip()[:60]}'; use flash, pro, lite, or a Gemini image "
        f"model id such as {PRO}.")


def check_served(model: str) -> None:
    """Raise ModelRetired for a model Google no longer serves: before a call, not as its 404."""
    if model in RETIRED:
        raise ModelRetired(model)


def spec_for(model: str) -> ModelSpec:
    known = MODELS.get(model) or (RETIRED[model].spec if model in RETIRED else None)
    if known:
        return known
    return ModelSpec(
        model,
        "Nano Banana 2.1" if model == NANO_BANANA_21 else model,
        _BASE_ASPECTS + _EXTREME_ASPECTS,
        ("512", "1K", "2K", "4K"),
        65_536,
        True,
        # Priced as Nano Banana 2, whose prices are known: a budget errs high, not low.
        MODELS[FLASH].output_tokens,
        MODELS[FLASH].usd_per_output_image,
    )


def label_for(model: str) -> str:
    return spec_for(model).label


LARGEST_SIZE = "4K"
OFFLINE_ENGINE_LABEL = "The offline engine"


def renders_larger(model: str, image_size: str | None) -> bool:
    """Whether a 4K render of a version made at `image_size` makes something new: not when the
    version is already 4K, nor when the model cannot render 4K (it would be refused)."""
    return (normalise_size(image_size or "1K") != LARGEST_SIZE
            and LARGEST_SIZE in spec_for(model).image_sizes)


def answered_by(model: str, offline: bool) -> str:
    """Who gave an answer: the offline engine is not Gemini, so its words are not Gemini's."""
    return OFFLINE_ENGINE_LABEL if offline else label_for(model)


def normalise_size(size: str) -> str:
    """Accept what people type ('2k', '4K', '512px') and return the API's exact spelling."""
    s = size.strip().upper().removesuffix("PX")
    return s


def check_aspect(model: str, aspect: str | None) -> str | None:
    """The aspect ratio in the API's spelling. Every setting check also refuses a retired model:
    a session left on one hears so at its next turn or setting, before anything is sent."""
    check_served(model)
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
    check_served(model)
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
