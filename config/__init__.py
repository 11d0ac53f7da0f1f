"""citywatch configuration: the YAML engineers edit (beside this file) and the code that loads and validates it.

`load_config(DIR)` reads every `*.yaml` in DIR, validates all of it at once and returns a frozen
`Config`, or raises `ConfigError` listing each problem as `file:line: key.path: message (got X)`.
"""

from config.errors import ConfigError, ConfigProblem
from config.loader import DEFAULT_CONFIG_DIR, load_config
from config.model import Config

__all__ = ["Config", "ConfigError", "ConfigProblem", "load_config", "DEFAULT_CONFIG_DIR"]
