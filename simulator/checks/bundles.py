"""Bundles: the offered URL downloads, its bytes match the checksum, it verifies and unzips
as a device does (the agent's own verifier and safe unzip), Range and caching, HTTPS."""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from agent.bundles.manifest import DeltaFileVerifier, check_manifest_targets
from agent.bundles.zipbundle import unpack_file, verify_file
from agent.drivers.http import ssl_context_for
from agent.errors import VerificationError
from agent.security.checksum import ExpectedChecksum, expected_checksum
from agent.security.keys import PublicKey
from agent.security.session import SessionKey, is_session_key, recover_session_key
from agent.security.verify import BundleVerification, plan_bundle_verification

from simulator.checks.context import CheckContext, Exchange
from simulator.checks.errors import Skip
from simulator.checks.model import Outcome, check, failed, passed, skipped, warned

MAX_REDIRECT_HOPS = 5
MAX_MANIFEST_FILES = 200  # bounded: a check, not a mirror


def downloaded(ctx: CheckContext) -> Exchange:
    """The offered bundle, fetched once.

    Raises:
        Skip: nothing offered, or the download failed (bundle.download says why).
    """

    def fetch() -> Exchange | str:
        _, offer = ctx.require_offer()
        if not offer.url or offer.url.endswith("/no.zip"):
            return "the offer has no zip url (manifest only)"
        try:
            return ctx.fetch(offer.url)
        except Exception as exc:  # transport errors are this check's finding
            return f"{type(exc).__name__}: {exc}"

    got = ctx.once("bundle", fetch)
    if isinstance(got, str):
        raise Skip(f"the bundle did not download: {got}")
    if got.status != 200:
        raise Skip(f"the bundle did not download: HTTP {got.status}")
    return got


@check(
    "bundle.download",
    "The offered bundle URL downloads",
    "error",
    "devices that cannot fetch the offered URL report download_fail on every check and "
    "stay on the old version",
)
def download(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    try:
        got = downloaded(ctx)
    except Skip as exc:
        if "manifest only" in str(exc):
            return skipped(str(exc))
        return failed(f"{offer.url}: {str(exc).removeprefix('the bundle did not download: ')}")
    if not got.body:
        return failed(f"{offer.url}: empty body")
    return passed(f"{offer.version}: {len(got.body):,} bytes in {got.elapsed_ms:.0f} ms")


def _plain_digest(expected: ExpectedChecksum, data: bytes) -> str:
    if expected.algorithm == "crc32":
        return f"{zlib.crc32(data):08x}"
    return hashlib.sha256(data).hexdigest()


@check(
    "bundle.checksum",
    "The bundle's bytes match the offered checksum",
    "error",
    "a checksum that does not match the bytes served makes every device refuse the bundle "
    "(checksum_fail) after downloading it in full",
)
def checksum(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    got = downloaded(ctx)
    key = ctx.options.public_key
    if offer.checksum and len(offer.checksum) > 64:  # a signed (RSA) checksum
        if key is None:
            return skipped("the checksum is signed: give --public-key to recover it")
        try:
            verification = plan_bundle_verification(offer.checksum, offer.session_key, key)
        except VerificationError as exc:
            return skipped(f"cannot recover the checksum ({exc.action}); see bundle.signature")
        return _verify_bytes(got.body, verification, unzip=False)
    try:
        expected = expected_checksum(offer.checksum, None)
    except VerificationError as exc:
        return failed(f"{exc.action}: {exc.reason}")
    if expected is None:
        return warned("no checksum offered: devices without a public key install unchecked bytes")
    actual = _plain_digest(expected, got.body)
    if actual != expected.hex:
        return failed(
            f"{expected.algorithm} of the bytes is {actual}, the offer says {expected.hex}"
        )
    return passed(f"{expected.algorithm} {actual[:16]}… matches")


def _verify_bytes(data: bytes, verification: BundleVerification, *, unzip: bool) -> Outcome:
    """Verify (and unzip) the bytes with the agent's own code, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="otasim-check-") as tmp:
        src = Path(tmp) / "bundle"
        src.write_bytes(data)
        try:
            if unzip:
                unpack_file(src, Path(tmp) / "unpacked", verification)
            else:
                verify_file(src, None, verification)
        except VerificationError as exc:
            return failed(f"devices report {exc.action}: {exc.reason}")
    done = "checksum matches, unzips safely" if unzip else "checksum matches"
    return passed(("decrypted, " if verification.session else "") + done)


@check(
    "bundle.signature",
    "With the app's public key the bundle verifies, decrypts and unzips as on a device",
    "error",
    "devices configured with this public key refuse a bundle that is unsigned, signed with "
    "another key or badly encrypted: nobody updates",
)
def signature(ctx: CheckContext) -> Outcome:
    key = ctx.options.public_key
    if key is None:
        return skipped("give --public-key (the key in capacitor.config) to verify as devices do")
    _, offer = ctx.require_offer()
    try:
        verification = plan_bundle_verification(offer.checksum, offer.session_key, key)
    except VerificationError as exc:
        return failed(f"devices report {exc.action}: {exc.reason}")
    return _verify_bytes(downloaded(ctx).body, verification, unzip=True)


@check(
    "bundle.unzip",
    "The bundle unzips safely (no traversal, caps, index.html) without a key",
    "error",
    "a zip the plugin refuses (unzip_fail, canonical_path_fail) is downloaded and thrown "
    "away on every device",
)
def unzip(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    if offer.session_key:
        return skipped("the bundle is encrypted: bundle.signature unzips it with the key")
    verification = plan_bundle_verification(None, None, None)  # bundle.checksum compares it
    return _verify_bytes(downloaded(ctx).body, verification, unzip=True)


@check(
    "bundle.range",
    "Bundle downloads resume: Range gives 206, past the end 416, If-Range is honoured",
    "error",
    "without Range every dropped connection restarts the download from zero; a server that "
    "ignores If-Range can splice two versions into one corrupt file",
)
def ranges(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    full = downloaded(ctx).body
    size, start = len(full), len(full) // 2
    part = ctx.fetch(offer.url, {"Range": f"bytes={start}-"})
    problems = []
    if part.status != 206 or part.body != full[start:]:
        problems.append(f"bytes={start}- gave HTTP {part.status} with {len(part.body)} bytes")
    past = ctx.fetch(offer.url, {"Range": f"bytes={size + 10}-"})
    if past.status != 416:
        problems.append(f"bytes={size + 10}- (past the end) gave HTTP {past.status}, not 416")
    etag = downloaded(ctx).headers.get("etag")
    if etag:
        stale = ctx.fetch(offer.url, {"Range": f"bytes={start}-", "If-Range": '"otasim-stale"'})
        if stale.status != 200 or stale.body != full:
            problems.append(
                f"If-Range with a stale ETag gave HTTP {stale.status}, not the whole file"
            )
    if problems:
        return failed("; ".join(problems))
    return passed(f"206 from byte {start:,}, 416 past the end" + (", If-Range" if etag else ""))


@check(
    "bundle.caching",
    "Bundle responses carry a strong ETag and no-transform caching",
    "warning",
    "a proxy or CDN that recompresses or serves a stale copy changes the bytes under a "
    "checksum: devices report checksum_fail",
)
def caching(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    headers = downloaded(ctx).headers
    etag, control = headers.get("etag", ""), headers.get("cache-control", "")
    problems = []
    if not etag or etag.startswith("W/"):
        problems.append(f"ETag {etag or 'missing'} (not strong)")
    else:
        again = ctx.fetch(offer.url, {"If-None-Match": etag})
        if again.status not in (200, 304):
            problems.append(f"If-None-Match gave HTTP {again.status}")
    if "no-transform" not in control and "no-store" not in control:
        problems.append(f"Cache-Control {control or 'missing'} lacks no-transform")
    if problems:
        return failed("; ".join(problems))
    return passed(f"ETag {etag[:20]}…, Cache-Control {control}")


def _redirect_chain(ctx: CheckContext, url: str) -> list[str]:
    """The URLs a GET of `url` goes through (it follows Location by hand to see each hop)."""
    chain = [url]
    verify = ssl_context_for(ctx.options.ca_file or True)
    with httpx.Client(verify=verify, follow_redirects=False, timeout=ctx.options.timeout_s) as c:
        for _ in range(MAX_REDIRECT_HOPS):
            with c.stream("GET", chain[-1], headers={"Range": "bytes=0-0"}) as response:
                location = response.headers.get("location")
                if not response.is_redirect or not location:
                    break
            chain.append(urljoin(chain[-1], location))
    return chain


@check(
    "bundle.https",
    "Bundle URLs are HTTPS when the API is, and never redirect to http",
    "error",
    "a bundle fetched over plain http can be swapped on the way: devices without a public "
    "key install whatever a network in the middle sends",
)
def https(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    if not ctx.https:
        return skipped("the API itself is plain http (test or loopback setup)")
    urls = [offer.url] if offer.url else []
    urls += [entry.download_url for entry in offer.manifest or ()]
    plain = [u for u in urls if urlsplit(u).scheme != "https"]
    if plain:
        return failed(f"{len(plain)} http URL(s) offered over an https API, e.g. {plain[0]}")
    if offer.url:
        chain = _redirect_chain(ctx, offer.url)
        downgraded = [u for u in chain if urlsplit(u).scheme != "https"]
        if downgraded:
            return failed(f"redirects to plain http: {' -> '.join(chain)}")
        hops = f", {len(chain) - 1} redirect(s)" if len(chain) > 1 else ""
        return passed(f"{len(urls)} https URL(s){hops}")
    return passed(f"{len(urls)} https URL(s)")


@check(
    "bundle.manifest",
    "Every delta (manifest) file downloads and verifies as on a device",
    "error",
    "devices that take the manifest path report download_manifest_checksum_fail (or "
    "decrypt_fail, manifest_path_fail) and fall back to nothing: no update",
)
def manifest(ctx: CheckContext) -> Outcome:
    _, offer = ctx.require_offer()
    if not offer.manifest:
        return skipped(f"the offer has no manifest ({ctx.options.profile.name} device)")
    entries = list(offer.manifest)
    key = ctx.options.public_key
    signed = any(len(e.file_hash) > 64 for e in entries)
    if signed and key is None:
        return skipped("the file hashes are signed: give --public-key to recover them")
    try:
        session = _session(offer.session_key, key)
        check_manifest_targets(entries)
        for entry in entries[:MAX_MANIFEST_FILES]:
            verifier = DeltaFileVerifier(entry, session, key)
            got = ctx.fetch(entry.download_url)
            if got.status != 200:
                return failed(f"{entry.file_name}: HTTP {got.status} from {entry.download_url}")
            verifier.update(got.body)
            verifier.finish()
    except VerificationError as exc:
        return failed(f"devices report {exc.action}: {exc.reason}")
    more = (
        f" (first {MAX_MANIFEST_FILES} of {len(entries)})"
        if len(entries) > MAX_MANIFEST_FILES
        else ""
    )
    return passed(f"{min(len(entries), MAX_MANIFEST_FILES)} files verified{more}")


def _session(session_key: str, key: PublicKey | None) -> SessionKey | None:
    """The bundle's session key as a device with `key` recovers it (None without a key)."""
    if key is None or not is_session_key(session_key):
        return None
    return recover_session_key(session_key, key)
