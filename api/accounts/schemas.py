"""What the account routes take and answer."""

from __future__ import annotations

from typing import Any

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from api.accounts.signin import MAX_MESSAGE, MAX_SIGNATURE
from api.notifications.kinds import KINDS
from api.schemas.types import Address

MAX_URL = 2048  # the column's width


def _known_kinds(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; the kinds are {sorted(KINDS)}")
    return sorted(set(value))


class Nonce(BaseModel):
    nonce: str = Field(description="put it in the message's Nonce field; it works once")
    expires_at: float = Field(description="Unix seconds; sign in before then")
    domain: str = Field(description="the domain the message must name")
    uri: str = Field(description="the origin the message's URI must be on")
    chain_id: int = Field(description="the chain id the message must name")


class SignedMessage(BaseModel):
    message: str = Field(
        max_length=MAX_MESSAGE,
        description="the EIP-4361 message, exactly as the wallet signed it",
    )
    signature: str = Field(
        max_length=MAX_SIGNATURE,
        description="the EIP-191 signature, 0x and 130 hexadecimal digits",
    )


class SignIn(SignedMessage):
    pass


class SessionOut(BaseModel):
    address: Address
    expires_at: float
    second_factor: bool = Field(description="the address has enrolled a TOTP authenticator")


class SignedInOut(SessionOut):
    token: str = Field(
        description="the bearer token (also set as an HttpOnly cookie); shown only here"
    )


class TotpEnrolment(BaseModel):
    secret: str = Field(description="the base32 seed; shown only here")
    uri: str = Field(description="otpauth:// URI for an authenticator app's QR code")


class TotpCode(BaseModel):
    code: str = Field(min_length=6, max_length=6, pattern="^[0-9]{6}$")


class Enrolled(BaseModel):
    enrolled: bool


class WatchItem(BaseModel):
    master: Address
    since: float


class Watchlist(BaseModel):
    items: list[WatchItem]


class Preferences(BaseModel):
    kinds: list[str] = Field(
        default_factory=lambda: sorted(KINDS), description="the kinds wanted (default: every kind)"
    )
    stop_loss_distance_bps: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="limit.near when the position is within this many bps of its stop-loss",
    )
    drawdown_distance_bps: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="limit.near when within this many bps of its drawdown limit",
    )

    _kinds = field_validator("kinds")(_known_kinds)


class WebhookIn(BaseModel):
    url: AnyHttpUrl = Field(
        description=f"where notifications are POSTed (http or https, at most {MAX_URL} characters)"
    )
    kinds: list[str] | None = Field(default=None, description="kinds sent (default: every kind)")

    _kinds = field_validator("kinds")(_known_kinds)

    @field_validator("url")
    @classmethod
    def _short_enough(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > MAX_URL:
            raise ValueError(f"the URL is longer than {MAX_URL} characters")
        return value


class Webhook(BaseModel):
    id: int
    url: str
    kinds: list[str] | None
    created_at: float


class WebhookCreated(Webhook):
    secret: str = Field(
        description="the HMAC-SHA256 signing secret; shown only here: keep it to verify "
        "Tandem-Signature"
    )


class Webhooks(BaseModel):
    items: list[Webhook]


class Attempt(BaseModel):
    attempt: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float


class Delivery(BaseModel):
    id: str = Field(description="the Tandem-Delivery header: the same on every retry")
    notification_id: int
    kind: str
    status: str = Field(description="pending, delivered or failed (attempts exhausted)")
    attempts: list[Attempt]
    next_attempt_at: float | None
    created_at: float
    delivered_at: float | None


class Deliveries(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


class Notification(BaseModel):
    id: int = Field(description="increasing: ask for notifications after the last id seen")
    kind: str
    vault: Address | None
    block_number: int
    log_index: int
    block_hash: str
    tx_hash: str
    block_timestamp: int
    created_at: float
    data: dict[str, Any]


class Notifications(BaseModel):
    items: list[Notification]
    last_id: int | None = Field(description="pass it as `after` for the next page")
