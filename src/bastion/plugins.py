"""Bastion's built-in plugins: the module the `bastion.plugins` entry point names.

Importing a plugin module must stay cheap: heavy frameworks load when a plugin is used.
"""

from bastion.llm import echo, local, openai_backend  # noqa: F401
from bastion.moderation.backends import embedded, lists, profanity, remote, transformers_backend  # noqa: F401
from bastion.redteam import converters, engines, probes, targets  # noqa: F401
from bastion.redteam.scorers import harm, judge, refusal  # noqa: F401
