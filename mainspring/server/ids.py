"""The ids the API accepts (runs, threads): what ``schemas.Id`` and the path parameters
check, for the ids that come in elsewhere (an AG-UI input's ``threadId`` and ``runId``,
the ``X-Mainspring-Thread`` header). An id outside it would make a run or a thread that
``GET /v1/runs/{id}`` or ``GET /v1/threads/{thread}`` could not reach.
"""

from __future__ import annotations

import re

from .errors import ApiError

#: As ``schemas.Id``'s pattern and length (tests/test_server_thread_starts.py checks both agree).
ID_CHARS = "A-Za-z0-9._:@~-"
MAX_ID = 200
_ID = re.compile(f"[{ID_CHARS}]{{1,{MAX_ID}}}")


def checked_id(value: str, where: str, *, prefix: str = "", status: int = 422) -> str:
    """``value`` if it is a valid id, else ``status`` (422; the OpenAI endpoint's invalid
    requests are 400) naming ``where`` (``prefix``: what the server puts before the
    client's id, which counts in the length)."""

    if _ID.fullmatch(value) is None:
        raise ApiError(
            status,
            "invalid_request",
            f"{where}: {value[len(prefix) :][:60]!r} is not a usable id: give 1 to "
            f"{MAX_ID - len(prefix)} characters among letters, digits and . _ : @ ~ -",
            param=where,
        )
    return value
