"""Maintained lists for channel classification (JSON data files, each naming its sources)."""
