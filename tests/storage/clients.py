"""A plain boto3 client of the test run's SeaweedFS: boto3's own defaults, not the service's storage."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from tests.support.seaweed import Seaweed


def boto3_client(seaweed: Seaweed, *, https: bool = False) -> Any:
    """A path-style S3 client of `seaweed` with its test credentials, over HTTPS (its own CA) or HTTP."""
    transport: dict[str, Any] = (
        {"endpoint_url": seaweed.https_endpoint, "verify": str(seaweed.ca_file)}
        if https
        else {"endpoint_url": seaweed.http_endpoint}
    )
    return boto3.client(
        "s3",
        region_name="auto",
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        config=Config(s3={"addressing_style": "path"}),
        **transport,
    )
