"""Choose the storage backend from settings."""

from __future__ import annotations

from capability_service.core.config import Settings
from capability_service.storage.base import Storage
from capability_service.storage.local import LocalStorage


def create_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        from capability_service.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.local_storage_dir, settings.public_base_url)
