"""The plugin config and the task config: the names the rest of the driver imports.

Each option is declared once, as a dataclass field (``driver.options``): the plugin's in
``driver.pluginconfig``, the task's in ``driver.taskconfig``; value parsers shared by both are in
``driver.values``. Every error names the field and the fix.
"""

from driver.hclschema import ConfigError
from driver.pluginconfig import (
    PLUGIN_SCHEMA,
    AuthFiles,
    GcConfig,
    Limits,
    PluginConfig,
    VolumesConfig,
    decode_plugin_config,
    default_state_dir,
)
from driver.taskconfig import (
    TASK_SCHEMA,
    MountSpec,
    RegistryAuth,
    TaskConfig,
    check_task_allowed,
    decode_task_config,
)
from driver.values import parse_duration, under

__all__ = [
    "PLUGIN_SCHEMA",
    "TASK_SCHEMA",
    "AuthFiles",
    "ConfigError",
    "GcConfig",
    "Limits",
    "MountSpec",
    "PluginConfig",
    "RegistryAuth",
    "TaskConfig",
    "VolumesConfig",
    "check_task_allowed",
    "decode_plugin_config",
    "decode_task_config",
    "default_state_dir",
    "parse_duration",
    "under",
]
