"""Groups and attributes from an LDAP directory, and the password check by a bind as the user.

The user's entry is found with `ldap_user_filter` under `ldap_base_dn`
(the user name escaped per RFC 4515, so `*)(uid=*` is a literal name, not
a filter). Its `ldap_group_attribute` values become groups (a group DN
gives the value of its first RDN: `cn=analysts,ou=groups,...` ->
`analysts`) and the attributes of `ldap_attributes` become rule attributes.

Every connection is encrypted: ldaps://, or ldap:// with StartTLS (refused
if the server does not do it), with the certificate checked against
`ldap_ca_file` and the host name; only ldapi:// (a local socket) is plain.
ldap3 is synchronous: it runs in a small pool of its own threads, with
connect and receive timeouts, so a slow directory holds a thread for at
most `identity_timeout`, never the event loop, and a full pool makes
logins wait (and time out), not the sessions already running.

Anything unexpected refuses the login (IdentityUnavailable, 28000) with a
reason that never carries a password: the directory down or slow, the
search refused, more than one entry matching, an attribute with several
values. A user the directory does not know gets nothing from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPInvalidDnError, LDAPSocketReceiveError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from proxy.identity import Identity, from_source
from proxy.idsrc.resolver import IdentityUnavailable
from proxy.settings import Settings

SOURCE = "ldap"
_WORKERS = 4  # concurrent directory requests; more logins wait their turn (and time out)


class LdapSource:
    def __init__(self, settings: Settings) -> None:
        assert settings.ldap_url and settings.ldap_base_dn  # checked by the settings
        self.url = settings.ldap_url
        self.base_dn = settings.ldap_base_dn
        self.bind_dn = settings.ldap_bind_dn
        self._bind_password = settings.ldap_bind_password
        self.user_filter = settings.ldap_user_filter
        self.group_attribute = settings.ldap_group_attribute
        self.attributes = settings.ldap_attribute_map
        self.timeout = settings.identity_timeout
        scheme = self.url.partition("://")[0].lower()
        self.starttls = scheme == "ldap"
        self.tls = None
        if scheme != "ldapi":
            self.tls = Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=settings.ldap_ca_file,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="oversight-ldap")

    def user_filter_for(self, user: str) -> str:
        """The search filter for `user`, the name escaped (RFC 4515)."""
        return self.user_filter.replace("{user}", escape_filter_chars(user))

    async def lookup(self, user: str) -> Identity:
        """The user's groups and attributes (empty if the directory does not know the user)."""
        entry = await self._run(self._find, user)
        if entry is None:
            return Identity()
        return self._identity(entry)

    async def check_password(self, user: str, password: str) -> bool:
        """True if a simple bind as the user's entry succeeds with `password`."""
        if not password:  # an empty password is an unauthenticated bind: it "succeeds"
            return False
        return bool(await self._run(self._bind_as, user, password))

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise self._timed_out() from None
        except IdentityUnavailable:
            raise
        except Exception as e:  # whatever ldap3 or ssl raise: refused, by its type only
            raise _unavailable(f"unexpected answer ({type(e).__name__})") from None

    def _timed_out(self) -> IdentityUnavailable:
        return _unavailable(f"did not answer in {self.timeout:g}s")

    # -- in the worker threads -------------------------------------------------

    def _connect(self, dn: str | None, password: str | None) -> Connection:
        server = Server(self.url, tls=self.tls, get_info=NONE, connect_timeout=self.timeout)
        conn = Connection(
            server,
            user=dn,
            password=password,
            # A backstop that frees the thread soon after `_run` gave up (ldap3 wants an int).
            receive_timeout=math.ceil(self.timeout) + 1,
            read_only=True,
            raise_exceptions=False,
        )
        try:
            conn.open()
            tls_ok = not self.starttls or conn.start_tls()
        except LDAPSocketReceiveError:
            _close(conn)
            raise self._timed_out() from None
        except LDAPException as e:
            _close(conn)
            raise _unavailable(f"cannot connect ({type(e).__name__})") from None
        if not tls_ok:
            _close(conn)
            raise _unavailable("StartTLS refused by the directory")
        return conn

    def _find(self, user: str) -> dict[str, Any] | None:
        secret = self._bind_password.get_secret_value() if self._bind_password else None
        conn = self._connect(self.bind_dn, secret)
        try:
            if self.bind_dn and not conn.bind():
                raise _unavailable(f"bind as {self.bind_dn} refused ({_result(conn)})")
            wanted = [*self.attributes, *([self.group_attribute] if self.group_attribute else [])]
            ok = conn.search(
                self.base_dn,
                self.user_filter_for(user),
                SUBTREE,
                attributes=wanted or ["1.1"],
                size_limit=2,
                time_limit=max(1, int(self.timeout)),
            )
            entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if len(entries) > 1:
                raise _unavailable(f"more than one directory entry matches user {user!r}")
            if not ok and conn.result.get("result") != 0:
                if conn.result.get("result") == 32:  # noSuchObject: the base DN is empty
                    return None
                raise _unavailable(f"search failed ({_result(conn)})")
            return entries[0] if entries else None
        except LDAPSocketReceiveError:
            raise self._timed_out() from None
        except LDAPException as e:
            raise _unavailable(f"search failed ({type(e).__name__})") from None
        finally:
            _close(conn)

    def _bind_as(self, user: str, password: str) -> bool:
        entry = self._find(user)
        # An unknown user costs the same bind (to a DN that cannot exist), so the
        # time a refusal takes does not tell who is in the directory.
        dn = str(entry["dn"]) if entry is not None else f"cn=oversight-no-such-user,{self.base_dn}"
        conn = self._connect(dn, password)
        try:
            if conn.bind():
                return entry is not None
            if conn.result.get("result") == 49:  # invalidCredentials
                return False
            raise _unavailable(f"bind as the user failed ({_result(conn)})")
        except LDAPException as e:
            raise _unavailable(f"bind as the user failed ({type(e).__name__})") from None
        finally:
            _close(conn)

    def _identity(self, entry: dict[str, Any]) -> Identity:
        raw = entry.get("attributes") or {}
        if not isinstance(raw, Mapping):
            raise _unavailable("the directory's answer is not an entry")
        values = {k.lower(): v if isinstance(v, list) else [v] for k, v in raw.items()}
        groups = frozenset(
            _group_name(v) for v in values.get(self.group_attribute.lower(), []) if v
        )
        attrs: dict[str, str] = {}
        for ldap_name, rule_name in self.attributes.items():
            got = [str(v) for v in values.get(ldap_name.lower(), []) if str(v)]
            if len(got) > 1:
                raise _unavailable(
                    f"attribute {ldap_name} has {len(got)} values; a rule attribute takes one"
                )
            if got:
                attrs[rule_name] = got[0]
        return from_source(SOURCE, groups, attrs)


def _group_name(value: Any) -> str:
    """A group DN's first RDN value (`cn=analysts,ou=groups` -> `analysts`); else the value."""
    text = str(value)
    try:
        rdns = parse_dn(text)
    except LDAPInvalidDnError:
        return text
    return str(rdns[0][1]) if rdns else text


def _close(conn: Connection) -> None:
    """Unbind and close; a connection that is already broken has nothing more to say."""
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()


def _result(conn: Connection) -> str:
    r = conn.result or {}
    return f"{r.get('description', 'error')}"


def _unavailable(reason: str) -> IdentityUnavailable:
    return IdentityUnavailable(f"oversight: LDAP directory: {reason}; login refused")
