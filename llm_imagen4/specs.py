"""The four Imagen 4 models: what each one takes, and the request body built
from a prompt and its options. Pure: no I/O, nothing sent.

Each option is declared once, here, as a field of the model's ``Options``:
its name, type, range, choices, help and command-line flags. llm reads the
fields for ``-o name value`` and ``llm models --options``; the ``llm imagen4``
commands build their flags from the same fields."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import llm
from pydantic import Field

SEED_MAX = 2**32 - 1
# Each model's documented output size by aspect ratio.
SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1408, 768),
    "9:16": (768, 1408),
    "4:3": (1280, 896),
    "3:4": (896, 1280),
}
AspectRatio = Literal["1:1", "16:9", "9:16", "4:3", "3:4"]
PersonGeneration = Literal["dont_allow", "allow_adult"]
SafetySetting = Literal[
    "block_low_and_above", "block_medium_and_above", "block_only_high"
]
DEFAULT_ATTEMPTS = 4
# Seconds to wait for the whole answer of the API, retries included.
DEFAULT_TIMEOUT = 300.0
TIMEOUT_MAX = 3600.0


def option(
    description: str, *flags: str, across: str | None = None, **constraints: Any
) -> Any:
    """A model option: ``flags`` are its command-line spellings, where they
    are not simply ``--name-with-hyphens``; ``across`` describes it for
    every model at once, where the models differ."""
    extra: dict[str, Any] = {"flags": list(flags)} if flags else {}
    if across:
        extra["across"] = across
    return Field(
        None, description=description, json_schema_extra=extra or None, **constraints
    )


INLINE = (
    "Ask for each image inside the answer instead of by URL, which saves a round trip"
)


class Imagen4Options(llm.Options):
    """The options every model takes. Those in ``RUN_OPTIONS`` say how to run
    a generation and are never part of the request."""

    aspect_ratio: AspectRatio | None = option(
        "1:1 (default), 16:9, 9:16, 4:3 or 3:4", "-r", "--aspect-ratio"
    )
    num_images: int | None = option(
        "How many images, 1 to 4 (default 1)", "-n", "--num-images", ge=1, le=4
    )
    seed: int | None = option(
        "Seed, 0 to 4294967295; drawn at random when not given",
        across="Seed, 0 (imagen4: 1) to 4294967295; drawn at random when not given",
        ge=0,
        le=SEED_MAX,
    )
    enhance_prompt: bool | None = option(
        "Let the API rewrite the prompt (default true)",
        "--enhance-prompt/--no-enhance-prompt",
    )
    person_generation: PersonGeneration | None = option(
        "dont_allow or allow_adult (default)"
    )
    safety_setting: SafetySetting | None = option(
        "block_low_and_above, block_medium_and_above (default) or block_only_high"
    )
    add_watermark: bool | None = option(
        "Add an invisible watermark (default false)", "--watermark/--no-watermark"
    )
    inline: bool | None = option(
        f"{INLINE} (default true)",
        "--inline/--no-inline",
        across=f"{INLINE} (default true, false on imagen4)",
    )
    output: str | None = option(
        "Folder to save into (created if missing), or a file name for one "
        "image. Default: the current folder",
        "-o",
        "--output",
    )
    metadata: bool | None = option(
        "Write how each image was made into it (default true)",
        "--metadata/--no-metadata",
    )
    retries: int | None = option(
        f"Attempts at most while the API is busy (default {DEFAULT_ATTEMPTS})",
        ge=1,
        le=10,
    )
    timeout: float | None = option(
        "Seconds to wait for the API's whole answer, retries included "
        f"(default {DEFAULT_TIMEOUT:g})",
        gt=0,
        le=TIMEOUT_MAX,
    )


class PreviewOptions(Imagen4Options):
    # The page asks for 1 or more, which the newer schema takes too.
    seed: int | None = option(
        "Seed, 1 to 4294967295; drawn at random when not given", ge=1, le=SEED_MAX
    )
    negative_prompt: str | None = option("What to leave out of the image")
    inline: bool | None = option(f"{INLINE} (default false)", "--inline/--no-inline")


# How to run a generation: never sent, and never taken from an image file.
RUN_OPTIONS = ("inline", "output", "metadata", "retries", "timeout")
# Options sent as they are when given.
SENT_OPTIONS = (
    "negative_prompt",
    "enhance_prompt",
    "person_generation",
    "safety_setting",
    "add_watermark",
)


# Fields of the preview's two published request schemas beyond model,
# prompt, aspect_ratio, num_images and seed: its own page's (2025-08), and
# its later schema's (2026-01).
PREVIEW_PAGE_ONLY = ("negative_prompt",)
PREVIEW_NEWER_ONLY = (
    "enhance_prompt",
    "person_generation",
    "safety_setting",
    "add_watermark",
    "convert_base64_to_url",
)


@dataclass(frozen=True)
class Schema:
    """One published request schema of a model where it has more than one:
    the optional fields it takes, and its longest prompt."""

    name: str
    fields: tuple[str, ...]
    prompt_max: int


@dataclass(frozen=True)
class Spec:
    """What one model accepts, taken from its published request schema.
    Where it has several (``schemas``), the spec takes what any of them
    takes, and each request must fit one of them."""

    model_id: str
    api_id: str
    prompt_max: int
    options: type[Imagen4Options]
    # Whether images come inline unless the user says otherwise.
    inline: bool
    schemas: tuple[Schema, ...] = ()


SPECS = (
    # The preview's own page (prompts up to 4000 characters and
    # negative_prompt), with the controls of its later published schema.
    Spec(
        "imagen4",
        "google/imagen4/preview",
        4000,
        PreviewOptions,
        inline=False,
        schemas=(
            Schema("page schema (2025-08)", PREVIEW_PAGE_ONLY, 4000),
            Schema("newer schema (2026-01)", PREVIEW_NEWER_ONLY, 400),
        ),
    ),
    Spec(
        "imagen4-generate",
        "google/imagen-4.0-generate-001",
        400,
        Imagen4Options,
        inline=True,
    ),
    Spec(
        "imagen4-fast",
        "google/imagen-4.0-fast-generate-001",
        400,
        Imagen4Options,
        inline=True,
    ),
    Spec(
        "imagen4-ultra",
        "google/imagen-4.0-ultra-generate-001",
        400,
        Imagen4Options,
        inline=True,
    ),
)
SPECS_BY_ID = {spec.model_id: spec for spec in SPECS}
DEFAULT_MODEL = "imagen4"


# Every option of every model, in the order the preview declares them.
OPTION_FIELDS = {
    name: field for spec in SPECS for name, field in spec.options.model_fields.items()
}


def help_of(name: str) -> str:
    """What an option does, said for every model: its ``across`` where a
    model declares one, else its description."""
    fields = [
        s.options.model_fields[name] for s in SPECS if name in s.options.model_fields
    ]
    across = [(f.json_schema_extra or {}).get("across") for f in fields]  # type: ignore[union-attr]
    return next((text for text in across if text), fields[0].description or "")


def flags_of(name: str) -> list[str]:
    """An option's command-line spellings."""
    extra = OPTION_FIELDS[name].json_schema_extra or {}
    return list(extra.get("flags") or [f"--{name.replace('_', '-')}"])  # type: ignore[union-attr]


def flag(name: str) -> str:
    """How an option is spelled on the command line, for messages."""
    return next(f for f in flags_of(name) if f.startswith("--")).split("/")[0]


def as_typed(ex: Exception) -> str:
    """An error's message with the option it names spelled as its flag, as
    it was typed on the command line."""
    if isinstance(ex, OptionError) and ex.name in OPTION_FIELDS:
        return str(ex).replace(ex.name, flag(ex.name), 1)
    return str(ex)


class OptionError(llm.ModelError):
    """An option the model does not take, or a value it does not take."""

    def __init__(self, model_id: str, name: str, problem: str | None = None):
        self.name, self.problem = name, problem
        super().__init__(
            f"{name}: {problem}" if problem else f"{model_id} does not take {name}"
        )


def validate_options(spec: Spec, options: dict[str, Any]) -> Imagen4Options:
    """Options as ``spec`` takes them, or OptionError saying which is wrong."""
    import pydantic

    unknown = [name for name in options if name not in spec.options.model_fields]
    if unknown:
        raise OptionError(spec.model_id, unknown[0])
    try:
        return spec.options.model_validate(options)
    except pydantic.ValidationError as ex:
        error = ex.errors()[0]
        raise OptionError(spec.model_id, str(error["loc"][0]), error["msg"]) from None


def draw_seed() -> int:
    """A seed every model takes."""
    return secrets.randbelow(SEED_MAX) + 1


def request_options(spec: Spec) -> list[str]:
    """The option names of ``spec`` that become part of the request."""
    return [name for name in spec.options.model_fields if name not in RUN_OPTIONS]


def check_prompt(spec: Spec, prompt: str) -> None:
    if not prompt or not prompt.strip():
        raise llm.ModelError("The prompt is empty")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as ex:
        # A byte the shell passed that is no character (surrogateescape).
        raise llm.ModelError(
            f"The prompt is not UTF-8 text: character {ex.start + 1} is a byte "
            "that is no character"
        ) from None
    if len(prompt) > spec.prompt_max:
        raise llm.ModelError(
            f"The prompt is {len(prompt)} characters; "
            f"{spec.model_id} takes at most {spec.prompt_max}"
        )


def build_request(spec: Spec, prompt: str, options: Imagen4Options) -> dict[str, Any]:
    """The request body of one generation. It always carries a seed, so that
    every image can be made again."""
    check_prompt(spec, prompt)
    body: dict[str, Any] = {
        "model": spec.api_id,
        "prompt": prompt,
        "aspect_ratio": options.aspect_ratio or "1:1",
        "num_images": options.num_images or 1,
        "seed": draw_seed() if options.seed is None else options.seed,
    }
    for name in SENT_OPTIONS:
        value = getattr(options, name, None)
        if value is not None:
            body[name] = value
    if spec.inline if options.inline is None else options.inline:
        body["convert_base64_to_url"] = False
    _check_fits(spec, body)
    return body


# The fields every request has, in every published schema.
_ALWAYS = {"model", "prompt", "aspect_ratio", "num_images", "seed"}


def _check_fits(spec: Spec, body: dict[str, Any]) -> None:
    """Refuse a request that no single published schema of the model takes:
    on the preview, the page's negative_prompt or long prompt together with
    a control only its newer schema has."""
    if not spec.schemas:
        return
    extra = [name for name in body if name not in _ALWAYS]
    misfits = []
    for schema in spec.schemas:
        others = [name for name in extra if name not in schema.fields]
        if not others and len(body["prompt"]) <= schema.prompt_max:
            return
        misfits.append(
            f"its {schema.name} has no {', '.join(map(_option_of, others))}"
            if others
            else f"its {schema.name} takes prompts of at most {schema.prompt_max} "
            "characters"
        )
    raise llm.ModelError(
        f"No published request schema of {spec.model_id} takes these together: "
        + "; ".join(misfits)
    )


def _option_of(field: str) -> str:
    """The option that puts ``field`` into a request."""
    return "inline" if field == "convert_base64_to_url" else field


def explain_refusal(api_model: str, message: str) -> str | None:
    """When the server refused a field of the preview's request, which of its
    two published schemas the server follows; None when that cannot tell."""
    if (
        api_model != SPECS_BY_ID["imagen4"].api_id
        or "Body validation error" not in message
    ):
        return None
    if any(name in message for name in PREVIEW_NEWER_ONLY):
        return (
            "the server follows the preview's page schema (2025-08), which has "
            "none of enhance_prompt, person_generation, safety_setting, "
            "add_watermark or inline images"
        )
    if any(name in message for name in PREVIEW_PAGE_ONLY) or "prompt" in message:
        return (
            "the server follows the preview's newer schema (2026-01), which has "
            "no negative_prompt and takes prompts of at most 400 characters"
        )
    return None
