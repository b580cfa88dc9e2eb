"""The prompt library on disk: safetensors prompt files plus a versioned JSON manifest
(``manifest.schema.json``), shared through any ``pyarrow.fs`` location."""

from hgprompt_ray.prompts.library import MANIFEST_NAME, SCHEMA_VERSION, PromptLibrary, PromptRecord
from hgprompt_ray.prompts.selection import LibrarySelection, open_library, select_sources
from hgprompt_ray.prompts.sharing import export_library, import_library

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "LibrarySelection",
    "PromptLibrary",
    "PromptRecord",
    "export_library",
    "import_library",
    "open_library",
    "select_sources",
]
