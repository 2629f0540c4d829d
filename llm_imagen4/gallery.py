"""A static HTML page of the history: one card per image, newest first, with
a filter that works in the page and nothing fetched from the network."""

from __future__ import annotations

import html
import os
from pathlib import Path, PurePath
from urllib.parse import quote

from .history import NOT_VALID, HistoryEntry
from .terminal import command

GENERATOR = "llm-imagen4"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Imagen 4 gallery</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }}
header {{ display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }}
#filter {{ font: inherit; padding: .4rem .6rem; min-width: 18rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr));
  gap: 1rem; margin-top: 1rem; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .6rem;
  display: flex; flex-direction: column; gap: .4rem; }}
.card[hidden] {{ display: none; }}
.card img {{ width: 100%; height: 200px; object-fit: contain; background: #f4f4f4; }}
.missing {{ height: 200px; display: flex; align-items: center; justify-content: center;
  background: #fbeaea; color: #933; }}
.prompt {{ margin: 0; }}
.meta {{ color: #666; font-size: 12px; }}
code {{ font-size: 12px; background: #f4f4f4; padding: .2rem .3rem; display: block;
  overflow-wrap: anywhere; }}
button {{ font: inherit; font-size: 12px; align-self: flex-start; }}
</style>
</head>
<body>
<header>
<h1>Imagen 4 gallery</h1>
<input id="filter" type="search" placeholder="Filter by prompt, model or seed"
  aria-label="Filter">
<span id="count">{count} images</span>
</header>
<main class="grid">
{cards}
</main>
<script>
const filter = document.getElementById("filter");
const cards = Array.from(document.querySelectorAll(".card"));
filter.addEventListener("input", () => {{
  const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
  let shown = 0;
  for (const card of cards) {{
    card.hidden = !words.every((w) => card.dataset.search.includes(w));
    if (!card.hidden) shown++;
  }}
  document.getElementById("count").textContent = shown + " of " + cards.length + " images";
}});
for (const button of document.querySelectorAll("button.copy")) {{
  button.addEventListener("click", () => {{
    navigator.clipboard.writeText(button.previousElementSibling.textContent);
    button.textContent = "Copied";
  }});
}}
</script>
</body>
</html>
"""

CARD = """<article class="card" data-search="{search}">
{picture}
<p class="prompt">{prompt}</p>
<div class="meta">{model} · seed {seed} · {size} · {date}</div>
<code>{rerun}</code>
<button class="copy" type="button">Copy</button>
</article>"""


def _folder_href(folder: str, page_folder: Path) -> str:
    """A folder of images as a URL relative to the page, ending in a slash
    (empty for the page's own folder)."""
    try:
        relative = os.path.relpath(folder or os.curdir, page_folder)
    except ValueError:  # another drive, on Windows
        relative = folder
    if relative == os.curdir:
        return ""
    return quote(PurePath(relative).as_posix()) + "/"


def _text(value: object) -> str:
    """A value of the history as text of the page: escaped, and "not valid"
    when the history has none of the right type."""
    return html.escape(NOT_VALID if value is None else str(value))


def render(entries: list[HistoryEntry], page_folder: Path) -> str:
    """The page of ``entries``. Every value in it comes from a logs
    database, which may be crafted: each is written escaped."""
    cards = []
    # Each folder's URL, worked out once: the images of a history are in a
    # few folders.
    folders: dict[str, str] = {}
    for entry in entries:
        prompt = entry.prompt if entry.prompt is not None else NOT_VALID
        when = entry.datetime_utc[:16].replace("T", " ") if entry.datetime_utc else None
        fields = {
            "search": _text(f"{prompt} {entry.model} {entry.seed}".lower()),
            "prompt": _text(prompt),
            "model": _text(entry.model),
            "seed": _text(entry.seed),
            "date": _text(when),
            "rerun": _text(command("llm", "imagen4", "rerun", str(entry.id))),
        }
        alt = _text(prompt[:200])
        for image in entry.images:
            if image.exists and image.path:
                folder, name = os.path.split(image.path)
                if folder not in folders:
                    folders[folder] = _folder_href(folder, page_folder)
                href = html.escape(folders[folder] + quote(name))
                picture = f'<a href="{href}"><img src="{href}" alt="{alt}" loading="lazy"></a>'
            else:
                picture = (
                    f'<div class="missing">{_text(image.status)}: file missing</div>'
                )
            size = (
                _text(f"{image.width}×{image.height}")
                if image.width and image.height
                else "?"
            )
            cards.append(CARD.format(picture=picture, size=size, **fields))
    return PAGE.format(generator=GENERATOR, count=len(cards), cards="\n".join(cards))


def is_gallery(path: Path) -> bool:
    """Whether a file is a page this module wrote, and so may be replaced: a
    regular file (a symlink is not followed, a FIFO not waited on)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        head = f.read(1024)
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head
