"""Keyed hashes of subject keys and search values: the log never holds the plaintext.

HMAC-SHA256 under the ledger key (OVERSIGHT_LEDGER_KEY, by default the audit
key), truncated to 128 bits and written as 32 hex digits. The message names
the subject id and, for a `lookups` column, the column, so the same text in
two roles (an SSN and a phone number, two subjects' keys) never shares a hash:

    HMAC(key, subject_id \\x00 column \\x00 value)     column = "" for the key

A key read from the result (`seen`) and the same key searched for
(`looked_up` on the key or a `via` column) hash alike, which is what lets a
report find both. Values are compared as the server writes them in text
(`42`, not `0042`); a rotated key makes older records findable only with the
old key, which reports accept as well (docs/ledger.md).
"""

from __future__ import annotations

import hmac

# Without any configured key the ledger still hashes, under this fixed key:
# the log then hides values from a casual reader but not from a guesser.
DEFAULT_KEY = b"oversight-ledger"


def subject_hash(key: bytes, subject: str, value: str, column: str = "") -> str:
    """The ledger hash of `value` as subject `subject`'s key, or as a search on `column`."""
    msg = b"\x00".join((subject.encode(), column.encode(), value.encode("utf-8", "surrogatepass")))
    # hmac.digest: OpenSSL's one-shot HMAC, about twice as fast as hmac.new(...).hexdigest()
    # for the same 128 bits; the result hashes every row a bulk read returns.
    return hmac.digest(key, msg, "sha256")[:16].hex()
