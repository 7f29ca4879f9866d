"""The agent's exception tree.

Third-party exceptions are translated into these at the source/sink boundary with
``raise ... from exc`` so the rest of the agent reasons about two questions only: is it the
configuration's fault, and will trying again help?
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration is invalid; the message names the field and what is wrong."""


class RetryableError(AgentError):
    """A transient failure (broker unreachable, timeout): back off and try again."""


class PermanentError(AgentError):
    """A failure that retrying the same thing will not fix (rejected record, bad credentials)."""
