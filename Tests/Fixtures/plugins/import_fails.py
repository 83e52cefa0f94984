# A plugin that fails at import, before it reads its request (issue 9, point 1).
import nonexistent_module  # noqa: F401
