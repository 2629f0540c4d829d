"""llm-imagen4: Google's Imagen 4 models through the AI/ML API, for llm."""

import llm


@llm.hookimpl
def register_models(register):
    from .models import AsyncImagen4Model, Imagen4Model
    from .specs import SPECS

    for spec in SPECS:
        register(Imagen4Model(spec), AsyncImagen4Model(spec))


@llm.hookimpl
def register_commands(cli):
    from .cli import imagen4

    cli.add_command(imagen4)


@llm.hookimpl
def register_tools(register):
    from .tool import Imagen4

    register(Imagen4)
