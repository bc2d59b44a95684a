"""File helpers at the bottom layer: atomic writes with checksum sidecars, CSV and YAML files."""
