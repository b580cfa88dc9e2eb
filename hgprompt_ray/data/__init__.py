"""Tasks: VTAB-1k over torchvision and the offline suite that runs with pip alone.

``get_task(name).split("train800" | "val200" | "train800val200" | "test", seed=0,
transform=backbone_transform(img_size, mean, std))`` serves every task the same way;
``resolve_target`` also accepts an ImageFolder directory or a ``path,label`` CSV.
"""

from hgprompt_ray.data.base import (
    SPLITS,
    ArraySplit,
    ImageSplit,
    Task,
    TaskInfo,
    TaskUnavailableError,
    backbone_transform,
    vtab_split_indices,
)
from hgprompt_ray.data.custom import CsvTask, FolderTask, TargetError
from hgprompt_ray.data.registry import (
    IMAGE_SETS,
    eligible_sources,
    get_task,
    image_set,
    list_tasks,
    readable_here,
    related_tasks,
    resolve_target,
)

__all__ = [
    "IMAGE_SETS",
    "SPLITS",
    "ArraySplit",
    "CsvTask",
    "FolderTask",
    "ImageSplit",
    "Task",
    "TaskInfo",
    "TargetError",
    "TaskUnavailableError",
    "backbone_transform",
    "eligible_sources",
    "get_task",
    "image_set",
    "list_tasks",
    "readable_here",
    "related_tasks",
    "resolve_target",
    "vtab_split_indices",
]
