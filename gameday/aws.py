"""AWS clients for a target: made from its `aws:` section, inside functions, never at import.

Credentials come from boto3's usual chain (environment, `profile`, instance role); the target
file only says the region, the profile and, for LocalStack or moto's server, an
`endpoint_url`. Clients are typed `Any`: the botocore APIs are dynamic, and the callers keep
the values they read in small typed records.
"""

from __future__ import annotations

from typing import Any

from gameday.target import Aws

# Short connect and read timeouts and a few standard retries: a game day must notice an API
# that does not answer, not hang on it.
CONNECT_TIMEOUT_SEC = 5
READ_TIMEOUT_SEC = 30
MAX_ATTEMPTS = 4


def client(aws: Aws, service: str) -> Any:
    """A boto3 client for `service` in the target's region (and endpoint, if it has one)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=aws.profile, region_name=aws.region)
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SEC,
        read_timeout=READ_TIMEOUT_SEC,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    return session.client(service, endpoint_url=aws.endpoint_url, config=config)


def caller_account(aws: Aws) -> str:
    """The account the credentials in use belong to (sts:GetCallerIdentity needs no policy)."""
    return str(client(aws, "sts").get_caller_identity()["Account"])


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
