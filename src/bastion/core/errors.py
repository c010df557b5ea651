"""One error tree for all of Bastion. Foreign exceptions are translated once, at the boundary.

    BastionError                      500 server_error
    ├── ConfigError                   settings or plugin options that cannot work
    │   └── UnknownCategory           a category key outside the taxonomy
    ├── DependencyMissing             an optional extra is not installed; says which `pip install`
    ├── PluginNotFound                no plugin of that kind under that name
    ├── InvalidRequest                400 invalid_request_error
    │   ├── PayloadTooLarge           413 invalid_request_error
    │   └── Conflict                  409 invalid_request_error: not allowed in the resource's state
    ├── AuthenticationError           401 authentication_error
    ├── PermissionDenied              403 permission_error
    ├── NotFound                      404 not_found_error
    │   └── ModelNotFound             404 invalid_request_error / model_not_found
    ├── RateLimited                   429 rate_limit_error
    └── BackendError                  502 api_error: a model backend or upstream failed
        └── BackendTimeout            504 api_error

The API renders each as OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`;
the CLI prints the message on one line and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(BastionError):
    """Settings or plugin options that cannot work; the message says which and how to fix it."""

    default_code = "config_error"


class UnknownCategory(ConfigError):
    """A category key that is not one of the 13 in the taxonomy."""

    default_code = "unknown_category"


class DependencyMissing(BastionError):
    """An optional dependency is missing; the message names the `pip install` that fixes it."""

    default_code = "dependency_missing"


class PluginNotFound(ConfigError):
    """No plugin of the requested kind is registered under that name."""

    default_code = "plugin_not_found"


class InvalidRequest(BastionError):
    """The request cannot be served as sent."""

    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    """The request body or an item in it is over a configured limit."""

    status_code = 413
    default_code = "payload_too_large"


class Conflict(InvalidRequest):
    """The request is well formed but the resource's current state does not allow it."""

    status_code = 409
    default_code = "conflict"


class AuthenticationError(BastionError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(BastionError):
    """The key is valid but its role may not do this."""

    status_code = 403
    error_type = "permission_error"
    default_code = "insufficient_permissions"


class NotFound(BastionError):
    """The thing asked for does not exist (or is not visible to the caller)."""

    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    """The request names a model that is not configured."""

    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RateLimited(BastionError):
    """Too many requests or tokens for this key."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BackendError(BastionError):
    """A model backend or an upstream service failed."""

    status_code = 502
    error_type = "api_error"
    default_code = "backend_error"


class BackendTimeout(BackendError):
    """A model backend or upstream took longer than its timeout."""

    status_code = 504
    default_code = "backend_timeout"
