"""The dependency vocabulary of the admin API: `Annotated` aliases routes declare."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.core.clock import Clock, to_utc
from beacon.settings import Settings
from beacon.storage.writer import Writer

_bearer = HTTPBearer(auto_error=False)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yield a session whose transaction commits when the route returns without error."""
    async with request.app.state.sessions() as session, session.begin():
        yield session


def get_writer(request: Request) -> Writer:
    writer: Writer = request.app.state.writer
    return writer


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse (401) requests without the admin bearer token."""
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), settings.admin_token.encode()
    ):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid admin bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def refuse_nul(request: Request) -> None:
    """Refuse (422) a NUL character in the path or query: no stored text can contain one."""
    if "\x00" in request.url.path or b"%00" in request.scope.get("query_string", b""):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="the path and query may not contain the NUL character (%00)",
        )


def in_utc(value: datetime | None) -> datetime | None:
    """A time as given (an offset, else UTC) moved to UTC; refused (422) when UTC cannot hold it
    (`0001-01-01T00:00:00+01:00`)."""
    try:
        return None if value is None else to_utc(value)
    except OverflowError:
        raise ValueError("the time lies outside the years 1 to 9999 once in UTC") from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
WriterDep = Annotated[Writer, Depends(get_writer)]
AdminAuth = Depends(require_admin)
UtcTime = Annotated[datetime | None, AfterValidator(in_utc)]
"""An optional time (a query parameter, a field of a body) as given, moved to UTC."""
