"""The one exception tree of tunehub.

Every class also inherits the builtin a caller would naturally catch (as
huggingface_hub does: ``RepositoryNotFoundError`` is an ``OSError``)::

    TunehubError
    ├── ConfigError(ValueError)              tunehub.toml or an option is wrong
    ├── DefinitionError(ValueError)          a definition cannot be used
    │   ├── UnknownDefinitionError(LookupError)
    │   ├── InvalidDefinitionError           it has validation errors (listed)
    │   ├── ReferenceCycleError
    │   └── UnsupportedArchitectureError     tunehub cannot generate/quantize this architecture
    ├── ConcurrentEditError(RuntimeError)    the file changed since it was read
    ├── Interrupted                          stopped on request (Ctrl-C, a cancelled job); partials kept
    ├── HubError(OSError)                    talking to a Hub or an http(s) server
    │   ├── HubAuthError                     401/403: log in or accept the terms
    │   ├── HubNotFoundError                 404: names the URL
    │   ├── IntegrityError                   bytes do not match sha256 / size
    │   ├── OfflineError                     HF_HUB_OFFLINE and the file is missing
    │   └── DiskFullError                    not enough free space
    ├── QuantizationError(ValueError)
    ├── DaemonError(RuntimeError)
    │   └── DaemonLockedError                another daemon holds the home
    ├── InferenceError(RuntimeError)
    └── ServerError(RuntimeError)            the bundled Hub server's own errors

Messages are meant for users: they name the file, the key or the URL and say
what to do. They never contain a token.
"""

from __future__ import annotations


class TunehubError(Exception):
    """Base of every error tunehub raises on purpose (exit code 1 in the CLI)."""


class ConfigError(TunehubError, ValueError):
    """The configuration (tunehub.toml, environment, options) is wrong."""


class DefinitionError(TunehubError, ValueError):
    """A definition cannot be used as asked."""


class UnknownDefinitionError(DefinitionError, LookupError):
    """No definition has this id."""


class InvalidDefinitionError(DefinitionError):
    """The definition exists but has validation errors."""


class ReferenceCycleError(DefinitionError):
    """String references between definitions form a cycle."""


class UnsupportedArchitectureError(DefinitionError):
    """tunehub cannot generate with (or quantize) this architecture; it can still list, pull, publish it."""


class ConcurrentEditError(TunehubError, RuntimeError):
    """A file changed on disk since it was read; re-read and retry."""


class Interrupted(TunehubError):
    """Stopped on request (Ctrl-C, a cancelled job); partial downloads and their records are kept."""


class HubError(TunehubError, OSError):
    """Talking to a Hub (or any http(s) server) failed."""


class HubAuthError(HubError):
    """401/403: the user must log in or accept the repo's terms."""


class HubNotFoundError(HubError):
    """404: the repo, revision or file does not exist."""


class IntegrityError(HubError):
    """Downloaded or stored bytes do not match the expected sha256 or size."""


class OfflineError(HubError):
    """Offline mode is on and the file is not present locally."""


class DiskFullError(HubError):
    """Not enough free disk space to go on."""


class QuantizationError(TunehubError, ValueError):
    """A file cannot be quantized as asked."""


class DaemonError(TunehubError, RuntimeError):
    """The daemon cannot start or cannot do what was asked."""


class DaemonLockedError(DaemonError):
    """Another daemon already runs for this home."""


class InferenceError(TunehubError, RuntimeError):
    """A generation cannot be built or run."""


class ServerError(TunehubError, RuntimeError):
    """The bundled Hub server's storage or setup failed."""
