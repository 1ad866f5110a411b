"""Routes: streams (see docs/server.md for the contract)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
