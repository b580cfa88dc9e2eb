"""The prompt library on disk: safetensors prompt files plus a versioned JSON manifest."""

from hgprompt_ray.prompts.library import MANIFEST_NAME, SCHEMA_VERSION, PromptLibrary, PromptRecord
from hgprompt_ray.prompts.selection import LibrarySelection, open_library, select_sources

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "LibrarySelection",
    "PromptLibrary",
    "PromptRecord",
    "open_library",
    "select_sources",
]
