"""`--vm-image` to a GuestImage: the built recipe (default), a local cloud image, or a URL
with its sha256 (`https://.../image.qcow2#sha256=HEX`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from harness.errors import ConfigError
from harness.image.build import ensure_built_image
from harness.image.cache import ImageCache
from harness.image.download import cloud_image, fetch
from harness.image.guest_image import GuestImage
from harness.image.recipe import DEFAULT_RECIPE, Recipe
from harness.resources import guest_images_dir


def resolve_image(spec: str | None, cache: ImageCache | None = None,
                  progress: Callable[[str], None] = lambda _m: None) -> GuestImage:
    cache = cache or ImageCache.default()
    spec = (spec or DEFAULT_RECIPE).strip()
    if re.match(r"https?://", spec):
        url, _, fragment = spec.partition("#")
        match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
        if not match:
            raise ConfigError(f"The image URL {url} has no sha256.",
                              fix=f"append it: {url}#sha256=<64 hex digits>.")
        path = fetch(url, match[1], cache)
        return cloud_image(path, identity=match[1].lower())
    if (guest_images_dir() / spec).is_dir() and "/" not in spec:
        return ensure_built_image(Recipe.named(spec), cache, progress)
    return cloud_image(Path(spec).expanduser())
