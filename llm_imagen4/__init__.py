"""llm-imagen4: Google's Imagen 4 models through the AI/ML API, for llm."""

import llm


@llm.hookimpl
def register_models(register):
    from .models import SPECS, AsyncImagen4, Imagen4

    for spec in SPECS:
        register(Imagen4(spec), AsyncImagen4(spec))


@llm.hookimpl
def register_commands(cli):
    from .cli import imagen4

    cli.add_command(imagen4)
