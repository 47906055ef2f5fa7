"""The cluster's key material in the DB: the CA and the token-signing keys.

Both live in the reserved ``_cluster`` namespace, which belongs to the runtime and is never
handed to a service. Private halves are sealed with the cluster secret. Creation is
create-if-absent (``if_revision=0``): when several nodes start at once, one write wins and
the others read the winner's record, so a cluster has exactly one CA and one current key.

Records::

    ca                          {"cert_pem": ..., "key_sealed": ...}   (only without a launcher's CA)
    signing-keys                {"keys": [{"kid", "public_pem", "created_at", "retire_at"}]}
    signing-keys-private/<kid>  {"private_sealed": ...}

Public and private halves are apart so that the DB itself keeps the private ones from nodes
that do not sign: etcd's roles let every node read ``signing-keys`` and ``revocations``, and
only ``auth`` nodes the rest (:mod:`runtime.storage.etcd_auth`). A private record is written
before the public record that names it, so a key is never current without its private half.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.exceptions import Conflict, InvalidToken, SecurityError, StorageUnavailable
from runtime.security import tls, tokens
from runtime.security.authz import Principal
from runtime.security.revocations import RECORD as REVOCATIONS
from runtime.security.revocations import TOKENS, Revocations, parse_token_key, token_key
from runtime.security.secretbox import SecretBox
from runtime.security.verified import VerifiedTokens
from runtime.storage import Namespace

log = logging.getLogger("runtime.security")
CA_RECORD = "ca"
KEYS_RECORD = "signing-keys"
PRIVATE_PREFIX = "signing-keys-private/"


def _pem_public(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyStore:
    def __init__(
        self,
        ns: Namespace,
        box: SecretBox,
        *,
        token_ttl: float,
        rotation: float,
        ca_lifetime: float,
        clock: Callable[[], float] = time.time,
        signer: bool = True,
    ) -> None:
        """``signer``: this node issues tokens (runs ``auth``) and so unseals the private halves
        of the signing keys; every other node loads only the public halves."""
        self._ns, self._box, self._clock, self.signer = ns, box, clock, signer
        self.token_ttl, self.rotation, self.ca_lifetime = token_ttl, rotation, ca_lifetime
        self._keys: dict[str, tokens.SigningKey] = {}
        self._current: str | None = None
        self._last_reload = 0.0
        self._verified = VerifiedTokens()
        self._revocations = Revocations.empty()  # users' (one small record)
        self._revoked_tokens: dict[str, float] = {}  # jti -> expiry, one key each in the DB

    # -- the CA -------------------------------------------------------------------------

    async def ensure_ca(self) -> tls.KeyPair:
        entry = await self._ns.get(CA_RECORD)
        if entry is None:
            now = datetime.fromtimestamp(self._clock(), UTC)
            ca = tls.make_ca("modematrix cluster CA", now, timedelta(seconds=self.ca_lifetime))
            record = {"cert_pem": ca.cert_pem.decode(), "key_sealed": self._box.seal(CA_RECORD, ca.key_pem)}
            try:
                await self._ns.put(CA_RECORD, json.dumps(record).encode(), if_revision=0)
                log.info("created the cluster CA", extra={"fields": {"serial": f"{ca.cert.serial_number:x}"}})
                return ca
            except Conflict:
                entry = await self._ns.get(CA_RECORD)
        if entry is None:
            raise SecurityError("the cluster CA record vanished while it was being read")
        record = json.loads(entry.value)
        return tls.load_pair(record["cert_pem"].encode(), self._box.open(CA_RECORD, record["key_sealed"]))

    # -- signing keys -------------------------------------------------------------------

    async def ensure_signing_keys(self) -> None:
        """Signers: create the first key if there is none. Others: wait until a signer has."""
        entry = await self._ns.get(KEYS_RECORD)
        if entry is None and self.signer:
            record = {"keys": [await self._new_key(self._clock())]}
            try:
                await self._ns.put(KEYS_RECORD, json.dumps(record).encode(), if_revision=0)
            except Conflict:
                pass
        await self.reload()

    async def wait_for_signing_keys(self, timeout: float) -> None:
        """A node that does not sign waits for the first key an ``auth`` node makes."""
        deadline = self._clock() + timeout
        while True:
            try:
                await self.reload()
                return
            except (SecurityError, StorageUnavailable):
                if self._clock() >= deadline:
                    raise SecurityError(
                        f"{KEYS_RECORD}: no signing keys in the DB after {timeout:.0f} s; is an auth node running?"
                    ) from None
                log.info("waiting for an auth node to create the signing keys")
                await asyncio.sleep(0.5)

    async def reload(self) -> None:
        entry = await self._ns.get(KEYS_RECORD)
        if entry is None:
            raise SecurityError(f"{KEYS_RECORD}: no signing keys in the DB")
        keys = [await self._key_from(r) for r in json.loads(entry.value)["keys"]]
        loaded = {k.kid: k for k in keys}
        if {(k.kid, k.retire_at) for k in loaded.values()} != {(k.kid, k.retire_at) for k in self._keys.values()}:
            self._verified.clear()  # a key retired or went away: its tokens are checked afresh
        self._keys = loaded
        self._current = max(keys, key=lambda k: k.created_at).kid
        self._last_reload = self._clock()

    def changes(self) -> AsyncIterator[None]:
        """Wakes whenever the signing keys may have changed, on any node."""
        return self._ns.changes(KEYS_RECORD)

    async def rotate_if_due(self) -> bool:
        """Replace the current key once it is ``rotation`` old; keep the old one to verify
        until every token it signed has expired. Returns True when this node rotated."""
        entry = await self._ns.get(KEYS_RECORD)
        if entry is None:
            return False
        now = self._clock()
        records: list[dict[str, Any]] = json.loads(entry.value)["keys"]
        newest = max(records, key=lambda r: r["created_at"])
        if now < newest["created_at"] + self.rotation:
            return False
        kept = [r for r in records if r.get("retire_at") is None or r["retire_at"] > now]
        gone = [r["kid"] for r in records if r not in kept]
        for r in kept:
            r["retire_at"] = r.get("retire_at") or now + self.token_ttl
        new = await self._new_key(now)
        try:
            await self._ns.put(KEYS_RECORD, json.dumps({"keys": [*kept, new]}).encode(), if_revision=entry.revision)
        except Conflict:
            gone = [new["kid"]]  # another node rotated first: our private half names no key
            return False
        finally:
            for kid in gone:
                await self._ns.delete(PRIVATE_PREFIX + kid)
            await self.reload()
        log.info("rotated the token-signing key", extra={"fields": {"kid": self._current}})
        return True

    async def _new_key(self, now: float) -> dict[str, Any]:
        """Store a new key's private half (sealed) and return the public record to publish."""
        kid = tokens.new_kid()
        private = tls.new_key()
        sealed = {"private_sealed": self._box.seal(f"{KEYS_RECORD}/{kid}", _pem_private(private))}
        await self._ns.put(PRIVATE_PREFIX + kid, json.dumps(sealed).encode(), if_revision=0)
        return {"kid": kid, "public_pem": _pem_public(private.public_key()), "created_at": now, "retire_at": None}

    async def _key_from(self, record: dict[str, Any]) -> tokens.SigningKey:
        public = serialization.load_pem_public_key(record["public_pem"].encode())
        private = None
        if self.signer:
            sealed = record.get("private_sealed")  # records written before the split held it inline
            if sealed is None:
                entry = await self._ns.get(PRIVATE_PREFIX + record["kid"])
                if entry is None:
                    raise SecurityError(f"{KEYS_RECORD}: key {record['kid']} has no private half in the DB")
                sealed = json.loads(entry.value)["private_sealed"]
            private = serialization.load_pem_private_key(
                self._box.open(f"{KEYS_RECORD}/{record['kid']}", sealed), password=None
            )
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            private, ec.EllipticCurvePrivateKey | None
        ):
            raise SecurityError(f"{KEYS_RECORD}: key {record['kid']} is not an EC P-256 key")
        return tokens.SigningKey(record["kid"], public, private, record["created_at"], record.get("retire_at"))

    # -- use ----------------------------------------------------------------------------

    def sign(self, username: str, roles: tuple[str, ...]) -> tuple[str, float]:
        if self._current is None:
            raise SecurityError("signing keys are not loaded yet")
        return tokens.sign(self._keys[self._current], username, roles, self._clock(), self.token_ttl)

    def verify(self, token: str) -> Principal:
        """Check a bearer token; one checked before is taken from the cache of verified tokens
        until it expires or its key retires. Revocations are checked every time."""
        now = self._clock()
        cached = self._verified.get(token, now=now)
        if cached is not None:
            return self._not_revoked(cached, now)
        usable = {kid: k for kid, k in self._keys.items() if k.retire_at is None or k.retire_at > now}
        principal, kid = tokens.verify_with_kid(token, usable, now)
        retire_at = usable[kid].retire_at
        self._verified.put(token, principal, until=min(principal.expires_at, retire_at or principal.expires_at))
        return self._not_revoked(principal, now)

    def _not_revoked(self, principal: Principal, now: float) -> Principal:
        if self._revocations.revoked(principal, now) or principal.token_id in self._revoked_tokens:
            raise InvalidToken("token has been revoked")
        return principal

    @property
    def revoked_tokens(self) -> int:
        """How many unexpired tokens this node knows to be revoked."""
        return len(self._revoked_tokens)

    # -- revocation ------------------------------------------------------------------------

    def revocation_changes(self) -> AsyncIterator[None]:
        """Wakes whenever any node revokes a user's tokens."""
        return self._ns.changes(REVOCATIONS)

    async def follow_revoked_tokens(self) -> None:
        """Keep this node's set of revoked tokens current: the keys that changed, as etcd's
        watch names them; everything again after a gap. Runs until cancelled."""
        async for keys in self._ns.watch(TOKENS):
            try:
                if keys is None:
                    await self._reload_tokens()
                else:
                    await self._read_tokens(keys)
            except StorageUnavailable as exc:
                log.warning("could not read revoked tokens", extra={"fields": {"error": str(exc)}})

    async def load_revocations(self) -> None:
        """Both kinds, as a node starts (the watches keep them current afterwards)."""
        await self.reload_revocations()
        await self._reload_tokens()

    async def reload_revocations(self) -> None:
        entry = await self._ns.get(REVOCATIONS)
        self._revocations = Revocations.load(entry.value if entry else b"")

    async def _reload_tokens(self) -> None:
        now, found, after = self._clock(), {}, None
        while True:
            page = await self._ns.range(TOKENS, after=after, limit=1000, keys_only=True)
            for entry in page:
                token_id, expires_at = parse_token_key(entry.key)
                if expires_at > now:
                    found[token_id] = expires_at
            if len(page) < 1000:
                break
            after = page[-1].key
        self._revoked_tokens = found

    async def _read_tokens(self, keys: Sequence[str]) -> None:
        """The key says it all (the token and its expiry), so nothing is read: a key past its
        expiry was pruned (or soon will be) and stops nothing; any other was just written."""
        now = self._clock()
        for key in keys:
            token_id, expires_at = parse_token_key(key)
            if expires_at > now:
                self._revoked_tokens[token_id] = expires_at
            else:
                self._revoked_tokens.pop(token_id, None)

    async def revoke_user(self, username: str) -> None:
        """Every token of ``username`` issued until now stops counting, on every node."""
        now = self._clock()
        await self._update_revocations(lambda r: r.revoke_user(username, at=now, token_ttl=self.token_ttl))

    async def revoke_token(self, principal: Principal) -> None:
        """This token stops counting, on every node: one key of its own, gone after it expires."""
        await self._ns.put(token_key(principal.token_id, principal.expires_at), b"")
        self._revoked_tokens[principal.token_id] = principal.expires_at

    async def prune_revoked_tokens(self, *, batch: int = 1000) -> int:
        """Delete the keys of revoked tokens past their expiry (key order is expiry order);
        how many. Signers run it now and then; any node may."""
        cutoff, pruned = self._clock(), 0
        while pruned < batch:
            page = await self._ns.range(TOKENS, limit=min(1000, batch - pruned), keys_only=True)
            expired = [e.key for e in page if parse_token_key(e.key)[1] <= cutoff]
            for key in expired:
                pruned += await self._ns.delete(key)
            if len(expired) < len(page) or not page:
                break  # the rest expire later (key order is expiry order)
        return pruned

    async def _update_revocations(self, change: Callable[[Revocations], Revocations]) -> None:
        for _ in range(20):  # compare-and-swap: another node may be revoking at the same moment
            entry = await self._ns.get(REVOCATIONS)
            current = Revocations.load(entry.value if entry else b"")
            try:
                await self._ns.put(REVOCATIONS, change(current).dump(), if_revision=entry.revision if entry else 0)
            except Conflict:
                continue
            await self.reload_revocations()
            return
        raise SecurityError("revocations: 20 concurrent updates in a row lost their compare-and-swap; try again")

    async def verify_fresh(self, token: str) -> Principal:
        """Verify; on an unknown ``kid`` reload the keys once (at most every 2 s) and retry,
        so a key rotated by another node is picked up before its first token arrives here."""
        try:
            return self.verify(token)
        except InvalidToken as exc:
            if "does not know" not in str(exc) or self._clock() - self._last_reload < 2.0:
                raise
        await self.reload()
        return self.verify(token)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [tokens.jwk(k) for k in self._keys.values()]}
