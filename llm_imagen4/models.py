"""The Imagen 4 models, their options, and the one implementation that the
sync and async model classes share."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Literal, get_args

import llm
from pydantic import Field

SEED_MAX = 4294967295
AspectRatio = Literal["1:1", "16:9", "9:16", "4:3", "3:4"]
ASPECT_RATIOS = get_args(AspectRatio)
# Options sent only when given: the preview's negative prompt, and the
# newer models' controls.
OPTIONAL_FIELDS = (
    "negative_prompt",
    "enhance_prompt",
    "person_generation",
    "safety_setting",
    "add_watermark",
)


class _Options(llm.Options):
    aspect_ratio: AspectRatio | None = Field(
        None, description="Aspect ratio: 1:1 (default), 16:9, 9:16, 4:3 or 3:4"
    )
    num_images: int | None = Field(
        None, ge=1, le=4, description="How many images to generate, 1 to 4"
    )
    output: str | None = Field(
        None,
        description="Folder to save into (created if missing), or a file name "
        "for a single image. Default: the current directory",
    )
    metadata: bool | None = Field(
        None,
        description="Write how each image was made into it (default true)",
    )
    retries: int | None = Field(
        None,
        ge=1,
        le=10,
        description="Attempts at most for a request the API refused for load (default 4)",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Seconds to wait for the API to answer (default 300)",
    )


class PreviewOptions(_Options):
    seed: int | None = Field(
        None,
        ge=1,
        le=SEED_MAX,
        description="Seed, 1 to 4294967295; drawn at random when not given",
    )
    negative_prompt: str | None = Field(
        None, description="What to leave out of the image"
    )


class GenerateOptions(_Options):
    seed: int | None = Field(
        None,
        ge=0,
        le=SEED_MAX,
        description="Seed, 0 to 4294967295; drawn at random when not given",
    )
    enhance_prompt: bool | None = Field(
        None, description="Let the API rewrite the prompt for quality (default true)"
    )
    person_generation: Literal["dont_allow", "allow_adult"] | None = Field(
        None, description="dont_allow or allow_adult (default)"
    )
    safety_setting: (
        Literal["block_low_and_above", "block_medium_and_above", "block_only_high"]
        | None
    ) = Field(
        None,
        description="block_low_and_above, block_medium_and_above (default) "
        "or block_only_high",
    )
    add_watermark: bool | None = Field(
        None, description="Add an invisible watermark (default false)"
    )


@dataclass(frozen=True)
class Spec:
    """What one model accepts, taken from its published request schema."""

    model_id: str
    api_id: str
    prompt_max: int
    options: type[_Options]
    # The newer models can answer with the image inline (convert_base64_to_url
    # false), which saves the round trip to the image host.
    inline: bool


SPECS = (
    Spec("imagen4", "google/imagen4/preview", 4000, PreviewOptions, inline=False),
    Spec(
        "imagen4-generate",
        "google/imagen-4.0-generate-001",
        400,
        GenerateOptions,
        inline=True,
    ),
    Spec(
        "imagen4-fast",
        "google/imagen-4.0-fast-generate-001",
        400,
        GenerateOptions,
        inline=True,
    ),
    Spec(
        "imagen4-ultra",
        "google/imagen-4.0-ultra-generate-001",
        400,
        GenerateOptions,
        inline=True,
    ),
)
SPECS_BY_ID = {spec.model_id: spec for spec in SPECS}


def draw_seed() -> int:
    return secrets.randbelow(SEED_MAX) + 1


def build_request(spec: Spec, prompt: str, options: _Options) -> dict[str, Any]:
    """The request body for one generation. It always carries a seed, so that
    every image in the history can be made again."""
    if not prompt or not prompt.strip():
        raise llm.ModelError("The prompt is empty")
    if len(prompt) > spec.prompt_max:
        raise llm.ModelError(
            f"The prompt is {len(prompt)} characters; "
            f"{spec.model_id} takes at most {spec.prompt_max}"
        )
    body: dict[str, Any] = {
        "model": spec.api_id,
        "prompt": prompt,
        "aspect_ratio": options.aspect_ratio or "1:1",
        "num_images": options.num_images or 1,
        "seed": draw_seed() if options.seed is None else options.seed,
    }
    for name in OPTIONAL_FIELDS:
        value = getattr(options, name, None)
        if value is not None:
            body[name] = value
    if spec.inline:
        body["convert_base64_to_url"] = False
    return body


class _Imagen4:
    needs_key = "aimlapi"
    key_env_var = "AIMLAPI_KEY"
    can_stream = False
    supports_conversation = False

    def __init__(self, spec: Spec):
        self.spec = spec
        self.model_id = spec.model_id
        self.Options = spec.options

    def _generate(self, prompt: llm.Prompt, response: Any, key: str | None) -> str:
        from .generate import generate

        if prompt.system:
            raise llm.ModelError(f"{self.model_id} does not take a system prompt")
        result = generate(self.spec, prompt.prompt, prompt.options, key, response.id)
        # options_json then records the seed that was sent, given or drawn.
        prompt.options.seed = result.request["seed"]
        response.response_json = result.record
        return result.text


class Imagen4(_Imagen4, llm.KeyModel):
    def execute(self, prompt, stream, response, conversation, key):
        yield self._generate(prompt, response, key)


class AsyncImagen4(_Imagen4, llm.AsyncKeyModel):
    async def execute(self, prompt, stream, response, conversation, key):
        yield await asyncio.to_thread(self._generate, prompt, response, key)
