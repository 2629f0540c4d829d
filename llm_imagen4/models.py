"""The llm models: a sync and an async class sharing one implementation,
which is the engine's."""

from __future__ import annotations

from typing import Any

import llm

from .specs import Spec


class _Imagen4:
    needs_key = "aimlapi"
    key_env_var = "AIMLAPI_KEY"
    can_stream = False
    supports_conversation = False

    def __init__(self, spec: Spec):
        self.spec = spec
        self.model_id = spec.model_id
        self.Options = spec.options

    def __str__(self) -> str:
        return f"Imagen 4: {self.model_id} ({self.spec.api_id})"


class Imagen4Model(_Imagen4, llm.KeyModel):
    def execute(self, prompt, stream, response, conversation, key) -> Any:
        from . import engine

        yield engine.run(self.model_id, prompt, response, key, engine.log_target())


class AsyncImagen4Model(_Imagen4, llm.AsyncKeyModel):
    async def execute(self, prompt, stream, response, conversation, key) -> Any:
        from . import engine

        # Where llm logs is read from its click context here, on the
        # caller's thread: the generation runs on another.
        yield await engine.run_async(
            self.model_id, prompt, response, key, engine.log_target()
        )
