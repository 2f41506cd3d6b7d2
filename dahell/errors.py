"""dahell's exceptions, one root, each caught where it can be answered.

DahellError
├── ConfigError          a configuration value is missing, unknown or of the wrong type
├── DatabaseUnavailable  PostgreSQL cannot be reached or started
│   └── MigrationError   no migration found, or an applied one was changed afterwards
├── InputUnreadable      a file given to the loader cannot be opened or read
├── InvalidParameter     a request or filter value that cannot be used (names the parameter)
├── StageParked          a stage needs a human (base class of the next three)
│   ├── CredentialsError wrong or missing Dropi credentials, two-factor accounts
│   ├── ModelNotFound    the ONNX model folder or its manifest is missing or unusable
│   └── ModelMismatch    the model's dimension does not match the database column
└── RecordRejected       one input record could not be loaded (carries a reason code)
"""

from __future__ import annotations


class DahellError(Exception):
    """Root of every error dahell raises on purpose."""


class ConfigError(DahellError):
    """The configuration file or environment holds an invalid value."""


class DatabaseUnavailable(DahellError):
    """PostgreSQL could not be reached, started or migrated."""


class MigrationError(DatabaseUnavailable):
    """The migrations cannot be applied as they are: none found, or an applied one changed."""


class InputUnreadable(DahellError):
    """A file given to the loader cannot be opened or read."""


class InvalidParameter(DahellError):
    """A request or research filter value that cannot be used; `parameter` names it."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"invalid {parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


class StageParked(DahellError):
    """A stage cannot run until a human fixes something; the reason says what."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class CredentialsError(StageParked):
    """Dropi refused the credentials, or they are missing, or the account needs two-factor login."""


class ModelNotFound(StageParked):
    """The ONNX model folder is missing or unusable."""


class ModelMismatch(StageParked):
    """The model's output dimension does not fit the embeddings column."""


class RecordRejected(DahellError):
    """One record was refused; `reason` is a stable code from `dahell.reasons`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
