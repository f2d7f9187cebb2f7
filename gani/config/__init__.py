"""Configuration: pydantic models of params.yaml and the loader that resolves profiles."""
from .loader import (ConfigError, check_uris, load_settings, packaged_params_path, params_sources,
                     parse_override, read_layered_params, read_params, resolve, settings_hash)
from .schema import DOMAINS, Settings

__all__ = ["ConfigError", "check_uris", "DOMAINS", "Settings", "load_settings",
           "packaged_params_path", "params_sources", "parse_override", "read_layered_params",
           "read_params", "resolve", "settings_hash"]
