"""Uploads (media) on S3, as salt-django serves them: the default storage of
a project whose pillar says ``media: {backend: s3}`` (salt_django_settings).

The bucket is private. Users never reach it: the app server's Nginx answers
``/media/<name>`` by proxying an anonymous GET to the bucket (which only
the app and worker servers may reach), so a file's URL is ``MEDIA_URL`` +
its name on every domain of the project, never the bucket's own address and
never a presigned URL (which would expire in pages that caches hold, and
would make the storage server a public origin).

Imported only when the backend is s3, so that django-storages and boto3 are
needed only there (salt-django adds them to the virtualenv).
"""

import mimetypes
from typing import Any

from django.conf import settings
from django.utils.encoding import filepath_to_uri
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class MediaStorage(S3Storage):
    """django-storages' S3 storage whose URLs are ``MEDIA_URL`` + name (served through Nginx)."""

    def get_object_parameters(self, name: str) -> dict[str, Any]:
        """The object's Content-Type from its name, as Nginx types a local file.

        django-storages would store the type the uploading browser claimed
        (``content.content_type``), so a user could have ``x.png`` served as
        ``text/html``. Nginx then decides inline or attachment by this type.
        """
        params = dict(super().get_object_parameters(name))
        params.setdefault("ContentType", mimetypes.guess_type(name)[0] or "application/octet-stream")
        return params

    def url(self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None) -> str:
        """``MEDIA_URL`` + the stored name, percent-encoded: no bucket address, no signature."""
        return f"{settings.MEDIA_URL.rstrip('/')}/{filepath_to_uri(clean_name(name)).lstrip('/')}"
