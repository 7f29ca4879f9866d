"""The machinery behind :mod:`agent.config`: model introspection, sources, problems, rendering.

Private: import the public names from :mod:`agent.config`.
"""
