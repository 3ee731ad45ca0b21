"""What the app is started with, and the typed keys its parts are found under."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptomon.config import ARCHIVE_DIR_NEEDED, Config, ConfigError, ProviderConfig
from cryptomon.events.log import is_postgres_url, mask_url


@dataclass(frozen=True, slots=True)
class Settings:
    config: Config
    # A SQLite file, or a postgresql:// URL (its password a secret: see `database_location`).
    database: Path | str = field(repr=False)
    host: str
    port: int
    # Where this instance probes from: `serve --region`, else `[instance] region`; fixed
    # for the process's life (a reload does not move an instance to another region).
    region: str | None = None
    # Secrets: kept out of repr so no log line or traceback can show them.
    api_token: str | None = field(default=None, repr=False)
    # With one, every read but the open routes needs it or the API token (authorization.py).
    read_token: str | None = field(default=None, repr=False)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    # False: nothing is probed on a schedule (jobs still run when triggered).
    probing: bool = True
    # The file a reload reads again (`serve` names the bundled catalogue's when no --config
    # is given); None: none, a reload changes nothing.
    config_path: Path | None = None
    providers_by_name: dict[str, ProviderConfig] = field(init=False, repr=False)

    @property
    def snapshot_owner(self) -> str:
        """Whose snapshot rows this instance keeps: `[instance] name`, else its host and
        port (two instances on one host listen on two ports)."""
        name = self.config.instance.name
        return name if name is not None else f"{socket.gethostname()}:{self.port}"

    def __post_init__(self) -> None:
        by_name = {provider.name: provider for provider in self.config.providers}
        object.__setattr__(self, "providers_by_name", by_name)  # frozen: set here, or by
        # a reload (`adopt`)

    def adopt(self, config: Config) -> None:
        """A reload's configuration (its providers and thresholds; see reload.py): what
        reads `config` from here on sees it. Host, port, database and token stay."""
        object.__setattr__(self, "config", config)
        self.__post_init__()

    @property
    def database_location(self) -> str:
        """The database as it may be shown: a path, or a URL without its password."""
        return mask_url(self.database) if isinstance(self.database, str) else str(self.database)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        database: Path | str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        environ: Mapping[str, str] = os.environ,
        probing: bool = True,
        config_path: Path | None = None,
    ) -> Settings:
        """Flags win over the file; the tokens come from the env vars the file names."""
        api_token = environ.get(config.server.api_token_env) or None
        target = database if database is not None else _storage_target(config.storage.target)
        _check_archive(config, target)
        return cls(
            config=config,
            database=target,
            host=host if host is not None else config.server.host,
            port=port if port is not None else config.server.port,
            region=region if region is not None else config.instance.region,
            api_token=api_token,
            read_token=_read_token(config, environ, api_token),
            environ=environ,
            probing=probing,
            config_path=config_path,
        )


def _read_token(config: Config, environ: Mapping[str, str], api_token: str | None) -> str | None:
    """The read token from the variable `server.read_token_env` names. Named but unset,
    or the API token itself, is refused: a deployment that asked for closed reads must
    not start with open ones, nor hand its readers the right to write."""
    server = config.server
    if server.read_token_env is None:
        return None
    token = environ.get(server.read_token_env) or None
    where = f"{config.source}: server.read_token_env"
    if token is None:
        raise ConfigError(
            [
                f"{where}: {server.read_token_env} is not set: set it to the read token,"
                " or leave read_token_env out to keep reads open"
            ]
        )
    if token == api_token:
        raise ConfigError(
            [
                f"{where}: {server.read_token_env} holds the API token"
                f" ({server.api_token_env}): a read token must be another, or readers could"
                " write"
            ]
        )
    return token


def _storage_target(text: str) -> Path | str:
    return text if is_postgres_url(text) else Path(text)


def _check_archive(config: Config, database: Path | str) -> None:
    """With archiving on, the segments need a directory this process can write: created
    now if missing, and tried with a file, so a mistake shows at start, not at the first
    night's archiving."""
    storage = config.storage
    if storage.archive_after is None:
        return
    where = f"{config.source}: storage.archive_dir"
    directory = storage.archive_path
    if directory is None:
        if isinstance(database, str):  # --db named a PostgreSQL log the file did not
            raise ConfigError([f"{where}: {ARCHIVE_DIR_NEEDED}"])
        return  # beside the SQLite file, as ever
    if directory.exists() and not directory.is_dir():
        raise ConfigError([f"{where}: {directory} is not a directory"])
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(
            [f"{where}: cannot write archive segments to {directory}: {exc.strerror}"]
        ) from None
