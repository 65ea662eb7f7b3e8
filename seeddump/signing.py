"""Optional signatures on dump metadata, with a key the team shares (SEEDDUMP_SIGNING_KEY).

The metadata holds the dump's sha256, so a valid signature on the metadata vouches for every byte of
the dump. ``generatedump`` signs (HMAC-SHA256 over the metadata in a canonical form, as ``signature``);
``restoredump`` and the shared storage's pull refuse a dump whose signature is missing or wrong before
any byte of it reaches a server. This protects against a storage (or dumps folder) that more people can
write to than hold the key. It does not protect against anyone who has the key, nor hide what is in a
dump: signing is not encryption.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from seeddump import dumpfiles
from seeddump.conf import conf
from seeddump.exceptions import SeeddumpError

_SCHEME = "hmac-sha256:"


def _digest(key: str, text: bytes) -> str:
    return _SCHEME + hmac.new(key.encode(), text, hashlib.sha256).hexdigest()


def sign(metadata: dumpfiles.Metadata) -> dumpfiles.Metadata:
    """``metadata`` signed with the first configured key (unchanged when no key is configured)."""
    keys = conf.SIGNING_KEYS
    if not keys:
        return metadata
    data = metadata.to_json()
    signature = _digest(keys[0], dumpfiles.signable(data))
    return replace(metadata, signature=signature, signed_text=dumpfiles.signable(data))


def check(metadata: dumpfiles.Metadata, what: str) -> None:
    """With keys configured, refuses metadata that no configured key signed."""
    keys = conf.SIGNING_KEYS
    if not keys:
        return
    if not metadata.signature:
        raise SeeddumpError(
            f"{what} is not signed, and SEEDDUMP_SIGNING_KEY says every dump must be: it was not made by "
            "someone with the team's key. Regenerate it with: python manage.py generatedump "
            f"{metadata.environment}"
        )
    text = metadata.signed_text or dumpfiles.signable(metadata.to_json())
    if not any(hmac.compare_digest(_digest(key, text), metadata.signature) for key in keys):
        raise SeeddumpError(
            f"The signature of {what} is wrong: its metadata was changed, or signed with another key. "
            f"Do not restore it; regenerate it with: python manage.py generatedump {metadata.environment}"
        )
