"""Oversight's settings: environment (`OVERSIGHT_*`), `oversight.toml`, or `--config FILE`.

The names are the contract in DESIGN.md. Validation here is what lets
`oversight serve` refuse bad settings with one clear line before binding.
"""

from __future__ import annotations

import os
import re
import textwrap
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

from proxy.address import parse_address, parse_optional_address
from proxy.ledger.hashing import DEFAULT_KEY as DEFAULT_LEDGER_KEY

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
        if self.sslmode not in SSLMODES:
            raise ValueError(f"unknown sslmode {self.sslmode!r} in the upstream URI")
        self.sslrootcert = params.get("sslrootcert")
        self.uri = uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OVERSIGHT_", toml_file="oversight.toml", extra="forbid"
    )

    listen: str = Field(
        "127.0.0.1:6432", description="Address clients connect to: `host:port`, `[v6]:port`."
    )
    upstream: str | None = Field(
        None,
        description="The PostgreSQL to protect, a libpq URI (`sslmode` honoured). Its user is "
        "Oversight's own account: catalog reads, health checks, and sessions in `proxy` auth "
        "mode. Required by `serve`.",
    )
    rules: str = Field("rules/", description="Rule file or directory of `*.yaml`.")
    audit_log: str = Field(
        "oversight-audit.jsonl", description="Audit log file; empty turns the file off."
    )
    audit_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for the audit hash chain (plain SHA-256 without)."
    )
    ledger_key: SecretStr | None = Field(
        None,
        description="HMAC key for the subject ledger's hashes (default: the audit key); "
        "see docs/ledger.md before rotating it.",
    )
    ledger_previous_keys: list[SecretStr] = Field(
        [],
        description="Older ledger keys reports still accept (records hashed before a key "
        "rotation), a JSON list in the environment; docs/ledger.md.",
    )
    audit_redact: bool = Field(
        True, description="Replace literals in `sql` and `rewritten` by `?` in the audit log."
    )
    audit_stdout: bool = Field(False, description="Also write audit records to stdout.")
    audit_fail_open: bool = Field(
        False,
        description="Keep serving when the audit log cannot be written (default: refuse "
        "statements).",
    )
    audit_fsync_interval: float = Field(
        1.0, ge=0, description="Seconds between fsyncs of the audit log (0: every write)."
    )
    audit_rotate_bytes: int = Field(
        100 * 2**20, gt=0, description="Rotate the audit log past this size (also daily)."
    )
    auth: Literal["passthrough", "proxy"] = Field(
        "passthrough",
        description="`passthrough`: the upstream checks the client's credentials. `proxy`: "
        "Oversight checks SCRAM verifiers from `users_file` (or OIDC tokens) and connects as "
        "the upstream URI's user.",
    )
    users_file: str | None = Field(
        None, description="SCRAM verifiers for `proxy` auth, written by `oversight passwd`."
    )
    tls_cert: str | None = Field(None, description="Client-side TLS certificate (PEM).")
    tls_key: str | None = Field(None, description="Client-side TLS private key (PEM).")
    admin_listen: str = Field(
        "127.0.0.1:9187",
        description="Address of /metrics, /healthz, /readyz and the dashboard, as `listen`; "
        "empty: off.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for the dashboard and its API (off without one)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for budgets, detector history and cancel keys shared by "
        "several instances; in memory without.",
    )
    redis_fail_closed: bool = Field(
        False,
        description="Refuse statements while Redis is unreachable (default: per-instance limits).",
    )
    hash_salt: SecretStr | None = Field(None, description="Salt for the `hash` column mask.")
    max_clients: int = Field(1000, gt=0, description="Concurrent client connections.")
    max_message_size: int = Field(
        1 << 30, ge=1024, description="Largest protocol message accepted from a client."
    )
    startup_timeout: float = Field(
        60.0, gt=0, description="Seconds a client has to finish startup and authentication."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds sessions get to finish after SIGTERM."
    )
    catalog_refresh: float = Field(
        300.0,
        ge=0,
        description="Seconds between catalog refreshes of every database sessions use (also "
        "after DDL, and when a statement names a relation the catalog does not know).",
    )
    read_size: int = Field(256 * 1024, ge=4096, description="Socket read size in bytes.")
    groups_from_roles: bool = Field(
        False,
        description="Every upstream role the user is a member of (recursively) becomes a group, "
        "read with Oversight's own account (docs/identity.md).",
    )
    identity_cache: float = Field(
        60.0,
        ge=0,
        description="Seconds a user's groups and attributes from upstream roles or the LDAP "
        "directory are cached; a revoke takes effect within this (0: ask at every login).",
    )
    oidc_issuer: str | None = Field(
        None,
        description="`proxy` auth: accept OIDC tokens (JWT as the password, over TLS) from this "
        "issuer (`iss`).",
    )
    oidc_audience: str | None = Field(None, description="The audience (`aud`) tokens must name.")
    oidc_jwks: str | None = Field(
        None,
        description="The issuer's key set: a JWKS file path or an https URL (fetched again on an "
        "unknown key id).",
    )
    oidc_jwks_min_refresh: float = Field(
        30.0, ge=0, description="Least seconds between two reads of the key set."
    )
    oidc_user_claim: str = Field(
        "sub", description="Token claim that must equal the user logging in."
    )
    oidc_groups_claim: str = Field("groups", description="Token claim whose names become groups.")
    login_max_failures: int = Field(
        10,
        ge=0,
        description="`proxy` auth: failed logins allowed per client address and per user within "
        "`login_failure_window`; then refused (28000) until the window passes (0: no limit).",
    )
    login_failure_window: float = Field(
        60.0, gt=0, description="Seconds over which failed logins are counted."
    )
    identity_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds an identity source (upstream roles, the LDAP directory, the OIDC key "
        "set) has to answer; past it the login is refused (28000).",
    )
    ldap_url: str | None = Field(
        None,
        description="LDAP directory for groups and attributes (and, in `proxy` auth mode, the "
        "password check by a bind as the user): `ldaps://host`, `ldap://host` (StartTLS, "
        "required) or `ldapi://` (docs/identity.md).",
    )
    ldap_base_dn: str | None = Field(
        None, description="Where users are searched (subtree), e.g. `ou=people,dc=example,dc=org`."
    )
    ldap_bind_dn: str | None = Field(
        None, description="DN Oversight binds as to search the directory (none: anonymous)."
    )
    ldap_bind_password: SecretStr | None = Field(None, description="Password of `ldap_bind_dn`.")
    ldap_user_filter: str = Field(
        "(uid={user})",
        description="Search filter for the user's entry; `{user}` is replaced by the user name, "
        "escaped (RFC 4515). More than one match refuses the login.",
    )
    ldap_group_attribute: str = Field(
        "memberOf",
        description="Attribute of the user's entry naming its groups; a group DN gives the value "
        "of its first RDN (`cn=analysts,ou=groups,...` -> `analysts`). Empty: no groups.",
    )
    ldap_attributes: str = Field(
        "",
        description="LDAP attributes that become rule attributes, `ldap=rule` pairs, e.g. "
        "`departmentNumber=region,manager=supervisor`.",
    )
    ldap_ca_file: str | None = Field(
        None,
        description="CA certificates (PEM) the directory's certificate must chain to "
        "(none: the system's).",
    )

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

    # Every address setting goes through proxy/address.py here, so a value the
    # listener could not use is refused before anything binds.
    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_address(v)
        return v

    @field_validator("admin_listen")
    @classmethod
    def _admin(cls, v: str) -> str:
        parse_optional_address(v)
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
        oidc = [self.oidc_issuer, self.oidc_audience, self.oidc_jwks]
        if any(oidc) and not all(oidc):
            raise ValueError("oidc_issuer, oidc_audience and oidc_jwks must be set together")
        if any(oidc) and self.auth != "proxy":
            raise ValueError("OIDC tokens need auth = proxy (Oversight checks the token)")
        if self.oidc_jwks and self.oidc_jwks.startswith("http://"):
            raise ValueError("oidc_jwks: an http:// key set could be swapped in transit; use https")
        if any(oidc) and not self.tls_cert:
            raise ValueError("OIDC tokens need tls_cert and tls_key: tokens travel only over TLS")
        if self.auth == "proxy" and not self.users_file and not any(oidc) and not self.ldap_url:
            raise ValueError(
                "auth = proxy needs users_file (SCRAM verifiers from `oversight passwd`), "
                "OIDC (oidc_issuer, oidc_audience, oidc_jwks) or LDAP (ldap_url)"
            )
        check_ldap(self)
        return self

    @property
    def ldap_attribute_map(self) -> dict[str, str]:
        """`ldap_attributes` parsed: LDAP attribute -> rule attribute."""
        return parse_attribute_map(self.ldap_attributes)

    @property
    def source_attributes(self) -> set[str]:
        """Rule attributes the configured identity sources can give (for `load_rules`)."""
        return set(self.ldap_attribute_map.values()) if self.ldap_url else set()

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_address(self.listen)

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return parse_optional_address(self.admin_listen)

    @property
    def upstream_target(self) -> Upstream:
        if not self.upstream:
            raise ValueError("no upstream: set OVERSIGHT_UPSTREAM to a postgresql:// URI")
        return Upstream(self.upstream)

    @property
    def ledger_secret(self) -> bytes:
        """The subject ledger's HMAC key: its own, else the audit key, else a fixed one."""
        chosen = self.ledger_key or self.audit_key
        return chosen.get_secret_value().encode() if chosen else DEFAULT_LEDGER_KEY

    @property
    def ledger_secrets(self) -> list[bytes]:
        """Every ledger key a report accepts: the current one first, then the older ones."""
        older = [k.get_secret_value().encode() for k in self.ledger_previous_keys]
        return list(dict.fromkeys([self.ledger_secret, *older]))


_LDAP_ATTR = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+")
_RULE_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_attribute_map(text: str) -> dict[str, str]:
    """`departmentNumber=region,manager=supervisor` -> {ldap attribute: rule attribute}."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        ldap, sep, rule = (x.strip() for x in pair.partition("="))
        if not sep or not _LDAP_ATTR.fullmatch(ldap) or not _RULE_ATTR.fullmatch(rule):
            raise ValueError(f"ldap_attributes: {pair!r} is not ldapAttribute=rule_attribute")
        if rule == "user" or rule in out.values():
            raise ValueError(f"ldap_attributes: rule attribute {rule!r} given twice or reserved")
        out[ldap] = rule
    return out


def check_ldap(s: Settings) -> None:
    """Refuse LDAP settings that could not work, or would send secrets in clear."""
    if not s.ldap_url:
        return
    scheme = s.ldap_url.partition("://")[0].lower()
    if scheme not in ("ldap", "ldaps", "ldapi"):
        raise ValueError("ldap_url must be ldaps://, ldap:// (StartTLS) or ldapi://")
    if not s.ldap_base_dn:
        raise ValueError("ldap_url needs ldap_base_dn (where users are searched)")
    if "{user}" not in s.ldap_user_filter or not s.ldap_user_filter.startswith("("):
        raise ValueError("ldap_user_filter must be a filter in parentheses containing {user}")
    if bool(s.ldap_bind_dn) != bool(s.ldap_bind_password):
        raise ValueError("ldap_bind_dn and ldap_bind_password must be set together")
    if s.ldap_group_attribute and not _LDAP_ATTR.fullmatch(s.ldap_group_attribute):
        raise ValueError("ldap_group_attribute: not an attribute name")
    parse_attribute_map(s.ldap_attributes)
    if s.ldap_ca_file and not os.access(s.ldap_ca_file, os.R_OK):
        raise ValueError(f"ldap_ca_file: cannot read {s.ldap_ca_file}")
    if s.auth == "proxy" and not s.tls_cert:
        raise ValueError(
            "LDAP passwords in auth = proxy need tls_cert and tls_key: passwords travel only "
            "over TLS"
        )


def settings_table() -> str:
    """The settings reference as a Markdown table, generated so the docs cannot drift."""
    rows = ["| setting | env | default | meaning |", "|---|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = f.default
        shown = "none" if default is None else f"`{default}`" if default != "" else "empty"
        rows.append(f"| `{name}` | `OVERSIGHT_{name.upper()}` | {shown} | {f.description or ''} |")
    return "\n".join(rows)


def settings_help() -> str:
    """The same reference as plain text, for `oversight serve --help`."""
    lines = ["settings (environment, then --config FILE or ./oversight.toml):"]
    for name, f in Settings.model_fields.items():
        default = "none" if f.default is None else repr(f.default) if f.default != "" else "empty"
        lines.append(f"  {name} (OVERSIGHT_{name.upper()}, default {default})")
        lines += textwrap.wrap(
            f.description or "", 78, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)


def load_settings(config: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and a TOML file (`--config`, else ./oversight.toml)."""
    if config is not None and not Path(config).is_file():
        raise ValueError(f"config file {config} not found")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(
            env_prefix="OVERSIGHT_", toml_file=config or "oversight.toml", extra="forbid"
        )

    return _FromFile(**overrides)
