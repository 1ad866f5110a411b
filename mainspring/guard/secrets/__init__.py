"""Secrets for tools: where they come from, who gets them, and where they never appear.

* Providers behind one protocol (:class:`SecretProvider`, ``get(name) -> value | None``):
  :class:`EnvSecrets`, :class:`FileSecrets` (a directory of files, JSON, ``.env``),
  :class:`ChainSecrets`, and :class:`CachedSecrets`, the shape a remote manager (Vault,
  a cloud secret manager) fits. Each re-reads its source, so a rotated secret is seen
  by the next call without a restart.
* ``Toolbox(tools, secrets=provider)`` hands each tool only the secrets it declared
  (``@tool(secrets=["NAME"])``, ``ctx.secret("NAME")``).
* Values handed to a tool are scrubbed (``[secret:NAME]``) from its result, its errors,
  its approval payload, every effect's recorded arguments and the logs
  (:class:`SecretFilter`). See docs/secrets.md.
"""

from typing import TYPE_CHECKING

from ..._lazy import lazy_getattr
from .protocol import SecretProvider, SecretsError, check_name

if TYPE_CHECKING:
    from .cached import CachedSecrets
    from .chain import ChainSecrets
    from .env import EnvSecrets
    from .files import FileSecrets, parse_dotenv
    from .hook import SecretArgs
    from .scrub import HANDED, HandedValues, Scrubber, SecretFilter, marker, scrubber_for

_LAZY = {
    "CachedSecrets": ".cached",
    "ChainSecrets": ".chain",
    "EnvSecrets": ".env",
    "FileSecrets": ".files",
    "parse_dotenv": ".files",
    "SecretArgs": ".hook",
    "HANDED": ".scrub",
    "HandedValues": ".scrub",
    "Scrubber": ".scrub",
    "SecretFilter": ".scrub",
    "marker": ".scrub",
    "scrubber_for": ".scrub",
}

if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = [
    "HANDED",
    "CachedSecrets",
    "ChainSecrets",
    "EnvSecrets",
    "FileSecrets",
    "HandedValues",
    "Scrubber",
    "SecretArgs",
    "SecretFilter",
    "SecretProvider",
    "SecretsError",
    "check_name",
    "marker",
    "parse_dotenv",
    "scrubber_for",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
