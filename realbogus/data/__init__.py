"""Data formats, loaders, converters and the streaming input pipeline."""
