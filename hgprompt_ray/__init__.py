"""hgprompt-ray."""
