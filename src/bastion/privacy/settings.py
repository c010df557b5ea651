"""Privacy settings, plugged into the service settings as `Settings.privacy` (`[privacy]` in bastion.toml).

Secrets come from the environment in production: `BASTION_PRIVACY__MASTER_KEY` (32 bytes, base64) and
`BASTION_PRIVACY__AUDIT_SIGNING_KEY` (a raw 32-byte Ed25519 private key, base64). In development, unset
keys are generated once under `$BASTION_HOME/keys/`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

MAX_RETENTION_DAYS = 30


class PrivacySettings(BaseModel):
    """Keys and retention windows for the privacy capability."""

    model_config = ConfigDict(extra="forbid")

    master_key: SecretStr | None = Field(
        None, description="Master key wrapping every data key: 32 random bytes, base64."
    )
    audit_signing_key: SecretStr | None = Field(
        None, description="Ed25519 private key (32 raw bytes, base64) signing audit checkpoints."
    )
    retention_days: int = Field(
        MAX_RETENTION_DAYS,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="Days a deleted conversation stays for safety review before the purge (at most 30).",
    )
    temporary_days: int = Field(
        MAX_RETENTION_DAYS,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="Days after its last message that a temporary chat (`store: false`) is purged.",
    )
    store_conversations: bool = Field(
        True, description="Store the gateway's conversations (encrypted). false: the gateway keeps none."
    )
    purge_interval_s: float = Field(
        3600.0,
        ge=0,
        description="Seconds between the server's scheduled purges (0: only `bastion privacy purge`).",
    )
