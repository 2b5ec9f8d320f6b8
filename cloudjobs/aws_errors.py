"""What botocore errors about the caller's own setup mean, shared by the SQS backend and DynamoDB store.

Credentials, region and profile problems are the same whichever service was called; each service's
module translates the rest (unreachable endpoint, missing queue or table) into its own errors.
botocore is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Final

from cloudjobs.errors import ConfigurationError, CredentialsError

CREDENTIAL_CHAIN_HINT: Final = (
    "no AWS credentials found: boto3 looked through its credential chain (the environment variables "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with the shared credentials and config "
    "files, SSO, web identity, and container or EC2 instance metadata)"
)


def setup_errors() -> tuple[type[Exception], ...]:
    """The botocore exceptions that mean the caller's setup is wrong, not the service."""
    import botocore.exceptions

    return (
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
        botocore.exceptions.NoRegionError,
        botocore.exceptions.ProfileNotFound,
    )


def setup_error(exc: Exception) -> ConfigurationError:
    """The cloudjobs error for one of :func:`setup_errors` (raise it ``from exc``)."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.NoRegionError):
        return ConfigurationError(
            "no AWS region configured: set AWS_REGION or pass region=", setting="AWS_REGION"
        )
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return ConfigurationError(str(exc), setting="AWS_PROFILE")
    return CredentialsError(f"{CREDENTIAL_CHAIN_HINT}: {exc}")


def error_code(exc: BaseException) -> str | None:
    """The service's error code of a botocore ``ClientError`` (``"ConflictException"``...), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
