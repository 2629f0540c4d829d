"""The record of one generation: what llm logs as the turn's
``response_json``, what the recovery journal keeps until every image is
saved, and what the history table is derived from.

It never holds image data or the key. It holds no whole path either: llm
condenses any string of ``response_json`` that contains the response text
(the saved paths), so the folder and each file name are kept apart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from .terminal import printable

PLUGIN = "llm-imagen4"
# pending: not saved yet; failed: not saved, worth another try from its URL;
# refused: not saved and never will be (too large); saved: on disk; lost:
# made and charged, as the API's log says, but its answer never arrived, so
# nothing can fetch it.
ImageStatus = Literal["pending", "saved", "failed", "refused", "lost"]


def file_name(value: str | None) -> str | None:
    """A name of one file in its folder: one path component, never a way out
    of the folder (a record read back may have been crafted)."""
    if value is None:
        return None
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or (os.altsep and os.altsep in value)
    ):
        raise ValueError(f"{value!r} is not the name of a file in its folder")
    return value


def folder_path(value: str | None) -> str | None:
    """A folder as a record holds it: absolute, with its trailing separator."""
    if value is None:
        return None
    if "\x00" in value or not os.path.isabs(value) or not value.endswith(os.sep):
        raise ValueError(f"{value!r} is not an absolute folder")
    return value


class ImageRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    position: int
    status: ImageStatus = "pending"
    name: str | None = None
    # Set when the image was saved elsewhere than its generation's folder
    # (``download -o``), with its trailing separator.
    directory: str | None = None
    sidecar: str | None = None
    url: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    # The prompt the API made this image from, when it rewrote the user's.
    enhanced_prompt: str | None = None
    # Left byte for byte as received: it carries C2PA Content Credentials.
    c2pa: bool = False
    error: str | None = None
    # The sha256 of the file this image was about to be named as, kept
    # until it is saved: a process stopped between naming the file and
    # saying so leaves the file to be found, not saved again.
    placing: str | None = None

    @field_validator("name", "sidecar")
    @classmethod
    def _one_file(cls, value: str | None) -> str | None:
        return file_name(value)

    @field_validator("directory")
    @classmethod
    def _a_folder(cls, value: str | None) -> str | None:
        return folder_path(value)


class GenerationRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plugin: Literal["llm-imagen4"] = PLUGIN
    request: dict[str, Any]
    # The seed that was sent; with it the request makes the images again.
    seed: int
    credits_used: float | None = None
    usd_spent: float | None = None
    client_request_id: str | None = None
    inference_id: str | None = None
    # Set when a chat model asked for the images through the Imagen4 tool.
    tool_call_id: str | None = None
    # The folder with its trailing separator, and the name its images'
    # names start with (None in records made before it was kept: the
    # prompt's).
    directory: str
    stem: str | None = None
    metadata: bool = True
    # What each image carries, before its own enhanced prompt.
    provenance: dict[str, Any] | None = None
    images: list[ImageRecord]
    # When ``llm imagen4 import`` rebuilt this generation from its images'
    # own records (UTC, ISO 8601); None for one logged as it was made.
    imported: str | None = None

    @field_validator("stem")
    @classmethod
    def _one_file(cls, value: str | None) -> str | None:
        return file_name(value)

    @field_validator("directory")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        return folder_path(value) or value

    def path(self, image: ImageRecord) -> Path | None:
        if not image.name:
            return None
        return Path((image.directory or self.directory) + image.name)

    def saved_paths(self) -> list[Path]:
        return [
            path
            for image in self.images
            if image.status == "saved" and (path := self.path(image))
        ]

    def unsaved(self) -> list[ImageRecord]:
        return [image for image in self.images if image.status != "saved"]

    def unfinished(self) -> list[ImageRecord]:
        """The images not saved that another try may save."""
        return [image for image in self.images if image.status in ("pending", "failed")]

    def text(self, generation_id: str) -> str:
        """The response text llm shows: each saved path, and for each image
        not saved, what happened and how to finish it."""
        lines = []
        for image in self.images:
            if image.status == "saved" and image.name:
                lines.append(str(self.path(image)))
            elif image.status in ("refused", "lost"):
                lines.append(
                    f"Image {image.position + 1} {image.status}: {printable(image.error)}"
                )
            else:
                lines.append(
                    f"Image {image.position + 1} not saved: "
                    f"{printable(image.error or image.status)}"
                    f" - finish it with: llm imagen4 download {generation_id}"
                )
        return "\n".join(lines)

    def usage(self) -> dict[str, float]:
        """The cost, as llm's usage details: what ``--usage`` prints."""
        return {
            name: value
            for name, value in (
                ("credits_used", self.credits_used),
                ("usd_spent", self.usd_spent),
            )
            if value is not None
        }

    def image_provenance(self, image: ImageRecord) -> dict[str, Any] | None:
        """What is written into one image: the generation's provenance with
        the prompt the API made this image from."""
        if not self.metadata or self.provenance is None:
            return None
        return {**self.provenance, "enhanced_prompt": image.enhanced_prompt}


def folder_text(folder: Path) -> str:
    return str(folder) + os.sep
