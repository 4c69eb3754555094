"""PostgreSQL client encodings and the Python codecs that read bytes exactly as the server does.

PostgreSQL converts a message's text from the client encoding to the server
encoding before it lexes a byte of it, so Oversight, to read a statement as
the server will, must decode it with a codec that maps every byte sequence
the server accepts to the very same characters. A codec is listed here only
if it does (tests/integration/test_encodings.py checks every single byte,
every two-byte sequence and the three- and four-byte ranges against the
server's own conversion); a sequence the codec rejects but the server would
accept is refused by the proxy (22021), which is safe, only unhelpful.

Not supported, and refused with the list below: EUC_TW and MULE_INTERNAL,
for which Python has no codec.

Four are supported with a fix-up. EUC_JP: Python's euc_jp reads seven
characters as JIS does (WAVE DASH U+301C...), the server as Microsoft does
(FULLWIDTH TILDE U+FF5E...); each of Python's seven comes from that one
sequence only, so the decoded text is translated to the server's reading,
and text to encode holding one of Python's seven is unwritable. The same
for EUC_JIS_2004 (five characters) and SHIFT_JIS_2004 (those five less two,
plus 0x5C and 0x7E, which Python reads as YEN SIGN and OVERLINE and the
server as backslash and tilde: a quote hidden behind a 0x5C reads the same
to both). BIG5: the
server reads seven pairs as U+FFFD where Python's big5 reads characters
(four of which other pairs also stand for), so a statement holding one of
those pairs as a character is refused (22P05), and the three characters
Python would write only as such a pair are unwritable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.errors import ProxyError


class EncodingError(ProxyError):
    """Text the proxy cannot read or write exactly as the server does."""


class InvalidByteSequence(EncodingError):
    """The client's bytes are not valid in its encoding (as PostgreSQL says it)."""

    sqlstate = "22021"


class Untranslatable(EncodingError):
    """A character with no equivalent the proxy can read or write exactly."""

    sqlstate = "22P05"


@dataclass(frozen=True, slots=True)
class ClientEncoding:
    """One encoding as the server names it, with the codec that reads it as the server does."""

    name: str  # PostgreSQL's name, as SHOW client_encoding says it
    codec: str  # exact Python codec
    errors: str = "strict"  # "surrogateescape" only for raw SQL_ASCII
    # Decoded characters where Python's codec and the server differ, mapped
    # to the server's reading (see EUC_JP); empty for an exact codec.
    fixes: dict[int, str] = field(default_factory=dict)
    _back: dict[int, str] = field(default_factory=dict, repr=False)
    # Two-byte characters the server reads as U+FFFD and Python as real
    # characters (see BIG5): refused where they stand as a character.
    unreadable: frozenset[bytes] = frozenset()

    @property
    def utf8(self) -> bool:
        return self.codec == "utf-8"

    def decode(self, data: bytes) -> str:
        """The text the server reads from `data`; InvalidByteSequence where it would not."""
        try:
            text = data.decode(self.codec, self.errors)
        except UnicodeDecodeError as e:
            raise InvalidByteSequence(invalid_message(self.name, data, e.start)) from None
        if self.unreadable and any(seq in data for seq in self.unreadable):
            self._check_unreadable(data)
        return text.translate(self.fixes) if self.fixes else text

    def _check_unreadable(self, data: bytes) -> None:
        # Only reached when one of the byte pairs occurs somewhere: walk the
        # characters (the bytes decoded, so a high byte always leads a pair).
        for match in _PAIRS.finditer(data):
            if match.group() in self.unreadable:
                shown = " ".join(f"0x{b:02x}" for b in match.group())
                raise Untranslatable(
                    f'oversight: character with byte sequence {shown} in encoding "{self.name}" '
                    "has no equivalent the proxy reads as the server does"
                )

    def encode(self, text: str) -> bytes:
        """`text` in this encoding; UnicodeEncodeError if the server would read it otherwise."""
        if self._back:
            text = text.translate(self._back)
        return text.encode(self.codec, self.errors)

    def read(self, data: bytes) -> str:
        """Text for reading only (bound values, results): invalid bytes become U+FFFD."""
        text = data.decode(self.codec, "replace")
        return text.translate(self.fixes) if self.fixes else text

    def write(self, text: str) -> bytes:
        """Text for the client to read (error messages): unwritable characters become `?`."""
        return self.encode_or(text, "?")

    def encode_or(self, text: str, substitute: str) -> bytes:
        try:
            return self.encode(text)
        except UnicodeEncodeError:
            return "".join(self._char(c, substitute) for c in text).encode(self.codec, self.errors)

    def _char(self, c: str, substitute: str) -> str:
        try:
            self.encode(c)
        except UnicodeEncodeError:
            return substitute
        return c.translate(self._back) if self._back else c


def invalid_message(name: str, data: bytes, start: int) -> str:
    """PostgreSQL's words: `invalid byte sequence for encoding "SJIS": 0x82 0x27`."""
    shown = " ".join(f"0x{b:02x}" for b in data[start : start + 2])
    return f'invalid byte sequence for encoding "{name}": {shown}'


_PAIRS = re.compile(rb"[\x00-\x7f]|[\x80-\xff][\x00-\xff]")


def _fixed(name: str, codec: str, fixes: dict[str, str]) -> ClientEncoding:
    # Decoding: Python's reading -> the server's. Encoding: the server's
    # reading back to the byte sequence, and Python's own reading (which
    # the server would read as something else) to a lone surrogate, which
    # no codec encodes.
    back = {ord(server): py for py, server in fixes.items()}
    back.update({ord(py): "\udcff" for py in fixes})
    return ClientEncoding(name, codec, fixes={ord(k): v for k, v in fixes.items()}, _back=back)


_EUC_JP_FIXES = {
    "\u301c": "\uff5e",  # WAVE DASH -> FULLWIDTH TILDE          (0xA1C1)
    "\u2016": "\u2225",  # DOUBLE VERTICAL LINE -> PARALLEL TO   (0xA1C2)
    "\u2212": "\uff0d",  # MINUS SIGN -> FULLWIDTH HYPHEN-MINUS  (0xA1DD)
    "\u00a2": "\uffe0",  # CENT SIGN -> FULLWIDTH CENT SIGN      (0xA1F1)
    "\u00a3": "\uffe1",  # POUND SIGN -> FULLWIDTH POUND SIGN    (0xA1F2)
    "\u00ac": "\uffe2",  # NOT SIGN -> FULLWIDTH NOT SIGN        (0xA2CC)
    "\u00a6": "\uffe4",  # BROKEN BAR -> FULLWIDTH BROKEN BAR    (0x8FA2C3)
}

# Pairs PostgreSQL's BIG5 table maps to U+FFFD; Python's big5 reads them as
# BOX DRAWINGS LIGHT LEFT, FULLWIDTH MACRON, MODIFIER LETTER LOW MACRON and
# four characters (FULLWIDTH SOLIDUS...) that other pairs also stand for.
_BIG5_UNREADABLE = ("a15a", "a1c3", "a1c5", "a1fe", "a240", "a2cc", "a2ce")

# The JIS X 0213 encodings: Python reads five as JIS does, the server as
# Microsoft does; in SHIFT_JIS_2004 also 0x5C and 0x7E, which Python reads as
# JIS X 0201 YEN SIGN and OVERLINE and the server as backslash and tilde.
_JIS_2004_FIXES = {
    "\uffe3": "\u203e",  # FULLWIDTH MACRON -> OVERLINE              (EUC 0xA1B1)
    "\u2015": "\u2014",  # HORIZONTAL BAR -> EM DASH                 (0xA1BD, SJIS 0x815C)
    "\uffe5": "\u00a5",  # FULLWIDTH YEN SIGN -> YEN SIGN            (EUC 0xA1EF)
    "\u2985": "\uff5f",  # LEFT WHITE PARENTHESIS -> FULLWIDTH ...   (0xA2D6, SJIS 0x81D4)
    "\u2986": "\uff60",  # RIGHT WHITE PARENTHESIS -> FULLWIDTH ...  (0xA2D7, SJIS 0x81D5)
}
_SJIS_2004_FIXES = {
    "\u00a5": "\\",  # YEN SIGN -> REVERSE SOLIDUS (0x5C)
    "\u203e": "~",  # OVERLINE -> TILDE (0x7E)
    **{k: v for k, v in _JIS_2004_FIXES.items() if k in "\u2015\u2985\u2986"},
}

_TABLE: tuple[ClientEncoding, ...] = (
    ClientEncoding("UTF8", "utf-8"),
    *(
        ClientEncoding(f"LATIN{n}", f"iso8859_{iso}")
        for n, iso in enumerate((1, 2, 3, 4, 9, 10, 13, 14, 15, 16), start=1)
    ),
    *(ClientEncoding(f"ISO_8859_{n}", f"iso8859_{n}") for n in (5, 6, 7, 8)),
    ClientEncoding("WIN866", "cp866"),
    ClientEncoding("WIN874", "cp874"),
    *(ClientEncoding(f"WIN{n}", f"cp{n}") for n in range(1250, 1259)),
    ClientEncoding("KOI8R", "koi8_r"),
    ClientEncoding("KOI8U", "koi8_u"),
    ClientEncoding("SJIS", "cp932"),  # the server's SJIS is Microsoft's code page 932
    ClientEncoding(
        "BIG5",
        "big5",
        # Python writes these three only as pairs the server reads as U+FFFD.
        _back={ord(c): "\udcff" for c in "\u2574\uffe3\u02cd"},
        unreadable=frozenset(bytes.fromhex(h) for h in _BIG5_UNREADABLE),
    ),
    _fixed("EUC_JP", "euc_jp", _EUC_JP_FIXES),
    _fixed("EUC_JIS_2004", "euc_jis_2004", _JIS_2004_FIXES),
    _fixed("SHIFT_JIS_2004", "shift_jis_2004", _SJIS_2004_FIXES),
    ClientEncoding("EUC_CN", "gb2312"),
    ClientEncoding("EUC_KR", "euc_kr"),
    ClientEncoding("GBK", "gbk"),
    ClientEncoding("GB18030", "gb18030"),
    ClientEncoding("UHC", "cp949"),
    ClientEncoding("JOHAB", "johab"),
)
BY_NAME: dict[str, ClientEncoding] = {e.name: e for e in _TABLE}
UTF8 = BY_NAME["UTF8"]
SUPPORTED: tuple[str, ...] = ("SQL_ASCII", *(e.name for e in _TABLE))
UNSUPPORTED: tuple[str, ...] = ("EUC_TW", "MULE_INTERNAL")

# PostgreSQL's alias table (src/common/encnames.c), keys as it normalizes them.
_ALIASES = {
    "abc": "WIN1258",
    "alt": "WIN866",
    "big5": "BIG5",
    "euccn": "EUC_CN",
    "eucjis2004": "EUC_JIS_2004",
    "eucjp": "EUC_JP",
    "euckr": "EUC_KR",
    "euctw": "EUC_TW",
    "gb18030": "GB18030",
    "gbk": "GBK",
    "iso88591": "LATIN1",
    "iso885910": "LATIN6",
    "iso885913": "LATIN7",
    "iso885914": "LATIN8",
    "iso885915": "LATIN9",
    "iso885916": "LATIN10",
    "iso88592": "LATIN2",
    "iso88593": "LATIN3",
    "iso88594": "LATIN4",
    "iso88595": "ISO_8859_5",
    "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8",
    "iso88599": "LATIN5",
    "johab": "JOHAB",
    "koi8": "KOI8R",
    "koi8r": "KOI8R",
    "koi8u": "KOI8U",
    **{f"latin{n}": f"LATIN{n}" for n in range(1, 11)},
    "mskanji": "SJIS",
    "muleinternal": "MULE_INTERNAL",
    "shiftjis": "SJIS",
    "shiftjis2004": "SHIFT_JIS_2004",
    "sjis": "SJIS",
    "sqlascii": "SQL_ASCII",
    "tcvn": "WIN1258",
    "tcvn5712": "WIN1258",
    "uhc": "UHC",
    "unicode": "UTF8",
    "utf8": "UTF8",
    "vscii": "WIN1258",
    "win": "WIN1251",
    **{f"win{n}": f"WIN{n}" for n in (*range(1250, 1259), 866, 874)},
    **{f"windows{n}": f"WIN{n}" for n in (*range(1250, 1259), 866, 874)},
    "win932": "SJIS",
    "windows932": "SJIS",
    "win936": "GBK",
    "windows936": "GBK",
    "win949": "UHC",
    "windows949": "UHC",
    "win950": "BIG5",
    "windows950": "BIG5",
}


def canonical(name: str) -> str | None:
    """PostgreSQL's name for an encoding name as SET accepts it, or None if it knows none."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def refusal(value: str) -> str | None:
    """Why client_encoding `value` cannot be followed by the proxy (None: it can)."""
    if value.strip().lower() == "default":
        return None  # SET ... TO DEFAULT: the server reports what it stands for
    name = canonical(value)
    if name in SUPPORTED:
        return None
    # A name the proxy does not know (a newer server's alias?) is refused too.
    shown = name or repr(value)
    return (
        f"client_encoding {shown} is not supported by the proxy (supported: {', '.join(SUPPORTED)})"
    )


def lookup(name: str, server_encoding: str) -> ClientEncoding | None:
    """The codec to read a session's text with, given the encodings the server reports.

    SQL_ASCII converts nothing: the server checks the bytes against the
    database encoding and lexes them as they are, so they are read in the
    server encoding (raw bytes, as before, when that is SQL_ASCII too).
    """
    canon = canonical(name) or name
    if canon == "SQL_ASCII":
        server = canonical(server_encoding) or server_encoding
        if server == "SQL_ASCII":
            return RAW
        return BY_NAME.get(server)
    return BY_NAME.get(canon)


# SQL_ASCII on a SQL_ASCII database: bytes pass unchecked and unconverted.
# Read as before: UTF-8 where valid, other bytes as lone surrogates that
# re-encode to themselves (a high byte is never ASCII syntax).
RAW = ClientEncoding("SQL_ASCII", "utf-8", "surrogateescape")
