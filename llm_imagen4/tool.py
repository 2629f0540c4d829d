"""Imagen 4 as an llm tool: a chat model can make images, look at them, and
try again. It spends the user's money on a model's decision, so it is capped
(``max_images`` for the whole chain), every argument is checked before
anything is sent, and a mistake comes back to the model as one line."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import llm

from .specs import AspectRatio


class ToolRefusal(ValueError):
    """An answer to the model that nothing was generated, and why: one line,
    its control characters escaped, as llm hands it to the model and
    ``--td`` prints it (the API's messages are untrusted text)."""

    def __init__(self, message: str):
        from .terminal import printable

        super().__init__(printable(" ".join(str(message).split())))


class ToolConfigError(click.ClickException, ValueError):
    """A toolbox set up wrongly: one line under ``llm -T``, a ValueError
    from Python."""

    def __init__(self, message: str):
        super().__init__("Imagen4: " + " ".join(message.split()))


class Imagen4(llm.Toolbox):
    """Generate images with Google's Imagen 4 through the AI/ML API.

    ``model`` is one of imagen4, imagen4-generate, imagen4-fast or
    imagen4-ultra, or an alias of one; ``output`` the folder for the images
    (default: the current folder); ``max_images`` how many images this
    toolbox may make in all, across the whole chain; ``max_usd`` how many
    dollars it may spend in all, at the model's published price an image;
    ``attach`` whether to hand each image back to the model to look at (only
    ever to a model that takes images). Any other option of the model
    (``aspect_ratio``, ``negative_prompt``, ``enhance_prompt``, ...) is
    fixed for every call."""

    def __init__(
        self,
        model: str = "imagen4",
        output: str | None = None,
        max_images: int = 4,
        max_usd: float | None = None,
        attach: bool = True,
        aspect_ratio: str | None = None,
        negative_prompt: str | None = None,
        enhance_prompt: bool | None = None,
        person_generation: str | None = None,
        safety_setting: str | None = None,
        add_watermark: bool | None = None,
        metadata: bool | None = None,
        **unknown: Any,
    ):
        from .budget import Budget

        if unknown:
            takes = ", ".join(
                name
                for name in inspect.signature(Imagen4.__init__).parameters
                if name not in ("self", "unknown")
            )
            raise ToolConfigError(f"no option {next(iter(unknown))}; it takes {takes}")
        self._model = _model(model)
        self._fixed = _fixed_options(
            self._model.model_id,
            {
                "output": output,
                "aspect_ratio": aspect_ratio,
                "negative_prompt": negative_prompt,
                "enhance_prompt": enhance_prompt,
                "person_generation": person_generation,
                "safety_setting": safety_setting,
                "add_watermark": add_watermark,
                "metadata": metadata,
            },
        )
        _check_caps(max_images, max_usd)
        if not isinstance(attach, bool):
            raise ToolConfigError("attach must be true or false")
        self._max_images = max_images
        self._attach = attach
        self._made = 0
        self._budget = Budget(max_usd=max_usd, names=("max_credits", "max_usd"))
        self._calls = 0
        self._priced = False
        self._lock = threading.Lock()

    def tools(self) -> Iterator[llm.Tool]:
        """The tools, with what this toolbox is set up to do added to the
        description of generate: the model reading it cannot know otherwise
        which limits apply."""
        for tool in super().tools():
            if tool.name == f"{type(self).__name__}_generate":
                tool.description = f"{tool.description}\n\n{self._setup()}"
            yield tool

    def _setup(self) -> str:
        from . import specs
        from .terminal import counted

        spec = specs.SPECS_BY_ID[self._model.model_id]
        takes_negative = "negative_prompt" in spec.options.model_fields
        line = (
            f"This tool uses {spec.model_id}: prompts of at most "
            f"{spec.prompt_max} characters, "
            + ("negative_prompt taken" if takes_negative else "no negative_prompt")
            + f". It may make {counted(self._max_images, 'image')} in all"
            + (
                f" and spend ${self._budget.max_usd:g} in all."
                if self._budget.max_usd is not None
                else "."
            )
        )
        for name in ("aspect_ratio", "negative_prompt"):
            if name in self._fixed:
                line += f" {name} is fixed to {self._fixed[name]}; leave it out."
        return line

    def generate(
        self,
        prompt: str,
        aspect_ratio: AspectRatio | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        num_images: int = 1,
        llm_tool_call: llm.ToolCall | None = None,
    ) -> llm.ToolOutput | Awaitable[llm.ToolOutput]:
        """Generate images from a text prompt with Google Imagen 4 and save
        them to disk. Each call costs the user money.

        prompt: what the image shows, in plain words (style, subject,
        composition, lighting). imagen4 takes up to 4000 characters; the
        other models 400.
        aspect_ratio: one of 1:1 (default), 16:9, 9:16, 4:3, 3:4.
        negative_prompt: what to leave out of the image. Only the imagen4
        model takes it; leave it out for the others.
        seed: a whole number from 1 to 4294967295. The same prompt, options
        and seed make the same image again; leave it out for a new one.
        num_images: how many images, 1 to 4 (default 1). Each counts
        against the images this tool may make in all.

        Returns JSON: id (the generation's id in the user's history), model,
        seed (the one used), paths (the saved images), credits_used and
        usd_spent (what it cost), price_per_image_usd (what an image costs,
        null when not known), not_saved (any image that could not be saved,
        and why), images_left (how many more this tool may make), usd_left
        (how many dollars it may still spend, when capped) and attached
        (whether the images are attached for you to look at, which they are
        only where you can see images)."""
        from . import turns

        calling = _calling_response()
        run_options, count = self._checked(
            prompt,
            aspect_ratio=aspect_ratio,
            negative_prompt=negative_prompt,
            seed=seed,
            num_images=num_images,
        )
        # Logged where llm's command line logs the chat, and not at all from
        # Python, where llm logs nothing unless asked (as llm.get_model's
        # own imagen4 models log nothing there).
        log_to = turns.llm_target()
        call = _Call(
            key=self._count(count),
            prompt=prompt,
            options=run_options,
            count=count,
            log_to=log_to,
            thread=_chat_thread(calling) if log_to else None,
            sees=frozenset(calling.model.attachment_types or ()) if calling else None,
            tool_call_id=llm_tool_call.tool_call_id if llm_tool_call else None,
        )
        if isinstance(calling, llm.AsyncResponse):
            # An async chain awaits what its tools return: the generation
            # runs in a thread of its own while the event loop goes on.
            return self._generate_async(call)
        return self._generate(call)

    def _checked(self, prompt: Any, **arguments: Any) -> tuple[dict[str, Any], int]:
        """The call's options, checked as ``llm imagen4`` checks them before
        anything is sent: the toolbox's fixed ones and the arguments the
        model gave, none of which may change a fixed one. With the number
        of images the request asks for."""
        from . import engine

        if not isinstance(prompt, str):
            raise ToolRefusal("prompt must be text")
        options = dict(self._fixed)
        for name, value in arguments.items():
            if value is None:
                continue
            if name in self._fixed and self._fixed[name] != value:
                raise ToolRefusal(
                    f"{name} is fixed to {self._fixed[name]} for this tool; leave it out"
                )
            options[name] = value
        try:
            run_options, request = engine.check(self._model, prompt, options, None)
        except llm.ModelError as ex:
            raise ToolRefusal(str(ex)) from None
        return run_options, request["num_images"]

    def _count(self, count: int) -> int:
        """Count a call's images against the caps, or refuse it; the call's
        key in the budget."""
        from . import budget

        self._learn_prices()
        with self._lock:
            left = self._max_images - self._made
            if not left:
                raise ToolRefusal(
                    "Refused: this tool may make no more images "
                    f"(max_images is {self._max_images}); do not call it again"
                )
            if count > left:
                raise ToolRefusal(
                    f"Refused: {count} images asked for, but this tool may make "
                    f"only {left} more (max_images is {self._max_images}); "
                    f"ask for at most {left}"
                )
            self._calls += 1
            key = self._calls
            why = self._budget.admit(key, self._model.model_id, count)
            if why == budget.WAIT:
                raise ToolRefusal(
                    "Refused for now: another call of this tool is still running, "
                    "and the price of an image is not known until it ends"
                )
            if why is not None:
                raise ToolRefusal(f"Refused: {why}; ask for fewer images, or stop")
            self._made += count
        return key

    def _generate(self, call: _Call) -> llm.ToolOutput:
        from . import engine

        try:
            response = engine.generate(
                self._model, call.prompt, call.options, None, call.route()
            )
        except llm.ModelError as ex:
            raise self._refused(call, ex) from None
        engine.log(response, call.log_to, call.thread)
        return self._output(response, call)

    async def _generate_async(self, call: _Call) -> llm.ToolOutput:
        """``_generate`` through the async model, which runs the generation
        in a thread of its own: cancelled, it leaves the images to ``llm
        imagen4 download`` as ``llm -m imagen4 --async`` does."""
        from . import engine, route

        model = llm.get_async_model(self._model.model_id)
        try:
            with route.on(call.route()):
                response = model.prompt(
                    call.prompt, key=None, stream=False, **call.options
                )
                await response.text()
        except llm.ModelError as ex:
            raise self._refused(call, ex) from None
        done = await response.to_sync_response()
        await asyncio.to_thread(engine.log, done, call.log_to, call.thread)
        return self._output(done, call)

    def _learn_prices(self) -> None:
        """The model's published price, read once a toolbox (the catalogue
        itself at most once a day), for the cap and for the model to know."""
        from . import catalogue

        with self._lock:
            if not self._priced:
                self._budget.published = catalogue.prices()
                self._priced = True

    def _refused(self, call: _Call, ex: llm.ModelError) -> ToolRefusal:
        """What the model is told of a generation that failed. A refusal
        from the API made and charged nothing, so the images asked for do
        not count against max_images or max_usd; a lost answer counts at what
        the API's log says it cost; anything else may have been charged, and
        counts."""
        from . import errors, recovery

        if isinstance(ex, errors.Declined):
            self._budget.refused(call.key)
            with self._lock:
                self._made -= call.count
        else:
            listed = ex.listed if isinstance(ex, recovery.LostAnswer) else None
            self._budget.settle(call.key, self._model.model_id, None, listed)
        return ToolRefusal(str(ex))

    def _output(self, response: llm.Response, call: _Call) -> llm.ToolOutput:
        from . import engine

        record = engine.record_of(response)
        self._budget.settle(call.key, self._model.model_id, record)
        price = self._budget.price(self._model.model_id)
        attachments = []
        if self._attach:
            for image in record.images:
                path = record.path(image)
                if image.status != "saved" or path is None:
                    continue
                if call.sees is None or image.content_type in call.sees:
                    attachments.append(
                        llm.Attachment(type=image.content_type, path=str(path))
                    )
        output = {
            "id": response.id,
            "model": self._model.model_id,
            "seed": record.seed,
            "paths": [str(path) for path in record.saved_paths()],
            "credits_used": record.credits_used,
            "usd_spent": record.usd_spent,
            "price_per_image_usd": price[1] if price else None,
            "not_saved": [
                f"image {image.position + 1}: {image.error}"
                for image in record.unsaved()
            ],
            "images_left": self._max_images - self._made,
            **(
                {"usd_left": round(left, 6)}
                if (left := self._budget.left()) is not None
                else {}
            ),
            "attached": bool(attachments),
        }
        return llm.ToolOutput(output=output, attachments=attachments)


def _model(name: Any) -> llm.Model:
    from . import engine

    if not isinstance(name, str):
        raise ToolConfigError("model must be the name of an Imagen 4 model")
    try:
        return engine.resolve(name)
    except llm.ModelError as ex:
        raise ToolConfigError(str(ex)) from None


def _fixed_options(model_id: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options a toolbox fixes for every call, checked as the model
    takes them."""
    from . import specs

    fixed = {name: value for name, value in given.items() if value is not None}
    try:
        specs.validate_options(specs.SPECS_BY_ID[model_id], fixed)
    except llm.ModelError as ex:
        raise ToolConfigError(str(ex)) from None
    return fixed


def _check_caps(max_images: Any, max_usd: Any) -> None:
    if (
        isinstance(max_images, bool)
        or not isinstance(max_images, int)
        or max_images < 0
    ):
        raise ToolConfigError("max_images must be a whole number, 0 or more")
    if max_usd is not None and (
        isinstance(max_usd, bool)
        or not isinstance(max_usd, (int, float))
        or not 0 < max_usd < float("inf")
    ):
        raise ToolConfigError("max_usd must be a number of dollars above 0")


@dataclass(frozen=True)
class _Call:
    """One call of the tool, checked and counted, ready to send."""

    # The call's place in the toolbox's budget.
    key: int
    prompt: str
    options: dict[str, Any]
    count: int
    # Where the generation is logged (None: not), and in which conversation.
    log_to: Path | None
    thread: tuple[str, str] | None
    # The attachment types the calling chat model takes (None: no chain).
    sees: frozenset[str] | None
    tool_call_id: str | None

    def route(self) -> Any:
        """The route its generation runs on: logged by the tool, not llm."""
        from .route import Route

        return Route.logged_to(self.log_to, tool_call_id=self.tool_call_id)


def _calling_response() -> llm.Response | llm.AsyncResponse | None:
    """The llm response of the chat model that made this tool call, found
    by looking up the stack (llm hands a tool no reference to it); None
    when no llm chain called the tool."""
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, (llm.Response, llm.AsyncResponse)):
            return owner
        frame = frame.f_back
    return None


def _chat_thread(calling: Any) -> tuple[str, str] | None:
    """The conversation of the chat that asked for the images, and the
    prompt that names it: the generation is logged there, so ``llm -c``
    still continues the chat, and ``llm logs --cid`` shows what it made."""
    conversation = getattr(calling, "conversation", None)
    if conversation is None:
        return None
    first = conversation.responses[0] if conversation.responses else calling
    return conversation.id, first.prompt.prompt or first.prompt.system or ""


# What a model reads is the docstring as written, indentation and all.
Imagen4.generate.__doc__ = inspect.cleandoc(Imagen4.generate.__doc__ or "")
# What ``llm tools list`` shows: the options, without the catch-all that is
# there only to name a mistyped one.
Imagen4.__signature__ = inspect.signature(Imagen4).replace(
    parameters=[
        parameter
        for parameter in inspect.signature(Imagen4).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
)
