"""Bastion's built-in plugins: the module the `bastion.plugins` entry point names.

Importing a plugin module must stay cheap: heavy frameworks load when a plugin is used.
"""

from bastion.llm import echo, local, openai_backend  # noqa: F401
from bastion.moderation.backends import embedded, lists, remote, transformers_backend  # noqa: F401
from bastion.redteam import targets  # noqa: F401
