"""The prompt library on disk: safetensors prompt files plus a versioned JSON manifest."""

from hgprompt_ray.prompts.library import MANIFEST_NAME, SCHEMA_VERSION, PromptLibrary, PromptRecord

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "PromptLibrary", "PromptRecord"]
