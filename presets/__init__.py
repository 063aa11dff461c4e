"""Preset TOML files shipped with diffbench (`paper`, `small`, `tiny`)."""
