"""Every reason code dahell records, in one place. Codes are stable: scripts match on them.

A code with a suffix (`invalid_field:<name>`, `db_error:<sqlstate>`, `http_<status>`) is listed
by its prefix; the suffix names the field, the PostgreSQL SQLSTATE or the HTTP status.
"""

from __future__ import annotations

#: Why an input line (or a record inside it) was not loaded: the `rejects.reason` column.
REJECT_REASONS: dict[str, str] = {
    "blank_line": "the line is empty or only whitespace",
    "line_too_long": "the line is longer than loader.max_line_bytes (only its start is kept)",
    "truncated_line": "the file's last line has no newline and is not complete JSON "
    "(a writer stopped mid-line); left for later while the file is younger than "
    "loader.incomplete_line_grace_s",
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object (or a list item is not one)",
    "api_error": "an API response with isSuccess false (its message is in the detail)",
    "empty_response": "an API response with no products in it",
    "missing_id": "the product has no id",
    "invalid_id": "the product id is not a positive integer",
    "invalid_field:": "a field has a value of the wrong type or out of range "
    "(NaN, infinity, negative, non-integer stock); the suffix names the field",
    "internal_error": "the record model failed on this line (a bug: the detail names the "
    "exception); the line is kept in rejects so it can be loaded again once fixed",
    "db_error:": "PostgreSQL refused the record; the suffix is the SQLSTATE "
    "(e.g. db_error:22P05 for text it cannot store)",
}

#: Why an image could not be embedded: the `embedding_jobs.reason` column.
EMBED_FAILURE_REASONS: dict[str, str] = {
    "no_image": "the product has no image URL",
    "invalid_url": "the image URL cannot be parsed",
    "scheme_not_allowed": "the URL is not http or https (file://, data:, ...)",
    "host_not_allowed": "the URL's host is not in vectorizer.allowed_image_hosts "
    "(refused before any connection)",
    "address_not_allowed": "the host resolved to a loopback, private, link-local, multicast, "
    "unspecified or reserved address (refused at connect time, every redirect too); allowed "
    "only when vectorizer.allowed_image_hosts names the address itself as an IP",
    "http_": "the server answered with this HTTP status (http_404, http_500, ...)",
    "timeout": "the download took longer than vectorizer.download_timeout_s",
    "connection_error": "the connection failed (DNS, refused, reset)",
    "too_many_redirects": "more redirects than vectorizer.max_redirects",
    "too_large": "the body is larger than vectorizer.max_image_bytes",
    "not_an_image": "the body is not an image format we decode (HTML, JSON, ...)",
    "decode_error": "the image is corrupt or truncated",
    "too_many_pixels": "the image is larger than vectorizer.max_image_pixels "
    "(a decompression bomb guard)",
    "decoded_too_large": "decoding the image would hold more memory than one image may "
    "(vectorizer.max_decoded_bytes, 280 MB by default): width x height x the bytes per pixel of "
    "its decoded mode, plus the RGB working copy; so an image within "
    "vectorizer.max_image_pixels can still be refused (a large WebP, whose decoder holds extra "
    "copies; any image once max_image_pixels is raised past what that memory holds)",
    "lease_expired": "vectorizer.max_attempts workers claimed the image and none finished it "
    "(each was killed or crashed while holding it): given up, it may be what kills them",
    "internal_error": "an unexpected error while preparing this image (a bug: the log has the "
    "traceback); retried with backoff while vectorizer.max_attempts allows",
}

#: Failures retried without limit (backoff capped at vectorizer.retry_backoff_max_s): the
#: network's, not the image's. `http_5xx` stands for any 5xx status.
TRANSIENT_EMBED_FAILURES = ("timeout", "connection_error", "http_5xx", "http_408", "http_429")

#: Why an embedding was written without inference: the reason of outcome `reused`.
EMBED_REUSE_REASONS: dict[str, str] = {
    "same_url": "another product's image URL is the same and already has an embedding from "
    "this model (or is being embedded in this run): no download, no inference",
    "same_bytes": "the downloaded bytes (sha256, embedding_jobs.image_sha256) equal another "
    "product's image: no inference",
}


def is_known_reject(code: str) -> bool:
    return code in REJECT_REASONS or any(
        code.startswith(prefix) for prefix in REJECT_REASONS if prefix.endswith(":")
    )
