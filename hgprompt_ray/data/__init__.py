"""Target and source tasks: VTAB-1k over torchvision and the offline suite (pip only)."""
