"""Oversight's settings: environment (`OVERSIGHT_*`), `oversight.toml`, or `--config FILE`.

The names are the contract in DESIGN.md. Validation here is what lets
`oversight serve` refuse bad settings with one clear line before binding.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def parse_address(value: str, *, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host` or `:port` -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_s = rest.lstrip(":") or str(default_port)
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif value.count(":") > 1:
        host, port_s = value, str(default_port)
    else:
        host, port_s = value, str(default_port)
    host = host or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"bad port in address {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in address {value!r}")
    if not host.replace("-", "").replace(".", "").replace("_", "").isalnum():
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"bad host in address {value!r}") from None
    return host, port


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class Upstream:
    """A libpq URI split into what the proxy needs to connect."""

    def __init__(self, uri: str) -> None:
        u = urlsplit(uri)
        if u.scheme not in ("postgresql", "postgres"):
            raise ValueError("the upstream must be a postgresql:// URI")
        self.host = unquote(u.hostname or "127.0.0.1")
        self.port = u.port or 5432
        self.user = unquote(u.username or "")
        self.password = unquote(u.password or "")
        self.database = unquote(u.path.lstrip("/")) or self.user
        params = dict(p.split("=", 1) for p in u.query.split("&") if "=" in p)
        self.sslmode = params.get("sslmode", "prefer")
        if self.sslmode not in (
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ):
            raise ValueError(f"unknown sslmode {self.sslmode!r} in the upstream URI")
        self.sslrootcert = params.get("sslrootcert")
        self.uri = uri

    def dsn(self, user: str | None = None, password: str | None = None) -> str:
        """A URI for asyncpg, for catalog reads and health checks."""
        return self.uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OVERSIGHT_", toml_file="oversight.toml", extra="forbid"
    )

    listen: str = "127.0.0.1:6432"
    upstream: str | None = None
    rules: str = "rules/"
    audit_log: str = "oversight-audit.jsonl"
    audit_key: SecretStr | None = None
    audit_redact: bool = True
    audit_stdout: bool = False
    audit_fail_open: bool = False
    audit_fsync_interval: float = Field(1.0, ge=0)
    audit_rotate_bytes: int = Field(100 * 2**20, gt=0)
    auth: Literal["passthrough", "proxy"] = "passthrough"
    users_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_listen: str = "127.0.0.1:9187"
    admin_token: SecretStr | None = None
    redis_url: str | None = None
    redis_fail_closed: bool = False
    hash_salt: SecretStr | None = None
    max_clients: int = Field(1000, gt=0)
    max_message_size: int = Field(1 << 30, ge=1024)
    startup_timeout: float = Field(10.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)
    catalog_refresh: float = Field(300.0, ge=0)
    read_size: int = Field(256 * 1024, ge=4096)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_address(v, default_port=6432)
        return v

    @field_validator("admin_listen")
    @classmethod
    def _admin(cls, v: str) -> str:
        if v:
            parse_address(v, default_port=9187)
        return v

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str | None) -> str | None:
        if v:
            Upstream(v)
        return v or None

    @model_validator(mode="after")
    def _files(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{name}: cannot read {path}")
        if self.auth == "proxy" and not self.users_file:
            raise ValueError(
                "auth = proxy needs users_file (SCRAM verifiers from `oversight passwd`)"
            )
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_address(self.listen, default_port=6432)

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return parse_address(self.admin_listen, default_port=9187) if self.admin_listen else None

    @property
    def upstream_target(self) -> Upstream:
        if not self.upstream:
            raise ValueError("no upstream: set OVERSIGHT_UPSTREAM to a postgresql:// URI")
        return Upstream(self.upstream)


def load_settings(config: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and a TOML file (`--config`, else ./oversight.toml)."""
    if config is not None and not Path(config).is_file():
        raise ValueError(f"config file {config} not found")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(
            env_prefix="OVERSIGHT_", toml_file=config or "oversight.toml", extra="forbid"
        )

    return _FromFile(**overrides)
